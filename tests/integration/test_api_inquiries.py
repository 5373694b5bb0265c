"""Questions before an offer, between real nodes (libp2p channels) through the HTTP API; a third
node and the buyer's own messenger play the peers that do not follow the rules."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from pathlib import Path

import pytest

from dht.testing import dht_network
from node.trade import inquiries
from node.trade.outbound import new_id
from p2pmarket.api.events import ChatReceivedEvent
from p2pmarket.client import ApiError, Client, Event
from p2pmarket.wire.market import Inquiry
from p2pmarket.wire.messages import Chat
from tests.support.api import LISTING, ApiNode, api_node, libp2p_host, raw
from tests.support.waiting import when

pytestmark = pytest.mark.timeout(180)


async def delivered(node: ApiNode, message_id: str) -> None:
    await when(lambda: node.client.get_outbox_message(message_id),
               lambda m: m.state == "delivered")


async def first_event(client: Client, kind: str) -> Event:
    """The node's first event of `kind`, replayed from its buffer (event ids start at a time,
    so asking from 0 answers `events.reset` with the oldest id kept)."""
    after = 0
    async with asyncio.timeout(20):
        for _ in range(2):
            async with aclosing(client.events(last_event_id=after, types=[kind])) as it:
                async for event in it:
                    if event.type != "events.reset":
                        return event
                    after = int(event.data["oldest"]) - 1
                    break
    raise AssertionError(f"no {kind} event")


async def test_buyer_asks_before_offering(tmp_path: Path) -> None:
    async with dht_network(6) as backbone, \
            api_node(backbone, tmp_path / "seller", host=libp2p_host) as seller, \
            api_node(backbone, tmp_path / "buyer", host=libp2p_host) as buyer, \
            api_node(backbone, tmp_path / "third", host=libp2p_host) as third:
        s, b = seller.client, buyer.client
        listing = await s.create_listing(LISTING)
        started = await b.start_conversation(seller.peer_id, listing.id, "Still available?")
        assert (started.kind, started.offer_state, started.listing_id, started.title) == (
            "inquiry", None, listing.id, LISTING["title"])
        assert started.peer == seller.peer_id and started.messages == 1
        assert started.last is not None and started.last.mine
        conv = started.id

        # the seller sees it, with its text, and hears of it
        page = await when(s.list_conversations, lambda p: len(p.items) == 1)
        got = page.items[0]
        assert (got.id, got.kind, got.peer, got.listing_id, got.offer_state) == (
            conv, "inquiry", buyer.peer_id, listing.id, None)
        assert got.last is not None and got.last.text == "Still available?"
        assert not got.last.mine and got.messages == 1
        event = (await first_event(s, "chat.received")).as_struct()
        assert isinstance(event, ChatReceivedEvent)
        assert (event.conversation, event.sender, event.text) == (
            conv, buyer.peer_id, "Still available?")

        # the seller answers; the buyer sees the answer
        answer = await s.send_message(conv, "Yes, until Friday")
        assert answer.mine and answer.message_id is not None
        lines = await when(lambda: b.list_messages(conv), lambda p: len(p.items) == 2)
        assert [(m.text, m.mine) for m in lines.items] == [
            ("Still available?", True), ("Yes, until Friday", False)]
        assert lines.items[0].delivery == "delivered"
        mine = (await b.list_conversations()).items
        assert [(c.id, c.kind, c.messages) for c in mine] == [(conv, "inquiry", 2)]

        # an offer's conversation lists next to it, newest change first
        offer = await b.make_offer(seller.peer_id, listing.id, 20_000)
        both = await when(s.list_conversations, lambda p: len(p.items) == 2)
        assert [(c.id, c.kind) for c in both.items] == [(offer.id, "offer"), (conv, "inquiry")]
        assert both.items[0].offer_state == "open" and both.items[0].listing_id == listing.id

        # asking about a listing nobody has: 404; a bad body: 422
        with pytest.raises(ApiError) as err:
            await b.start_conversation(seller.peer_id, "no-such-listing", "hello?")
        assert err.value.status == 404 and err.value.name == "not-found"
        status, _, body = await raw(buyer.api, "POST", "/api/v1/conversations", data=json.dumps(
            {"seller": seller.peer_id, "listing_id": listing.id, "text": ""}).encode(),
            headers={"Content-Type": "application/json"})
        assert status == 422 and body["errors"][0]["pointer"] == "/text"

        # an inquiry about a listing the seller no longer has is not stored
        gone = await s.create_listing({**LISTING, "id": "gone-listing-1"})
        await b.get_listing(seller.peer_id, gone.id, refresh=True)  # the buyer saw it
        await s.delete_listing(gone.id)
        late = await b.start_conversation(seller.peer_id, gone.id, "Still there?")
        assert late.last is not None and late.last.message_id is not None
        await delivered(buyer, late.last.message_id)
        assert late.id not in {c.id for c in (await s.list_conversations()).items}
        with pytest.raises(ApiError) as err:
            await s.list_messages(late.id)
        assert err.value.status == 404

        # a third peer's chat on the conversation is dropped
        intruder = third.node.messenger.send(seller.node.identity.public,
                                             Chat(conversation=conv, text="psst"))
        await delivered(third, intruder.id)
        assert [m.text for m in (await s.list_messages(conv)).items] == [
            "Still available?", "Yes, until Friday"]

        # a flood of inquiries (fresh ids, past the API) stops at the cap; the first stay
        flood = [buyer.node.messenger.send(seller.node.identity.public, Inquiry(
            conversation=new_id(), listing=listing.id, text=f"spam {i}"))
            for i in range(inquiries.MAX_OPEN_PER_PEER + 5)]
        for entry in flood:
            await delivered(buyer, entry.id)
        kept = [c for c in (await s.list_conversations(page_size=100)).items
                if c.kind == "inquiry" and c.id != conv]
        assert sorted(c.last.text for c in kept if c.last) == sorted(
            f"spam {i}" for i in range(inquiries.MAX_OPEN_PER_PEER))
        # the answered conversation goes on
        await b.send_message(conv, "Great, I'll make an offer")
        await when(lambda: s.list_messages(conv), lambda p: len(p.items) == 3)


async def test_start_conversation_client_method_matches_the_route(tmp_path: Path) -> None:
    async with dht_network(3) as backbone, api_node(backbone, tmp_path / "n") as n:
        doc = await n.client.get_openapi()
        op = doc["paths"]["/api/v1/conversations"]["post"]
        assert op["operationId"] == "startConversation"
        assert {"201", "404", "422"} <= set(op["responses"])
        assert callable(getattr(Client, "start_conversation", None))
        listing = await n.client.create_listing(LISTING)
        with pytest.raises(ApiError) as err:  # asking oneself
            await n.client.start_conversation(n.peer_id, listing.id, "hi me")
        assert err.value.status == 409
