"""Trade between real messengers over the in-memory host, with reviews in a small DHT."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from dht.server import DhtNode
from dht.testing import dht_network
from node.p2p.memory import MemoryHost, MemoryNetwork
from node.p2p.messenger import Messenger
from node.p2p.outbox import Outbox
from node.p2p.peers import PeerDirectory
from node.p2p.seal import encryption_public
from node.trade.errors import IllegalEvent, StaleOffer, WrongRole
from node.trade.events import NegotiationChanged, OrderChanged, TradeEvent
from node.trade.negotiation import NegotiationState
from node.trade.orders import OrderState
from node.trade.reviews import ReviewReader, build_review
from node.trade.service import Trade
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Listing, Location, Price
from p2pmarket.wire.dhtkeys import record_key
from p2pmarket.wire.market import Decline, OrderStep, sign_grant
from p2pmarket.wire.records import Record, RecordError, sign_record
from tests.support.p2p import FAST
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)


@dataclass
class Party:
    identity: Identity
    db: Database
    host: MemoryHost
    messenger: Messenger
    peers: PeerDirectory
    dht: DhtNode | None
    trade: Trade = field(init=False)
    events: list[TradeEvent] = field(default_factory=list)
    sold: list[tuple[str, int]] = field(default_factory=list)
    unsold: list[tuple[str, int]] = field(default_factory=list)

    @property
    def public(self) -> bytes:
        return self.identity.public


def make_party(net: MemoryNetwork, dht: DhtNode | None = None) -> Party:
    identity = Identity.generate()
    db = Database.open(":memory:")
    host = MemoryHost(net, identity)
    net.hosts[host.peer_id] = host
    peers = PeerDirectory(identity, host, None)
    messenger = Messenger(identity, host, Outbox(db), peers, policy=FAST)
    party = Party(identity, db, host, messenger, peers, dht)

    async def sold(listing_id: str, quantity: int) -> None:
        party.sold.append((listing_id, quantity))

    party.trade = Trade(party, on_sold=sold,
                        on_unsold=lambda i, q: party.unsold.append((i, q)))
    party.trade.listeners.append(party.events.append)
    return party


@asynccontextmanager
async def running(*parties: Party) -> AsyncIterator[None]:
    for p in parties:
        await p.host.start()
    for p in parties:
        for q in parties:
            if q is not p:  # what a resolved peer record would give
                p.peers.remember(q.public, tuple(q.host.listen_addrs()),
                                 encryption_public(q.identity))
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(t) for p in parties
                 for t in (p.messenger.run(), p.trade.run())]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()


def listing(seller: Party, *, seq: int = 1, quantity: int = 2, amount: int = 10_000
            ) -> Record[Listing]:
    body = Listing(id="bike-0001", title="Road bike", description="56 cm frame",
                   price=Price(amount, "EUR"), category="sports", condition="good",
                   quantity=quantity, location=Location("DE", "u33db"))
    record = sign_record(seller.identity, body, seq=seq)
    seller.trade.listing_updated(record)  # what the listings service tells it
    return record


def neg_state(p: Party, negotiation_id: str) -> NegotiationState | None:
    views = [v for v in p.trade.negotiations() if v.id == negotiation_id]
    return views[0].state if views else None


def order_state(p: Party, order_id: str) -> OrderState | None:
    return p.trade.order(order_id).state if order_id in p.trade.store.order_ids() else None


async def negotiate_to_order(seller: Party, buyer: Party, record: Record[Listing]) -> str:
    """Three rounds of counter-offers, then the buyer accepts the seller's last counter."""
    neg = (await buyer.trade.make_offer(record, 1, 7_000)).id
    await until(lambda: neg_state(seller, neg) is NegotiationState.OPEN)
    for seller_amount, buyer_amount in ((9_500, 8_000), (9_200, 8_600), (9_000, None)):
        await seller.trade.counter(neg, 1, seller_amount)
        await until(lambda: neg_state(buyer, neg) is NegotiationState.COUNTERED)
        if buyer_amount is not None:
            await buyer.trade.counter(neg, 1, buyer_amount)
            await until(lambda: neg_state(seller, neg) is NegotiationState.OPEN)
    view = await buyer.trade.accept(neg)
    assert view.state is NegotiationState.ACCEPTING
    await until(lambda: neg_state(buyer, neg) is NegotiationState.ACCEPTED)
    order_id = buyer.trade.negotiation(neg).order_id
    assert order_id is not None and seller.trade.negotiation(neg).order_id == order_id
    return order_id


async def test_offer_to_review_found_by_a_third_node() -> None:
    async with dht_network(10) as dht:
        net = MemoryNetwork()
        seller, buyer, third = (make_party(net, dht[i]) for i in (1, 2, 3))
        record = listing(seller)
        async with running(seller, buyer, third):
            order_id = await negotiate_to_order(seller, buyer, record)
            assert len(buyer.trade.negotiation(buyer.trade.order(order_id).negotiation)
                       .proposals) == 6
            await buyer.trade.chat(buyer.trade.order(order_id).negotiation, "Hi! Tuesday ok?")
            await until(lambda: seller.sold == [("bike-0001", 1)])

            with pytest.raises(WrongRole):
                await seller.trade.send_address(order_id, "Seller St 1")
            await buyer.trade.send_address(order_id, "Erika Mustermann\nHauptstr. 5\nBerlin")
            await until(lambda: order_state(seller, order_id) is OrderState.AWAITING_PAYMENT)
            assert seller.trade.order(order_id).address == (
                "Erika Mustermann\nHauptstr. 5\nBerlin")
            with pytest.raises(WrongRole):
                await buyer.trade.mark_shipped(order_id, "DHL", "x")
            with pytest.raises(IllegalEvent):
                await seller.trade.mark_shipped(order_id, "DHL", "x")  # not paid yet
            await seller.trade.confirm_payment(order_id, "manual", "bank transfer")
            await seller.trade.mark_shipped(order_id, "DHL", "JJD000390007")
            await until(lambda: order_state(buyer, order_id) is OrderState.SHIPPED)
            assert buyer.trade.order(order_id).shipment.tracking == "JJD000390007"  # type: ignore[union-attr]
            await buyer.trade.confirm_received(order_id)
            # manual payment: the seller's node settles by itself
            await until(lambda: order_state(buyer, order_id) is OrderState.COMPLETED)
            assert order_state(seller, order_id) is OrderState.COMPLETED
            seller_log = seller.trade.order(order_id).log
            assert seller_log == buyer.trade.order(order_id).log
            assert [s.action.__struct_config__.tag for s in seller_log] == [
                "opened", "address", "paid", "shipped", "received", "settled"]
            assert seller.trade.chat_log(seller.trade.order(order_id).negotiation)[0][1] == (
                "Hi! Tuesday ok?")

            review = await buyer.trade.review(order_id, 5, "Great bike, fast shipping")
            assert review.publisher != buyer.public  # the rating key, not the buyer's
            with pytest.raises(WrongRole):
                await seller.trade.review(order_id, 1, "")

            # forged reviews are refused by every storing node and no reader counts them: one
            # with no order behind it, one with a stolen grant, one with a foreign grant
            mallory = Identity.generate()
            no_order = build_review(mallory, seller=seller.public, order_id="order-fake01",
                                    stars=1, text="scam", grant=os.urandom(64))
            stolen = build_review(mallory, seller=seller.public, order_id=order_id, stars=1,
                                  text="scam", grant=review.body.grant)
            other_key = Identity.generate()
            tampered = build_review(other_key, seller=seller.public, order_id=order_id,
                                    stars=1, text="scam", grant=sign_grant(
                                        mallory, order_id, other_key.public))
            for forged in (no_order, stolen, tampered):
                with pytest.raises(RecordError):  # our own client refuses to publish it
                    await dht[5].put(forged)
                for node in dht[:4]:  # and a raw STORE is refused by the remote node
                    assert dht[5].protocol is not None
                    ok, answer = await dht[5].protocol.request(
                        node.address, "store", dht[5].node.id, record_key(forged), forged.raw)
                    assert ok and answer == "invalid: BadSignature"

            assert third.dht is not None
            found = await ReviewReader(third.dht).reviews_for(seller.public)
            assert [(r.body.order_id, r.body.rating) for r in found] == [(order_id, 5)]
            assert await third.trade.reputation(seller.public) == (1, 5.0)
        kinds = [e.kind for e in buyer.events if isinstance(e, OrderChanged)]
        assert kinds == ["opened", "address", "paid", "shipped", "received", "settled"]
        assert any(isinstance(e, NegotiationChanged) and e.kind == "counter"
                   for e in seller.events)


async def test_an_edited_listing_makes_older_offers_stale() -> None:
    net = MemoryNetwork()
    seller, buyer = make_party(net), make_party(net)
    v1 = listing(seller)
    async with running(seller, buyer):
        neg = (await buyer.trade.make_offer(v1, 1, 9_000)).id
        await until(lambda: neg_state(seller, neg) is NegotiationState.OPEN)
        listing(seller, seq=2, amount=12_000)  # the seller edits the listing
        assert seller.trade.negotiation(neg).stale
        with pytest.raises(StaleOffer, match="version 1, the listing is at version 2"):
            await seller.trade.accept(neg)

        # the buyer revises: its open negotiation on this listing gets a counter, no new one
        assert (await buyer.trade.make_offer(v1, 1, 9_500)).id == neg
        await until(lambda: len(seller.trade.negotiation(neg).proposals) == 2)

        # the seller counters (bound to version 2), then edits again before the buyer accepts:
        # the seller's node refuses the acceptance and says why
        await seller.trade.counter(neg, 1, 11_500)
        await until(lambda: neg_state(buyer, neg) is NegotiationState.COUNTERED)
        assert buyer.trade.negotiation(neg).listing.seq == 2
        listing(seller, seq=3, amount=12_000)
        await buyer.trade.accept(neg)
        await until(lambda: neg_state(buyer, neg) is NegotiationState.DECLINED)
        assert "listing changed" in buyer.trade.negotiation(neg).reason
        assert buyer.trade.orders() == [] and seller.trade.orders() == []

        # a fresh offer on the current version goes through
        v3 = listing(seller, seq=3, amount=12_000)
        neg3 = (await buyer.trade.make_offer(v3, 1, 11_000)).id
        assert neg3 != neg
        await until(lambda: neg_state(seller, neg3) is NegotiationState.OPEN)
        await seller.trade.accept(neg3)
        await until(lambda: buyer.trade.negotiation(neg3).order_id is not None)


async def test_cancel_before_payment_and_not_after() -> None:
    net = MemoryNetwork()
    seller, buyer = make_party(net), make_party(net)
    record = listing(seller, quantity=5)
    async with running(seller, buyer):
        neg = (await buyer.trade.make_offer(record, 2, 19_000)).id
        await until(lambda: neg_state(seller, neg) is NegotiationState.OPEN)
        await seller.trade.accept(neg)
        order_id = seller.trade.negotiation(neg).order_id
        assert order_id is not None
        await until(lambda: order_state(buyer, order_id) is OrderState.CREATED)
        await until(lambda: seller.sold == [("bike-0001", 2)])
        await buyer.trade.cancel(order_id, "ordered by mistake")
        await until(lambda: order_state(seller, order_id) is OrderState.CANCELLED)
        await until(lambda: seller.unsold == [("bike-0001", 2)])
        assert seller.trade.order(order_id).log == buyer.trade.order(order_id).log

        # a second order: cancelling is over once the payment is confirmed
        neg2 = (await buyer.trade.make_offer(record, 1, 9_000)).id
        await until(lambda: neg_state(seller, neg2) is NegotiationState.OPEN)
        await seller.trade.accept(neg2)
        order2 = seller.trade.negotiation(neg2).order_id
        assert order2 is not None
        await until(lambda: order_state(buyer, order2) is OrderState.CREATED)
        await buyer.trade.send_address(order2, "Somewhere 1")
        await until(lambda: order_state(seller, order2) is OrderState.AWAITING_PAYMENT)
        await seller.trade.confirm_payment(order2)
        await until(lambda: order_state(buyer, order2) is OrderState.PAID)
        with pytest.raises(IllegalEvent, match="cannot cancel an order that is paid"):
            await buyer.trade.cancel(order2)


async def test_state_survives_a_restart() -> None:
    net = MemoryNetwork()
    seller, buyer = make_party(net), make_party(net)
    record = listing(seller)
    async with running(seller, buyer):
        neg = (await buyer.trade.make_offer(record, 1, 9_000)).id
        await until(lambda: neg_state(seller, neg) is NegotiationState.OPEN)
        await seller.trade.accept(neg)
        order_id = seller.trade.negotiation(neg).order_id
        assert order_id is not None
        await until(lambda: order_state(buyer, order_id) is OrderState.CREATED)
        await buyer.trade.send_address(order_id, "Here 1")
        await until(lambda: order_state(seller, order_id) is OrderState.AWAITING_PAYMENT)
    for party in (seller, buyer):
        # a new service over the same database: the machines are replayed from it; the
        # seller's current listings come from the listings service
        again = Trade(party, own_listing=lambda i: record if i == record.body.id else None)
        party.messenger.listeners.remove(again.inbound.on_messenger_event)
        assert again.order(order_id) == party.trade.order(order_id)
        assert again.negotiations() == party.trade.negotiations()
    assert Trade(buyer).order(order_id).address == "Here 1"


async def test_crossing_messages_converge_and_strangers_are_refused() -> None:
    net = MemoryNetwork()
    seller, buyer, mallory = make_party(net), make_party(net), make_party(net)
    record = listing(seller, quantity=5)
    async with running(seller, buyer, mallory):
        neg = (await buyer.trade.make_offer(record, 1, 9_000)).id
        await until(lambda: neg_state(seller, neg) is NegotiationState.OPEN)
        # the buyer withdraws while the seller accepts: the seller's order stands, and the
        # buyer's node cancels it (both before either message arrives)
        await buyer.trade.withdraw(neg, "found another")
        await seller.trade.accept(neg)
        order_id = seller.trade.negotiation(neg).order_id
        assert order_id is not None
        await until(lambda: order_state(seller, order_id) is OrderState.CANCELLED)
        assert neg_state(buyer, neg) is NegotiationState.ACCEPTED
        assert seller.trade.order(order_id).log == buyer.trade.order(order_id).log
        await until(lambda: seller.unsold == [("bike-0001", 1)])

        # both cancel at once: one cancellation stands on both sides
        neg2 = (await buyer.trade.make_offer(record, 1, 9_000)).id
        await until(lambda: neg_state(seller, neg2) is NegotiationState.OPEN)
        await seller.trade.accept(neg2)
        order2 = seller.trade.negotiation(neg2).order_id
        assert order2 is not None
        await until(lambda: order_state(buyer, order2) is OrderState.CREATED)
        await buyer.trade.cancel(order2, "buyer")
        await seller.trade.cancel(order2, "seller")
        await until(lambda: seller.trade.order(order2).log == buyer.trade.order(order2).log)
        assert len(seller.trade.order(order2).log) == 2

        # a peer outside the negotiation or the order is refused and counted
        mallory.messenger.send(seller.public, Decline(negotiation=neg2, reason="x"))
        mallory.messenger.send(seller.public, OrderStep(order=order2, step=b"\x92\x00\x00"))
        await until(lambda: seller.trade.violations[mallory.public] == 2)
        assert seller.trade.negotiation(neg2).state is NegotiationState.ACCEPTED

        # a buyer that has seen a newer version of the listing does not accept an older one
        neg3 = (await buyer.trade.make_offer(record, 1, 9_000)).id
        await until(lambda: neg_state(seller, neg3) is NegotiationState.OPEN)
        await seller.trade.counter(neg3, 1, 9_900)
        await until(lambda: neg_state(buyer, neg3) is NegotiationState.COUNTERED)
        buyer.trade.listing_updated(listing(seller, seq=2))
        assert buyer.trade.negotiation(neg3).stale
        with pytest.raises(StaleOffer):
            await buyer.trade.accept(neg3)


async def test_an_accept_interrupted_by_a_restart_is_answered() -> None:
    net = MemoryNetwork()
    seller, buyer = make_party(net), make_party(net)
    record = listing(seller)
    # the seller "crashes" before it confirms the accept
    seller.trade.inbound._confirm = lambda neg: None  # type: ignore[method-assign]
    async with running(seller, buyer):
        neg = (await buyer.trade.make_offer(record, 1, 9_000)).id
        await until(lambda: neg_state(seller, neg) is NegotiationState.OPEN)
        await seller.trade.counter(neg, 1, 9_500)
        await until(lambda: neg_state(buyer, neg) is NegotiationState.COUNTERED)
        await buyer.trade.accept(neg)
        await until(lambda: neg_state(seller, neg) is NegotiationState.ACCEPTING)
        seller.messenger.listeners.remove(seller.trade.inbound.on_messenger_event)
        restarted = Trade(seller, own_listing=lambda i: record if i == record.body.id else None)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(restarted.run())
            await until(lambda: neg_state(buyer, neg) is NegotiationState.ACCEPTED)
            task.cancel()
        order_id = buyer.trade.negotiation(neg).order_id
        assert order_id is not None and restarted.order(order_id).state is OrderState.CREATED
