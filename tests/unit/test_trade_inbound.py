"""The inbound handler alone: built from its narrow parts (a store on an in-memory database, a
recording `send`, a list for events, a fixed clock), fed signed messages by hand, no event loop."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from node.p2p.messenger import MessageReceived
from node.trade.events import ChatReceived, NegotiationChanged, PeerViolation, TradeEvent
from node.trade.inbound import Inbound
from node.trade.inquiries import InquiryStore
from node.trade.negotiation import NegotiationState
from node.trade.orders import Role
from node.trade.outbound import KnownListings, Machines, Outbound, new_id
from node.trade.store import TradeStore
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Currency, Listing, Location, Price
from p2pmarket.wire.market import Decline, Offer, OrderStep, listing_ref
from p2pmarket.wire.messages import Chat, MessageBody, sign_message
from p2pmarket.wire.records import Record, sign_record

NOW = 1_700_000_000.0


@dataclass
class Seller:
    identity: Identity = field(default_factory=Identity.generate)
    mine: dict[str, Record[Listing]] = field(default_factory=dict)
    sent: list[tuple[bytes, MessageBody]] = field(default_factory=list)
    events: list[TradeEvent] = field(default_factory=list)
    store: TradeStore = field(init=False)
    inbound: Inbound = field(init=False)

    def __post_init__(self) -> None:
        self.store = TradeStore(Database.open(":memory:"))
        machines = Machines(self.store)
        outbound = Outbound(self.identity, self.store, machines,
                            send=lambda peer, body: self.sent.append((peer, body)),
                            emit=self.events.append, clock=lambda: NOW)
        self.inbound = Inbound(self.identity.public, self.store, InquiryStore(self.store),
                               machines, KnownListings(self.identity.public, self.store,
                                                       self.mine.get),
                               outbound, emit=self.events.append, clock=lambda: NOW)

    def receive(self, sender: Identity, body: MessageBody) -> None:
        message = sign_message(sender, self.identity.public, body, seq=1)[0]
        self.inbound.on_messenger_event(MessageReceived(message, "direct"))


def publish(seller: Seller) -> Record[Listing]:
    body = Listing(id="bike-0001", title="Road bike", description="56 cm frame",
                   price=Price(10_000, "EUR"), category="sports", condition="good", quantity=1,
                   location=Location("DE", "u33db"))
    record = sign_record(seller.identity, body, seq=1)
    seller.mine[body.id] = record
    return record


def offer(record: Record[Listing], amount: int = 9_000, currency: Currency = "EUR") -> Offer:
    return Offer(negotiation=new_id(), proposal=new_id(), listing=listing_ref(record),
                 quantity=1, price=Price(amount, currency), rating_key=os.urandom(32))


def test_a_valid_offer_is_stored_and_announced() -> None:
    seller, buyer = Seller(), Identity.generate()
    body = offer(publish(seller))
    seller.receive(buyer, body)
    assert seller.store.has_negotiation(body.negotiation)
    assert seller.store.negotiation_ids() == [body.negotiation]
    assert seller.events == [NegotiationChanged(negotiation=body.negotiation,
                                                state=NegotiationState.OPEN, kind="offer",
                                                by=Role.BUYER)]
    assert seller.sent == []  # nothing to answer yet
    assert seller.inbound.violations[buyer.public] == 0


def test_an_offer_on_no_listing_of_ours_is_declined_and_not_kept() -> None:
    seller, buyer = Seller(), Identity.generate()
    elsewhere = sign_record(buyer, publish(Seller()).body, seq=1)  # not the seller's
    body = offer(elsewhere)
    seller.receive(buyer, body)
    assert not seller.store.has_negotiation(body.negotiation)
    assert [(peer, type(b)) for peer, b in seller.sent] == [(buyer.public, Decline)]
    assert seller.events == []


def test_a_malformed_offer_is_refused_and_counted() -> None:
    seller, buyer = Seller(), Identity.generate()
    record = publish(seller)
    wrong_currency = offer(record, currency="USD")
    seller.receive(buyer, wrong_currency)
    assert not seller.store.has_negotiation(wrong_currency.negotiation)
    first = offer(record)
    seller.receive(buyer, first)
    reused = Offer(negotiation=first.negotiation, proposal=new_id(), listing=first.listing,
                   quantity=1, price=first.price, rating_key=os.urandom(32))
    seller.receive(buyer, reused)
    assert seller.inbound.violations[buyer.public] == 2
    violations = [e for e in seller.events if isinstance(e, PeerViolation)]
    assert [v.peer for v in violations] == [buyer.public] * 2
    assert "USD" in violations[0].reason and "already used" in violations[1].reason
    assert seller.store.negotiation_ids() == [first.negotiation]
    assert seller.sent == []


def test_strangers_get_nothing_in() -> None:
    seller, buyer, mallory = Seller(), Identity.generate(), Identity.generate()
    body = offer(publish(seller))
    seller.receive(buyer, body)
    seller.events.clear()
    seller.receive(mallory, Chat(conversation=body.negotiation, text="psst"))  # ignored
    seller.receive(mallory, Decline(negotiation=body.negotiation, reason="x"))
    seller.receive(mallory, OrderStep(order="order-0001", step=b"\x92\x00\x00"))
    assert seller.store.chat(body.negotiation) == []
    assert seller.inbound.violations[mallory.public] == 2
    assert not any(isinstance(e, ChatReceived) for e in seller.events)
    seller.receive(buyer, Chat(conversation=body.negotiation, text="still there?"))
    assert seller.store.chat(body.negotiation) == [(buyer.public, "still there?", NOW)]
    assert seller.events[-1] == ChatReceived(conversation=body.negotiation,
                                             sender=buyer.public, text="still there?")
