"""A whole trade between two running nodes, through their APIs only: list, find, offer, counter,
accept, address, payment (outside escrow), shipping, receipt and a review.

    p2pmarket run --datadir /tmp/seller --api-port 0 ...   # two nodes on one DHT
    p2pmarket run --datadir /tmp/buyer --api-port 0 ...
    python examples/trade.py /tmp/seller /tmp/buyer

Each side waits for the other through its event stream (`order.changed`, `offer.changed`).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from p2pmarket.client import Client, Event


async def wait_for(events: AsyncIterator[Event], match: Callable[[Event], bool],
                   timeout: float = 60.0) -> Event:
    async with asyncio.timeout(timeout):
        async for event in events:
            if match(event):
                return event
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
        await wait_for(seller_events, lambda e: e.type == "offer.changed"
                       and e.data["offer"] == offer.id)
        await seller.counter_offer(offer.id, 4_000, note="40 and it is yours")
        say("seller countered 40.00")
        await wait_for(buyer_events, lambda e: e.type == "offer.changed"
                       and e.data["offer"] == offer.id and e.data["state"] == "countered")
        await buyer.accept_offer(offer.id)
        opened = await wait_for(buyer_events, lambda e: e.type == "order.changed"
                                and e.data["kind"] == "opened")
        order_id = str(opened.data["order"])
        say(f"buyer accepted; order {order_id}")

        await buyer.send_address(order_id, "Example Str. 1, 10115 Berlin")
        await wait_for(seller_events, lambda e: e.type == "order.changed"
                       and e.data["order"] == order_id and e.data["kind"] == "address")
        address = (await seller.get_order(order_id)).address
        say(f"seller got the address: {address}")
        await seller.confirm_payment(order_id, reference="bank transfer")
        await seller.ship_order(order_id, "DHL", "JJD0001234")
        say("seller confirmed payment and shipped")
        await wait_for(buyer_events, lambda e: e.type == "order.changed"
                       and e.data["order"] == order_id and e.data["state"] == "shipped")
        await buyer.confirm_received(order_id, "arrived, thanks")
        await wait_for(buyer_events, lambda e: e.type == "order.changed"
                       and e.data["order"] == order_id and e.data["state"] == "completed")
        say("buyer confirmed receipt; the order is completed")
        await buyer.review_order(order_id, 5, "friendly seller, fast shipping")
        profile = await buyer.get_profile(seller_id)
        say(f"buyer reviewed the seller: {profile.reviews} review(s), rating {profile.rating}")
    return order_id


async def main(seller_dir: str, buyer_dir: str) -> None:
    async with Client.from_datadir(seller_dir) as seller, \
            Client.from_datadir(buyer_dir) as buyer:
        await trade(seller, buyer)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seller_datadir")
    parser.add_argument("buyer_datadir")
    args = parser.parse_args()
    asyncio.run(main(args.seller_datadir, args.buyer_datadir))
