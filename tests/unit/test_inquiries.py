"""Inquiries (questions before an offer): the wire body, the seller's rules and caps, the store.

Trade engines joined by an in-memory link (h11's ConnectionPair idea): a fake messenger signs
each message and queues it; `flush()` hands it to the recipient's listeners. No sockets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.p2p.messenger import MessageReceived
from node.trade import inquiries
from node.trade.errors import LocalProtocolError, NotFound
from node.trade.events import ChatReceived, NegotiationChanged, PeerViolation, TradeEvent
from node.trade.inquiries import InquiryView
from node.trade.orders import Role
from node.trade.service import Trade
from node.trade.store import NEGOTIATION_MIGRATIONS
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Listing, Location, Price
from p2pmarket.wire.market import Inquiry, Offer, listing_ref
from p2pmarket.wire.messages import Chat, Message, MessageBody, open_message, sign_message
from p2pmarket.wire.records import Record, sign_record
from tests.support.strategies import object_id

LISTING_ID = "bike-0001"
chat_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                    max_size=4000)


# -- the wire body ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(object_id, object_id, chat_text)
def test_inquiry_round_trips_in_a_signed_message(conversation: str, listing: str,
                                                 text: str) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    body = Inquiry(conversation=conversation, listing=listing, text=text)
    message, raw = sign_message(alice, bob.public, body, seq=3)
    opened = open_message(raw, sender=alice.public, recipient=bob.public)
    assert opened == message and opened.body == body
    assert msgspec.to_builtins(opened.body)["kind"] == "inquiry"


@pytest.mark.parametrize("fields", [
    {"conversation": "conv-0001", "listing": LISTING_ID, "text": ""},
    {"conversation": "conv-0001", "listing": LISTING_ID, "text": "x" * 4001},
    {"conversation": "short", "listing": LISTING_ID, "text": "hi"},
    {"conversation": "conv-0001", "listing": "no spaces!", "text": "hi"},
    {"conversation": "conv-0001", "text": "hi"},
    {"conversation": "conv-0001", "listing": LISTING_ID, "text": "hi", "extra": 1},
])
def test_inquiry_limits_are_the_chat_limits(fields: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"kind": "inquiry", **fields}, MessageBody)
    assert msgspec.convert({"kind": "inquiry", "conversation": "conv-0001",
                            "listing": LISTING_ID, "text": "y" * 4000}, MessageBody)


# -- engines on an in-memory link ------------------------------------------------------------


@dataclass
class Link:
    queue: list[Message] = field(default_factory=list)
    parties: dict[bytes, Party] = field(default_factory=dict)

    def flush(self) -> None:
        while self.queue:
            message = self.queue.pop(0)
            target = self.parties.get(message.recipient)
            if target is not None:
                target.deliver(message)


class FakeMessenger:
    def __init__(self, identity: Identity, link: Link) -> None:
        self.identity, self.link = identity, link
        self.listeners: list[Any] = []
        self._seq = itertools.count(1)

    def send(self, recipient: bytes, body: MessageBody) -> None:
        message, _ = sign_message(self.identity, recipient, body, seq=next(self._seq))
        self.link.queue.append(message)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 0.001  # distinct times keep "latest change first" well defined
        return self.now


@dataclass
class Party:
    identity: Identity
    db: Database
    messenger: FakeMessenger
    peers: Any = None
    dht: Any = None
    trade: Trade = field(init=False)
    events: list[TradeEvent] = field(default_factory=list)
    mine: dict[str, Record[Listing]] = field(default_factory=dict)

    @property
    def public(self) -> bytes:
        return self.identity.public

    def deliver(self, message: Message) -> None:
        for listener in list(self.messenger.listeners):
            listener(MessageReceived(message, "direct"))

    def receive(self, sender: Identity, body: MessageBody) -> None:
        """A hand-made message from `sender` (a peer that may not play by the rules)."""
        self.deliver(sign_message(sender, self.public, body, seq=1)[0])


def make_party(link: Link, clock: Clock, db: Database | None = None,
               identity: Identity | None = None) -> Party:
    identity = identity or Identity.generate()
    party = Party(identity, db or Database.open(":memory:"), FakeMessenger(identity, link))
    party.trade = Trade(party, own_listing=party.mine.get, clock=clock)
    party.trade.listeners.append(party.events.append)
    link.parties[identity.public] = party
    return party


def publish(seller: Party, listing_id: str = LISTING_ID, title: str = "Road bike"
            ) -> Record[Listing]:
    body = Listing(id=listing_id, title=title, description="56 cm frame",
                   price=Price(10_000, "EUR"), category="sports", condition="good", quantity=1,
                   location=Location("DE", "u33db"))
    record = sign_record(seller.identity, body, seq=1)
    seller.mine[listing_id] = record
    return record


@pytest.fixture
def world() -> tuple[Link, Clock, Party, Party]:
    link, clock = Link(), Clock()
    return link, clock, make_party(link, clock), make_party(link, clock)


def chats(events: list[TradeEvent]) -> list[ChatReceived]:
    return [e for e in events if isinstance(e, ChatReceived)]


def violations(events: list[TradeEvent]) -> list[PeerViolation]:
    return [e for e in events if isinstance(e, PeerViolation)]


async def test_buyer_asks_and_seller_answers(world: tuple[Link, Clock, Party, Party]) -> None:
    link, _, seller, buyer = world
    buyer.trade.listing_updated(publish(seller))  # what the buyer's search saw
    view = await buyer.trade.ask(seller.public, LISTING_ID, "Still available?")
    assert (view.role, view.peer, view.listing_id, view.title) == (
        Role.BUYER, seller.public, LISTING_ID, "Road bike")
    assert [m.body for m in link.queue] == [
        Inquiry(conversation=view.id, listing=LISTING_ID, text="Still available?")]
    link.flush()

    theirs = seller.trade.inquiries.view(view.id)
    assert (theirs.role, theirs.peer, theirs.listing_id, theirs.title) == (
        Role.SELLER, buyer.public, LISTING_ID, "Road bike")
    assert [(s, t) for s, t, _ in seller.trade.chat_log(view.id)] == [
        (buyer.public, "Still available?")]
    assert chats(seller.events) == [ChatReceived(conversation=view.id, sender=buyer.public,
                                                 text="Still available?")]
    assert seller.trade.conversations() == [(view.id, "inquiry")]
    assert seller.trade.conversation_peer(view.id) == buyer.public
    assert seller.trade.inquiries.open_count(seller.trade.clock()) == 1

    await seller.trade.chat(view.id, "Yes, until Friday")
    link.flush()
    assert [t for _, t, _ in buyer.trade.chat_log(view.id)] == [
        "Still available?", "Yes, until Friday"]
    assert chats(buyer.events)[-1].text == "Yes, until Friday"
    assert seller.trade.inquiries.open_count(seller.trade.clock()) == 0  # answered

    await buyer.trade.chat(view.id, "Great, does it fit 1.80 m?")
    link.flush()
    assert len(seller.trade.chat_log(view.id)) == 3
    assert not violations(seller.events) and not violations(buyer.events)


async def test_asking_again_continues_the_conversation(
        world: tuple[Link, Clock, Party, Party]) -> None:
    link, _, seller, buyer = world
    buyer.trade.listing_updated(publish(seller))
    first = await buyer.trade.ask(seller.public, LISTING_ID, "Still available?")
    second = await buyer.trade.ask(seller.public, LISTING_ID, "And the price?")
    assert second.id == first.id and second.updated > first.updated
    link.flush()
    assert [t for _, t, _ in seller.trade.chat_log(first.id)] == [
        "Still available?", "And the price?"]
    assert seller.trade.conversations() == [(first.id, "inquiry")]
    assert not violations(seller.events)


async def test_ask_needs_a_known_listing_of_someone_else(
        world: tuple[Link, Clock, Party, Party]) -> None:
    link, _, seller, buyer = world
    with pytest.raises(NotFound):
        await buyer.trade.ask(seller.public, LISTING_ID, "hello?")
    seller.trade.listing_updated(publish(seller))
    with pytest.raises(LocalProtocolError):
        await seller.trade.ask(seller.public, LISTING_ID, "talking to myself")
    with pytest.raises(NotFound):
        await buyer.trade.chat("conv-unknown", "hello?")
    assert link.queue == [] and buyer.trade.conversations() == []


async def test_inquiry_about_a_listing_the_seller_lacks_is_not_stored(
        world: tuple[Link, Clock, Party, Party]) -> None:
    link, _, seller, buyer = world
    buyer.trade.listing_updated(publish(seller, "gone-0001"))
    del seller.mine["gone-0001"]  # deleted meanwhile
    view = await buyer.trade.ask(seller.public, "gone-0001", "Still there?")
    link.flush()
    assert seller.trade.inquiries.get(view.id) is None
    assert seller.trade.chat_log(view.id) == [] and seller.trade.conversations() == []
    assert seller.events == [] and link.queue == []  # no answer, no violation


async def test_ids_that_are_not_the_senders_to_use_are_refused(
        world: tuple[Link, Clock, Party, Party]) -> None:
    link, _, seller, buyer = world
    mallory = Identity.generate()
    record = publish(seller)
    buyer.trade.listing_updated(record)
    view = await buyer.trade.ask(seller.public, LISTING_ID, "Still available?")
    offer_view = await buyer.trade.make_offer(record, 1, 9_000)
    link.flush()
    seller.events.clear()

    # someone else's conversation, a negotiation's id, the same id on another listing
    publish(seller, "lamp-0001", "Lamp")
    for sender, body in (
            (mallory, Inquiry(conversation=view.id, listing=LISTING_ID, text="me too")),
            (mallory, Inquiry(conversation=offer_view.id, listing=LISTING_ID, text="hi")),
            (buyer.identity, Inquiry(conversation=offer_view.id, listing=LISTING_ID, text="x")),
            (buyer.identity, Inquiry(conversation=view.id, listing="lamp-0001", text="x"))):
        seller.receive(sender, body)
    assert len(violations(seller.events)) == 4 and not chats(seller.events)
    assert seller.trade.violations[mallory.public] == 2
    assert seller.trade.inquiries.view(view.id).peer == buyer.public
    assert len(seller.trade.chat_log(view.id)) == 1 and seller.trade.chat_log(offer_view.id) == []

    # a third peer's chat on the conversation is dropped
    seller.receive(mallory, Chat(conversation=view.id, text="psst"))
    assert len(seller.trade.chat_log(view.id)) == 1 and not chats(seller.events)

    # an offer may not take an inquiry's id either
    seller.receive(buyer.identity, Offer(
        negotiation=view.id, proposal="proposal-1", listing=listing_ref(record), quantity=1,
        price=Price(9_000, "EUR"), rating_key=bytes(32)))
    assert not seller.trade.store.has_negotiation(view.id)
    assert len(violations(seller.events)) == 5

    # the seller reusing the buyer's own conversation id to ask back: the roles do not fit
    publish(buyer, "vase-0001", "Vase")
    buyer.receive(seller.identity, Inquiry(conversation=view.id, listing="vase-0001",
                                           text="I ask you now"))
    assert len(violations(buyer.events)) == 1
    assert buyer.trade.inquiries.view(view.id).role is Role.BUYER
    assert len(buyer.trade.chat_log(view.id)) == 1


async def test_caps_keep_the_first_inquiries(world: tuple[Link, Clock, Party, Party],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    link, clock, seller, buyer = world
    for i in range(inquiries.MAX_OPEN_PER_PEER + 5):
        buyer.trade.listing_updated(publish(seller, f"item-{i:04d}", f"Item {i}"))
    asked = [await buyer.trade.ask(seller.public, f"item-{i:04d}", "available?")
             for i in range(inquiries.MAX_OPEN_PER_PEER + 5)]
    link.flush()
    kept = [v.id for v in asked if seller.trade.inquiries.get(v.id) is not None]
    assert kept == [v.id for v in asked[:inquiries.MAX_OPEN_PER_PEER]]
    assert len(chats(seller.events)) == inquiries.MAX_OPEN_PER_PEER
    assert not violations(seller.events)  # throttling is not misbehaviour

    # chats on a kept one still arrive; a dropped one's chats do not
    await buyer.trade.chat(asked[0].id, "hello again")
    await buyer.trade.chat(asked[-1].id, "anyone?")
    link.flush()
    assert len(seller.trade.chat_log(asked[0].id)) == 2
    assert seller.trade.chat_log(asked[-1].id) == []

    # answering one frees a place; so does time
    await seller.trade.chat(asked[0].id, "yes")
    link.flush()
    again = await buyer.trade.ask(seller.public, asked[-1].listing_id, "now?")
    link.flush()
    assert seller.trade.inquiries.get(again.id) is not None
    clock.now += inquiries.OPEN_FOR
    assert seller.trade.inquiries.open_count(clock()) == 0

    # the cap over all peers
    monkeypatch.setattr(inquiries, "MAX_OPEN", 2)
    ids = []
    for other in (make_party(link, clock) for _ in range(3)):
        other.trade.listing_updated(seller.mine["item-0001"])
        ids.append((await other.trade.ask(seller.public, "item-0001", "mine?")).id)
    link.flush()
    assert [seller.trade.inquiries.get(i) is not None for i in ids] == [True, True, False]


async def test_conversations_survive_a_restart_and_sort_with_offers(
        world: tuple[Link, Clock, Party, Party]) -> None:
    link, clock, seller, buyer = world
    record = publish(seller)
    buyer.trade.listing_updated(record)
    offer = await buyer.trade.make_offer(record, 1, 9_000)
    asked = await buyer.trade.ask(seller.public, LISTING_ID, "Colour?")
    link.flush()
    assert [c for c, _ in seller.trade.conversations()] == [asked.id, offer.id]
    await seller.trade.counter(offer.id, 1, 9_500)
    link.flush()
    assert seller.trade.conversations() == [(offer.id, "offer"), (asked.id, "inquiry")]
    assert any(isinstance(e, NegotiationChanged) for e in buyer.events)

    again = make_party(link, clock, db=seller.db, identity=seller.identity)
    again.mine.update(seller.mine)
    assert again.trade.conversations() == seller.trade.conversations()
    assert again.trade.inquiries.view(asked.id) == seller.trade.inquiries.view(asked.id)
    await again.trade.chat(asked.id, "Blue")
    link.flush()
    assert [t for _, t, _ in buyer.trade.chat_log(asked.id)] == ["Colour?", "Blue"]


def test_the_inquiry_table_is_a_new_migration(tmp_path: Any) -> None:
    db = Database.open(tmp_path / "node.db")
    db.migrate("negotiation", NEGOTIATION_MIGRATIONS[:1])
    db.execute("INSERT INTO chat (conversation, sender, text, at) VALUES (?,?,?,?)",
               ("conv-0001", b"x" * 32, "kept", 1.0))
    link, clock = Link(), Clock()
    party = make_party(link, clock, db=db)
    assert db.schema_version("negotiation") == len(NEGOTIATION_MIGRATIONS) == 2
    assert party.trade.chat_log("conv-0001")[0][1] == "kept"
    party.trade.inquiries.add(InquiryView(id="conv-0002", role=Role.SELLER, peer=b"y" * 32,
                                          listing_id=LISTING_ID, title="t", created=1.0,
                                          updated=1.0))
    assert party.trade.conversations() == [("conv-0002", "inquiry")]
    db.close()

