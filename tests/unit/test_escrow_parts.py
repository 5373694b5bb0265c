"""The escrow driver's parts alone, with fakes for their narrow dependencies: the intake judging
and filing peers' proposals, and the reconciler deciding what a fresh escrow needs (our keys)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from mnemonic import Mnemonic

from escrow.terms import KeysExchanged, Role, State, Terms, UnknownEscrow
from node.escrow.book import EscrowBook, decode_event
from node.escrow.intake import EscrowIntake
from node.escrow.reconcile import Reconciler
from node.escrow.steps import EscrowSteps
from node.escrow.store import EscrowStore
from node.p2p.messenger import MessageReceived
from node.trade.errors import NotFound
from node.trade.orders import Order
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Arbiter, EscrowTerms, Price
from p2pmarket.wire.escrow import (
    EscrowBody,
    EscrowOpen,
    EscrowStep,
    Proposal,
    open_escrow_step,
    sign_proposal,
)
from p2pmarket.wire.market import ListingRef, Opened, order_id_for, sign_grant
from p2pmarket.wire.messages import Message
from p2pmarket.wire.records import sign_record

AMOUNT = 250_000
NOW = 1_700_000_000
ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


@dataclass
class FakeOrders:
    """The trade layer as the escrow sees it (`OrderDesk`): the seller's orders, no listings."""

    orders: dict[str, Order] = field(default_factory=dict)

    def load_order(self, order_id: str) -> Order:
        if order_id not in self.orders:
            raise NotFound(f"no order {order_id}")
        return self.orders[order_id]

    def order(self, order_id: str) -> object:
        raise NotFound(f"no order view {order_id}")

    def listing(self, seller: bytes, listing_id: str) -> None:
        return None

    def offered_listing(self, negotiation_id: str) -> None:
        return None

    def own_listing(self, listing_id: str) -> None:
        return None

    async def confirm_payment(self, order_id: str, method: str, reference: str) -> None:
        raise AssertionError("no payment hook expected")

    async def settle(self, order_id: str, reference: str) -> None:
        raise AssertionError("no settle hook expected")


class FakeWallet:
    async def receive_address(self) -> str:
        return ADDRESS


@dataclass
class Parts:
    """The seller node's escrow parts, sharing one book; `sent` is what left through `send`."""

    seller: Identity
    buyer: Identity
    arbiter: Identity
    order: Order
    orders: FakeOrders
    store: EscrowStore
    book: EscrowBook
    steps: EscrowSteps
    intake: EscrowIntake
    sent: list[tuple[bytes, EscrowBody]]

    def proposal(self, **terms: object) -> tuple[Proposal, Terms]:
        advert = sign_record(self.arbiter, Arbiter(name="Ada", fee_percent_bp=200,
                                                   fee_fixed_sat=1_000), seq=1)
        agreed = Terms.for_listing(self.order.id, AMOUNT, EscrowTerms(), advert.body,
                                   **{"network": "regtest", **terms})
        return Proposal(order=self.order.id, buyer=self.buyer.public, seller=self.seller.public,
                        arbiter=self.arbiter.public, opened=self.order.log.entries[0].raw,
                        advert=advert.raw, terms=msgspec.msgpack.encode(agreed),
                        at_ms=NOW * 1000), agreed

    def deliver(self, sender: Identity, body: EscrowBody) -> None:
        message = Message(id="m" * 16, sender=sender.public, recipient=self.seller.public,
                          seq=1, sent_ms=NOW * 1000, body=body)
        self.intake.on_message(MessageReceived(message, "direct"))


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    seller, buyer, arbiter = Identity.generate(), Identity.generate(), Identity.generate()
    rating = Identity.generate()
    order_id = order_id_for("negotiation-1", "proposal-1")
    order = Order.create(seller, Opened(
        negotiation="negotiation-1", proposal="proposal-1",
        listing=ListingRef("listing-1", 1, bytes(32)), title="Bike", quantity=1,
        price=Price(AMOUNT, "BTC"), buyer=buyer.public, seller=seller.public,
        rating_key=rating.public, grant=sign_grant(seller, order_id, rating.public)), 1000)
    db = Database.open(tmp_path / "node.db")
    store, book, orders = EscrowStore(db), EscrowBook(), FakeOrders({order.id: order})
    sent: list[tuple[bytes, EscrowBody]] = []
    steps = EscrowSteps(seller, store, book, lambda peer, body: sent.append((peer, body)),
                        lambda: NOW)
    intake = EscrowIntake(seller.public, "regtest", store, book, steps, orders)
    yield Parts(seller, buyer, arbiter, order, orders, store, book, steps, intake, sent)
    db.close()


def test_the_seller_judges_a_proposal_against_its_own_order(parts: Parts) -> None:
    proposal, terms = parts.proposal()
    assert parts.intake.judge(proposal, terms, Role.SELLER, parts.order) == ""
    proposal, terms = parts.proposal(network="signet")
    assert "runs on regtest, not signet" in parts.intake.judge(proposal, terms, Role.SELLER,
                                                               parts.order)
    proposal, terms = parts.proposal(min_confirmations=0)
    assert parts.intake.judge(proposal, terms, Role.SELLER, parts.order) == (
        "the seller waits for at least one confirmation")
    proposal, terms = parts.proposal()
    parts.orders.orders.clear()
    assert parts.intake.judge(proposal, terms, Role.SELLER, parts.order) == "no such order here"
    assert parts.intake.judge(proposal, terms, Role.ARBITER, parts.order) == (
        "this node does not serve as arbiter")  # accepts_arbitration defaults to no


async def test_an_agreeable_proposal_becomes_an_escrow(parts: Parts) -> None:
    proposal, _ = parts.proposal()
    parts.deliver(parts.buyer, EscrowOpen(order=proposal.order,
                                          proposal=sign_proposal(parts.buyer, proposal)))
    assert parts.book.wake.is_set() and parts.book.escrows == {}  # filed, not judged yet
    await parts.intake.process_inbox()
    esc = parts.book.get(proposal.order)
    assert esc.role is Role.SELLER and esc.state is State.PROPOSED
    assert parts.book.dirty == {proposal.order}  # for the reconciler: send our keys
    assert parts.sent == [] and parts.store.inbox() == []


async def test_a_declined_proposal_is_cancelled_with_its_reason(parts: Parts) -> None:
    proposal, _ = parts.proposal(min_confirmations=0)
    parts.deliver(parts.buyer, EscrowOpen(order=proposal.order,
                                          proposal=sign_proposal(parts.buyer, proposal)))
    await parts.intake.process_inbox()
    assert parts.book.get(proposal.order).state is State.CANCELLED
    assert sorted(peer for peer, _ in parts.sent) == sorted([parts.buyer.public,
                                                             parts.arbiter.public])
    body = parts.sent[0][1]
    assert isinstance(body, EscrowStep)
    event = decode_event(open_escrow_step(body.step).event)
    assert "at least one confirmation" in getattr(event, "reason", "")


async def test_a_proposal_relayed_by_another_peer_is_a_violation(parts: Parts) -> None:
    proposal, _ = parts.proposal()
    mallory = Identity.generate()
    parts.deliver(mallory, EscrowOpen(order=proposal.order,
                                      proposal=sign_proposal(parts.buyer, proposal)))
    await parts.intake.process_inbox()
    assert parts.book.violations[mallory.public] == 1 and parts.book.escrows == {}
    with pytest.raises(UnknownEscrow):
        parts.book.get(proposal.order)


async def test_a_step_before_its_proposal_waits(parts: Parts) -> None:
    parts.deliver(parts.buyer, EscrowStep(order=parts.order.id, step=b"x" * 64))
    await parts.intake.process_inbox()
    assert parts.store.inbox() == []  # parked, not dropped: it comes back with the proposal
    assert parts.store.unpark(parts.order.id) == 1


async def test_the_reconciler_sends_our_keys_for_a_new_escrow(parts: Parts) -> None:
    proposal, terms = parts.proposal()
    esc = parts.steps.create(proposal, sign_proposal(parts.buyer, proposal), terms, Role.SELLER)
    class TipOnly:  # the chain is asked only for its height (our key's birth) before funding
        async def tip_height(self) -> int:
            return 321

    reconciler = Reconciler(parts.book, parts.steps, parts.store, parts.orders,
                            chain=TipOnly(),  # type: ignore[arg-type]
                            wallet=FakeWallet,  # type: ignore[arg-type]  # () -> the wallet
                            send=parts.steps.send, mnemonic=Mnemonic("english").generate(128),
                            fee_rate=2)
    await reconciler.reconcile(esc)
    ours = esc.machine.keys[Role.SELLER]
    assert ours.payout_address == ADDRESS and ours.xpub.startswith("tpub")
    assert esc.state is State.PROPOSED and esc.key is not None
    slot = parts.store.key_slot(parts.order.id)
    assert slot is not None and slot.made_height == 321 == esc.made_height
    assert esc.key.index == slot.index
    keys = [decode_event(open_escrow_step(b.step).event) for _, b in parts.sent
            if isinstance(b, EscrowStep)]
    assert len(keys) == 2 and all(isinstance(k, KeysExchanged) for k in keys)
    await reconciler.reconcile(esc)  # nothing more to do until the peers answer
    assert len(parts.sent) == 2
