"""A whole trade between two running nodes, through their APIs only: list, find, offer, counter,
accept, address, payment (outside escrow), shipping, receipt and a review.

    p2pmarket run --datadir /tmp/seller --api-port 0 ...   # two nodes on one DHT
    p2pmarket run --datadir /tmp/buyer --api-port 0 ...
    python examples/trade.py /tmp/seller /tmp/buyer

Each side waits for the other through its event stream: after each event (`offer.changed`,
`order.changed`, ...) it reads the state it waits for. Either node may restart meanwhile: the
clients (made with `restart_wait`) wait for it and the streams resume on the new node, whose
`events.reset` makes the waiting side read the state again, so nothing missed is waited for.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

from p2pmarket.client import ApiError, Client, Event

T = TypeVar("T")
RESTART_WAIT = 120.0  # how long a call waits for a node that restarts


async def until(events: AsyncIterator[Event], check: Callable[[], Awaitable[T | None]],
                timeout: float = 60.0) -> T:
    """`check()`'s first answer that is not None: asked now, then after every event."""
    async with asyncio.timeout(timeout):
        if (found := await check()) is not None:
            return found
        async for _ in events:
            if (found := await check()) is not None:
                return found
    raise RuntimeError("the event stream ended")


async def trade(seller: Client, buyer: Client, *, say: Callable[[str], None] = print) -> str:
    """Run the trade; returns the order id."""
    status, buyer_status = await seller.get_status(), await buyer.get_status()
    seller_id = status.peer_id
    assert seller_id is not None
    # streams that start where the statuses were read: no event in between is missed
    async with aclosing(seller.events(last_event_id=status.last_event_id,
                                      reconnect=True)) as seller_events, \
            aclosing(buyer.events(last_event_id=buyer_status.last_event_id,
                                  reconnect=True)) as buyer_events:
        listing = await seller.create_listing({
            "title": "Example teapot", "description": "cast iron, 1 litre",
            "price": {"amount": 4_500, "currency": "EUR"}, "category": "home/kitchen",
            "condition": "like-new", "quantity": 1, "tags": ["teapot"],
            "location": {"country": "DE", "geohash": "u33dbf"}})
        say(f"seller listed {listing.title!r} as {listing.id}")

        hits = (await buyer.search("example teapot", seller=seller_id)).items
        found = next(h.listing for h in hits if h.listing.id == listing.id)
        say(f"buyer found it: {found.price.amount / 100:.2f} {found.price.currency}")

        offer = await buyer.make_offer(seller_id, found.id, 3_500, note="would you take 35?")
        say(f"buyer offered 35.00 ({offer.id})")

        async def seller_has_offer() -> bool | None:
            try:
                return (await seller.get_offer(offer.id)).state == "open" or None
            except ApiError as exc:
                if exc.status == 404:  # not arrived yet
                    return None
                raise

        await until(seller_events, seller_has_offer)
        await seller.counter_offer(offer.id, 4_000, note="40 and it is yours")
        say("seller countered 40.00")
        await until(buyer_events, lambda: offer_in(buyer, offer.id, "countered"))
        await buyer.accept_offer(offer.id)
        order_id = await until(buyer_events, lambda: order_of(buyer, offer.id))
        say(f"buyer accepted; order {order_id}")

        await buyer.send_address(order_id, "Example Str. 1, 10115 Berlin")
        address = await until(seller_events, lambda: address_of(seller, order_id))
        say(f"seller got the address: {address}")
        await seller.confirm_payment(order_id, reference="bank transfer")
        await seller.ship_order(order_id, "DHL", "JJD0001234")
        say("seller confirmed payment and shipped")
        await until(buyer_events, lambda: order_in(buyer, order_id, "shipped", "completed"))
        await buyer.confirm_received(order_id, "arrived, thanks")
        await until(buyer_events, lambda: order_in(buyer, order_id, "completed"))
        say("buyer confirmed receipt; the order is completed")
        await buyer.review_order(order_id, 5, "friendly seller, fast shipping")
        profile = await buyer.get_profile(seller_id)
        say(f"buyer reviewed the seller: {profile.reviews} review(s), rating {profile.rating}")
    return order_id


async def offer_in(client: Client, offer_id: str, state: str) -> bool | None:
    return (await client.get_offer(offer_id)).state == state or None


async def order_of(client: Client, offer_id: str) -> str | None:
    return (await client.get_offer(offer_id)).order_id


async def address_of(client: Client, order_id: str) -> str | None:
    try:
        return (await client.get_order(order_id)).address
    except ApiError as exc:
        if exc.status == 404:  # the seller's side of the order is not there yet
            return None
        raise


async def order_in(client: Client, order_id: str, *states: str) -> bool | None:
    return (await client.get_order(order_id)).state in states or None


async def main(seller_dir: str, buyer_dir: str) -> None:
    async with Client.from_datadir(seller_dir, restart_wait=RESTART_WAIT) as seller, \
            Client.from_datadir(buyer_dir, restart_wait=RESTART_WAIT) as buyer:
        await trade(seller, buyer)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seller_datadir")
    parser.add_argument("buyer_datadir")
    args = parser.parse_args()
    asyncio.run(main(args.seller_datadir, args.buyer_datadir))
