"""A whole trade between two real nodes (libp2p channels) driven only through the client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dht.testing import dht_network
from p2pmarket.client import ApiError, Client, Event
from tests.support.api import LISTING, api_node, libp2p_host, memory_hosts
from tests.support.waiting import when

pytestmark = pytest.mark.timeout(180)


async def collect(client: Client, into: list[Event]) -> None:
    async for event in client.events(reconnect=True):
        into.append(event)


async def test_offer_to_completed_order_and_review(tmp_path: Path) -> None:
    async with dht_network(6) as backbone, \
            api_node(backbone, tmp_path / "seller", host=libp2p_host) as seller, \
            api_node(backbone, tmp_path / "buyer", host=libp2p_host) as buyer:
        s, b = seller.client, buyer.client
        seen_s: list[Event] = []
        seen_b: list[Event] = []
        tasks = [asyncio.create_task(collect(s, seen_s)), asyncio.create_task(collect(b, seen_b))]
        try:
            listing = await s.create_listing(LISTING)
            offer = await b.make_offer(seller.peer_id, listing.id, 20_000, note="cash?")
            assert offer.role == "buyer" and offer.state == "open"
            assert offer.listing.hash == listing.hash
            await when(lambda: s.get_offer(offer.id), lambda o: o.state == "open")
            countered = await s.counter_offer(offer.id, 22_000, note="meet halfway")
            assert countered.state == "countered" and countered.role == "seller"
            await when(lambda: b.get_offer(offer.id), lambda o: o.state == "countered")
            assert (await b.accept_offer(offer.id)).state == "accepting"
            done = await when(lambda: b.get_offer(offer.id), lambda o: o.order_id is not None)
            order_id = done.order_id
            assert order_id is not None and done.state == "accepted"

            order_b = await b.get_order(order_id)
            assert order_b.role == "buyer" and order_b.state == "created"
            assert order_b.price.amount == 22_000 and order_b.seller == seller.peer_id
            assert "address" in order_b.can
            order_s = await s.get_order(order_id)
            assert order_s.role == "seller" and order_s.log[0].action.__class__.__name__ == \
                "Opened"
            assert [o.id for o in (await s.list_orders(role="seller")).items] == [order_id]
            assert (await s.list_orders(role="buyer")).items == []

            chat = await b.send_message(offer.id, "when can you ship?")
            assert chat.mine and chat.delivery in ("queued", "sent", "delivered")
            assert chat.message_id is not None
            await when(lambda: b.get_outbox_message(chat.message_id or ""),
                       lambda m: m.state == "delivered")
            got = await when(lambda: s.list_messages(offer.id), lambda p: len(p.items) == 1)
            assert got.items[0].text == "when can you ship?" and not got.items[0].mine
            conversations = await s.list_conversations()
            assert conversations.items[0].peer == buyer.peer_id
            assert conversations.items[0].messages == 1

            await b.send_address(order_id, "Hauptstr. 1, Berlin")
            await when(lambda: s.get_order(order_id),
                       lambda o: o.address == "Hauptstr. 1, Berlin")
            with pytest.raises(ApiError) as err:
                await b.ship_order(order_id, "DHL", "123")
            assert err.value.status == 409 and err.value.name == "wrong-role"
            await s.confirm_payment(order_id, "cash")
            shipped = await s.ship_order(order_id, "DHL", "JJD000123")
            assert shipped.state == "shipped" and shipped.shipment is not None
            await when(lambda: b.get_order(order_id), lambda o: o.state == "shipped")
            await b.confirm_received(order_id, "all good")
            await when(lambda: b.get_order(order_id), lambda o: o.state == "completed")
            final = await when(lambda: s.get_order(order_id), lambda o: o.state == "completed")
            kinds = [step.action.__class__.__name__ for step in final.log]
            assert kinds == ["Opened", "AddressGiven", "Paid", "ShippedOut", "ReceivedOut",
                             "SettledOut"]
            log_page = await s.get_order_log(order_id, page_size=4)
            assert len(log_page.items) == 4 and log_page.next_page_token

            review = await b.review_order(order_id, 5, "smooth")
            assert review.rating == 5 and review.seller == seller.peer_id
            profile = await when(lambda: b.get_profile(seller.peer_id), lambda p: p.reviews == 1)
            assert profile.rating == 5.0
            # the buyer keeps its review among its records, to renew it
            [kept] = [r for r in (await b.list_my_records()).items if r.kind == "review"]
            assert kept.id == order_id and kept.published_at is not None and kept.error is None
            await when(lambda: s.get_my_listing(listing.id), lambda x: x.quantity == 1)

            await when(lambda: _wait_events(seen_b, "order.changed", 5), bool, 20)
            types_b = {e.type for e in seen_b}
            types_s = {e.type for e in seen_s}
            assert {"offer.changed", "order.changed", "message.delivered",
                    "message.received"} <= types_b
            assert {"offer.changed", "order.changed", "chat.received",
                    "message.received"} <= types_s
            ids = [e.id for e in seen_b]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            completed = [e.as_struct() for e in seen_s if e.type == "order.changed"]
            assert completed[-1].state == "completed"  # type: ignore[attr-defined]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _wait_events(events: list[Event], kind: str, count: int) -> bool:
    return sum(e.type == kind for e in events) >= count


async def test_decline_withdraw_cancel_and_message_lists(tmp_path: Path) -> None:
    hosts = memory_hosts()
    async with dht_network(6) as backbone, \
            api_node(backbone, tmp_path / "seller", host=hosts) as seller, \
            api_node(backbone, tmp_path / "buyer", host=hosts) as buyer:
        s, b = seller.client, buyer.client
        listing = await s.create_listing({**LISTING, "quantity": 5})
        first = await b.make_offer(seller.peer_id, listing.id, 10_000)
        await when(lambda: s.get_offer(first.id), lambda o: o.state == "open")
        declined = await s.decline_offer(first.id, "too low")
        assert declined.state == "declined" and declined.reason == "too low"
        await when(lambda: b.get_offer(first.id), lambda o: o.state == "declined")
        with pytest.raises(ApiError) as err:
            await b.accept_offer(first.id)
        assert err.value.status == 409 and err.value.name == "conflict"

        second = await b.make_offer(seller.peer_id, listing.id, 24_000, quantity=1)
        await when(lambda: s.get_offer(second.id), lambda o: o.state == "open")
        assert (await b.withdraw_offer(second.id, "found another")).state == "withdrawn"
        await when(lambda: s.get_offer(second.id), lambda o: o.state == "withdrawn")
        with pytest.raises(ApiError) as err:
            await b.make_offer(seller.peer_id, listing.id, 1, quantity=99)
        assert err.value.status == 422 and err.value.name == "invalid-terms"

        third = await b.make_offer(seller.peer_id, listing.id, 25_000, quantity=2)
        await when(lambda: s.get_offer(third.id), lambda o: o.state == "open")
        accepted = await s.accept_offer(third.id)  # the seller's accept makes the order
        assert accepted.state == "accepted" and accepted.order_id
        order_id = accepted.order_id
        await when(lambda: b.get_order(order_id), lambda o: o.state == "created")
        cancelled = await b.cancel_order(order_id, "changed my mind")
        assert cancelled.state == "cancelled" and cancelled.can == []
        await when(lambda: s.get_order(order_id), lambda o: o.state == "cancelled")
        assert [o.id for o in (await b.list_orders(state="cancelled")).items] == [order_id]
        assert (await b.list_orders(state="paid")).items == []
        with pytest.raises(ApiError) as err:
            await s.settle_order(order_id)
        assert err.value.status == 409

        offers = await b.list_offers(page_size=2)
        rest = await b.list_offers(page_size=2, page_token=offers.next_page_token)
        assert len(offers.items) + len(rest.items) == 3 and rest.next_page_token is None
        sent = [m async for m in b.pages(b.list_outbox, page_size=2)]
        assert {m.kind for m in sent} >= {"offer", "withdraw", "order-step"}
        assert all(m.recipient == seller.peer_id for m in sent)
        delivered = await when(lambda: b.list_outbox(state="delivered", peer=seller.peer_id),
                               lambda p: len(p.items) == len(sent))
        assert (await b.get_outbox_message(delivered.items[0].id)).state == "delivered"
        received = [m async for m in s.pages(s.list_inbox, page_size=2)]
        assert len(received) == len(sent) and {m.sender for m in received} == {buyer.peer_id}
        assert "offer" in {m.kind for m in received}
        peers = await s.list_peers()
        assert buyer.peer_id in [p.peer for p in peers.items]
