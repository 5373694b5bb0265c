"""The order state machine and its hash-chained log, pushed through a buyer/seller pair."""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.trade.errors import (
    IllegalEvent,
    LocalProtocolError,
    RemoteProtocolError,
    TradeError,
    WrongRole,
)
from node.trade.orders import AUTHORS, TRANSITIONS, Applied, Ignored, Order, OrderState, Role
from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import Price
from p2pmarket.wire.market import (
    Action,
    AddressSent,
    Cancelled,
    ListingRef,
    Opened,
    PaymentConfirmed,
    Received,
    Settled,
    Shipped,
    SignedStep,
    order_id_for,
    sign_grant,
)
from p2pmarket.wire.order_steps import (
    GENESIS_PREV,
    BadStep,
    BrokenChain,
    OrderLogError,
    open_step,
    sign_step,
    verify_chain,
)

O = OrderState  # noqa: E741
B, S = Role.BUYER, Role.SELLER
SAMPLES: dict[type[Action], Action] = {
    AddressSent: AddressSent(ephemeral=bytes(32), nonce=bytes(12), ciphertext=bytes(40)),
    PaymentConfirmed: PaymentConfirmed(method="manual"),
    Shipped: Shipped(carrier="DHL", tracking="JD0123"),
    Received: Received(),
    Settled: Settled(),
    Cancelled: Cancelled(reason="changed my mind"),
}


@dataclass
class Pair:
    seller_id: Identity
    buyer_id: Identity
    seller: Order
    buyer: Order
    t: int = 1000

    def order(self, role: Role) -> Order:
        return self.seller if role is S else self.buyer

    def identity(self, role: Role) -> Identity:
        return self.seller_id if role is S else self.buyer_id

    def act(self, role: Role, action: Action, deliver: bool = True) -> bytes:
        self.t += 1
        raw = self.order(role).send(self.identity(role), action, self.t).raw
        if deliver:
            assert isinstance(self.order(role.other).receive(raw), Applied)
        return raw

    def same(self) -> None:
        assert self.seller.log.raws() == self.buyer.log.raws()
        assert self.seller.state is self.buyer.state


def opened(seller: Identity, buyer: Identity, rating: Identity | None = None,
           negotiation: str = "negotiation-1") -> Opened:
    rating = rating or Identity.generate()
    order_id = order_id_for(negotiation, "proposal-1")
    return Opened(negotiation=negotiation, proposal="proposal-1",
                  listing=ListingRef("listing-1", 1, bytes(32)), title="Bike", quantity=1,
                  price=Price(5000, "EUR"), buyer=buyer.public, seller=seller.public,
                  rating_key=rating.public,
                  grant=sign_grant(seller, order_id, rating.public))


def make_pair() -> Pair:
    seller, buyer = Identity.generate(), Identity.generate()
    order = Order.create(seller, opened(seller, buyer), 1000)
    return Pair(seller, buyer, order, Order.from_genesis(order.log.entries[0].raw, buyer.public))


HAPPY = [(B, AddressSent), (S, PaymentConfirmed), (S, Shipped), (B, Received), (S, Settled)]
PATHS = {
    "completed": HAPPY,
    "buyer cancels at once": [(B, Cancelled)],
    "seller cancels at once": [(S, Cancelled)],
    "buyer cancels awaiting payment": [(B, AddressSent), (B, Cancelled)],
    "seller cancels awaiting payment": [(B, AddressSent), (S, Cancelled)],
}


@pytest.mark.parametrize("name", list(PATHS))
def test_every_legal_path(name: str) -> None:
    pair = make_pair()
    expected = O.CREATED
    for role, kind in PATHS[name]:
        expected = TRANSITIONS[(expected, role, kind)]
        pair.act(role, SAMPLES[kind])
        assert pair.seller.state is expected
        pair.same()
    assert expected in (O.COMPLETED, O.CANCELLED)
    # both logs verify on their own, and rebuild the same order
    for role in (B, S):
        restored = Order.restore(pair.order(role).log.raws(), role)
        assert restored.state is expected and restored.log.raws() == pair.seller.log.raws()


def _reach(state: OrderState) -> Pair:
    pair = make_pair()
    prefix = {O.CREATED: [], O.AWAITING_PAYMENT: HAPPY[:1], O.PAID: HAPPY[:2],
              O.SHIPPED: HAPPY[:3], O.RECEIVED: HAPPY[:4], O.COMPLETED: HAPPY,
              O.CANCELLED: [(B, Cancelled)]}[state]
    for role, kind in prefix:
        pair.act(role, SAMPLES[kind])
    assert pair.seller.state is state
    return pair


ILLEGAL = [(state, role, kind) for state in O for role in (B, S) for kind in SAMPLES
           if (state, role, kind) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "role", "kind"), ILLEGAL,
                         ids=[f"{s}-{r}-{k.__name__}" for s, r, k in ILLEGAL])
def test_every_illegal_event_raises(state: OrderState, role: Role, kind: type[Action]) -> None:
    pair = _reach(state)
    mine, theirs = pair.order(role), pair.order(role.other)
    before = mine.log.raws()
    expected = WrongRole if role not in AUTHORS[kind] else IllegalEvent
    with pytest.raises(expected):
        mine.send(pair.identity(role), SAMPLES[kind], 5000)
    assert mine.log.raws() == before and mine.state is state
    # the same step signed by a peer that ignores the rules is the peer's fault
    forged = sign_step(pair.identity(role), mine.id, len(before), mine.log.head, SAMPLES[kind],
                       5000)
    with pytest.raises(RemoteProtocolError):
        theirs.receive(forged.raw)
    assert theirs.log.raws() == before and theirs.state is state


def test_role_checks_have_clear_messages() -> None:
    pair = _reach(O.PAID)
    with pytest.raises(WrongRole, match="only the seller can ship"):
        pair.buyer.send(pair.buyer_id, SAMPLES[Shipped], 1)
    pair.act(S, SAMPLES[Shipped])
    with pytest.raises(WrongRole, match="only the buyer can confirm receipt"):
        pair.seller.send(pair.seller_id, SAMPLES[Received], 1)
    with pytest.raises(IllegalEvent, match="cannot cancel an order that is shipped"):
        pair.buyer.send(pair.buyer_id, SAMPLES[Cancelled], 1)
    with pytest.raises(IllegalEvent):
        pair.seller.send(pair.seller_id, opened(pair.seller_id, pair.buyer_id), 1)
    with pytest.raises(LocalProtocolError):  # someone else's key
        pair.seller.send(pair.buyer_id, SAMPLES[Settled], 1)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([B, S]), st.sampled_from(list(SAMPLES))),
                max_size=14))
def test_random_sequences_follow_the_table(moves: list[tuple[Role, type[Action]]]) -> None:
    pair = make_pair()
    model = O.CREATED
    for role, kind in moves:
        target = TRANSITIONS.get((model, role, kind))
        if target is None:
            with pytest.raises(LocalProtocolError):
                pair.order(role).send(pair.identity(role), SAMPLES[kind], 1)
        else:
            pair.act(role, SAMPLES[kind])
            model = target
        assert pair.seller.state is model and pair.buyer.state is model
        pair.same()
        assert pair.order(role).allowed(role) == [
            k for (s, r, k) in TRANSITIONS if s is model and r is role]


# -- crossing steps ----------------------------------------------------------------------------


def _cross(pair: Pair, b: Action, s: Action) -> None:
    raw_b = pair.act(B, b, deliver=False)
    raw_s = pair.act(S, s, deliver=False)
    pair.seller.receive(raw_b)
    pair.buyer.receive(raw_s)


def test_crossing_cancels_converge() -> None:
    pair = make_pair()
    _cross(pair, Cancelled(reason="buyer"), Cancelled(reason="seller"))
    pair.same()
    assert pair.seller.state is O.CANCELLED and len(pair.seller.log) == 2


def test_cancel_beats_a_crossing_address_and_what_was_built_on_it() -> None:
    pair = make_pair()
    raw_address = pair.act(B, SAMPLES[AddressSent], deliver=False)
    raw_buyer_cancel = pair.act(B, Cancelled(reason="after all, no"), deliver=False)
    raw_seller_cancel = pair.act(S, Cancelled(reason="sold elsewhere"), deliver=False)
    assert isinstance(pair.seller.receive(raw_address), Ignored)
    assert isinstance(pair.seller.receive(raw_buyer_cancel), Ignored)
    outcome = pair.buyer.receive(raw_seller_cancel)
    assert isinstance(outcome, Applied) and len(outcome.dropped) == 2
    pair.same()
    cancel = pair.seller.log.entries[-1].action
    assert isinstance(cancel, Cancelled) and cancel.reason == "sold elsewhere"


def test_payment_beats_a_crossing_cancel() -> None:
    pair = _reach(O.AWAITING_PAYMENT)
    _cross(pair, Cancelled(), SAMPLES[PaymentConfirmed])
    pair.same()
    assert pair.buyer.state is O.PAID
    pair.act(S, SAMPLES[Shipped])
    pair.same()


def test_duplicates_early_steps_and_strangers() -> None:
    pair = make_pair()
    first = pair.act(B, SAMPLES[AddressSent])
    assert isinstance(pair.seller.receive(first), Ignored)  # a retry
    paid = pair.act(S, SAMPLES[PaymentConfirmed], deliver=False)
    shipped = pair.act(S, SAMPLES[Shipped], deliver=False)
    assert isinstance(pair.buyer.receive(shipped), Ignored)  # waits for the step before it
    outcome = pair.buyer.receive(paid)
    assert isinstance(outcome, Applied) and len(outcome.entries) == 2
    pair.same()
    mallory = Identity.generate()
    stranger = sign_step(mallory, pair.seller.id, len(pair.seller.log), pair.seller.log.head,
                         SAMPLES[Received], 1)
    with pytest.raises(RemoteProtocolError, match="other party"):
        pair.seller.receive(stranger.raw)
    with pytest.raises(RemoteProtocolError):
        pair.seller.receive(b"\x92garbage")
    own = pair.seller.log.entries[-1].raw
    with pytest.raises(RemoteProtocolError):  # our own step echoed back
        pair.seller.receive(own)


def test_opening_step_checks() -> None:
    seller, buyer = Identity.generate(), Identity.generate()
    good = opened(seller, buyer)
    order_id = order_id_for(good.negotiation, good.proposal)
    raw = Order.create(seller, good, 1).log.entries[0].raw
    with pytest.raises(RemoteProtocolError, match="another buyer"):
        Order.from_genesis(raw, Identity.generate().public)
    forged = msgspec.structs.replace(good, grant=os.urandom(64))
    with pytest.raises(LocalProtocolError, match="grant"):
        Order.create(seller, forged, 1)
    raw = sign_step(seller, order_id, 0, GENESIS_PREV, forged, 1).raw
    with pytest.raises(RemoteProtocolError, match="grant"):
        Order.from_genesis(raw, buyer.public)
    raw = sign_step(seller, "not-derived-id", 0, GENESIS_PREV, good, 1).raw
    with pytest.raises(RemoteProtocolError, match="derived"):
        Order.from_genesis(raw, buyer.public)
    raw = sign_step(buyer, order_id, 0, GENESIS_PREV, good, 1).raw  # opened by the buyer
    with pytest.raises(RemoteProtocolError, match="seller"):
        Order.from_genesis(raw, buyer.public)


# -- the log -----------------------------------------------------------------------------------


def _completed_log() -> list[bytes]:
    pair = _reach(O.COMPLETED)
    return pair.seller.log.raws()


def test_log_verifies() -> None:
    raws = _completed_log()
    log = verify_chain(raws)
    assert len(log) == 6 and log.head == log.entries[-1].hash


def test_log_detects_a_removed_entry() -> None:
    raws = _completed_log()
    for i in range(len(raws) - 1):
        with pytest.raises(BrokenChain):
            verify_chain(raws[:i] + raws[i + 1:])
    # dropping the tail leaves a valid, shorter chain: its state says where it stopped
    assert Order.restore(raws[:-1], B).state is O.RECEIVED


def test_log_detects_reordered_entries() -> None:
    raws = _completed_log()
    for i in range(len(raws) - 1):
        swapped = list(raws)
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        with pytest.raises(BrokenChain):
            verify_chain(swapped)


def test_log_detects_tampering() -> None:
    raws = _completed_log()
    signed = msgspec.msgpack.decode(raws[3], type=SignedStep)
    flipped = bytearray(signed.payload)
    flipped[-3] ^= 0x01
    tampered = msgspec.msgpack.encode(SignedStep(bytes(flipped), signed.sig))
    with pytest.raises(BadStep):
        open_step(tampered)
    with pytest.raises(OrderLogError):
        verify_chain(raws[:3] + [tampered] + raws[4:])
    # a re-signed replacement (by the same author) breaks the next entry's prev hash
    entry = open_step(raws[3])
    seller = Identity.generate()
    other = sign_step(seller, entry.step.order, 3, entry.step.prev, Shipped("UPS", "1Z"), 1)
    with pytest.raises(BrokenChain):
        verify_chain(raws[:3] + [other.raw] + raws[4:])
    with pytest.raises(TradeError):  # and a log of legal-looking but foreign steps is refused
        Order.restore(raws[:3] + [other.raw], S)
    with pytest.raises(BadStep):
        open_step(raws[0] + b"\x00")  # not canonical
