"""Record body factories: a valid body with every field filled, changed where a test says so."""

from __future__ import annotations

from p2pmarket.wire import bodies as b


def make_listing(**changes: object) -> b.Listing:
    fields: dict[str, object] = dict(
        id="lst-0001", title="Road bike, 54 cm", description="Steel frame, new tyres.",
        price=b.Price(25_000, "EUR"), category="sports/bikes", condition="good", quantity=1,
        location=b.Location("DE", "u33db"),
        shipping=(b.ShippingOption("DE", 1500, 2, 5),),
        images=(b.ImageRef(bytes(32), "image/jpeg", 48_213),),
        tags=("bike", "steel"),
    )
    fields.update(changes)
    return b.Listing(**fields)  # type: ignore[arg-type]
