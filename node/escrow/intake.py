"""`EscrowIntake`: escrow messages arriving from peers, kept in the escrow inbox the moment the
messenger hands them over (so a crash loses none), then judged one at a time by the driver's
worker.

A proposal (from the buyer) is checked against what this node knows: the seller compares it with
its own order and listing, the arbiter with its own advert. Terms a node does not agree to still
make an escrow, which it cancels at once with its reason, so the buyer hears why. Steps and case
files for an escrow this node does not know yet wait ("parked") until its proposal arrives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec

from escrow.terms import (
    Cancel,
    EscrowError,
    Network,
    RemoteEscrowError,
    Role,
    Terms,
)
from node.escrow.book import Escrow, EscrowBook, OrderDesk, decode_event
from node.escrow.steps import EscrowSteps
from node.escrow.store import EscrowStore
from node.p2p.messenger import MessageReceived, MessengerEvent
from node.trade.errors import TradeError
from node.trade.orders import Order
from node.trade.orders import Role as OrderRole
from p2pmarket.wire.bodies import Arbiter, Listing
from p2pmarket.wire.escrow import (
    EscrowBody,
    EscrowCase,
    EscrowOpen,
    EscrowStep,
    EscrowWireError,
    Proposal,
    digest,
    open_escrow_step,
    open_proposal,
)
from p2pmarket.wire.order_steps import OrderLogError, open_step, verify_chain
from p2pmarket.wire.records import RecordError, decode_record

log = logging.getLogger(__name__)

B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER
PARK_FOR = 7 * 86_400.0  # how long a step may wait for its escrow's proposal
MAX_FEE_SHARE = 20  # a seller accepts a miner fee bound up to 1/20 of the amount (or 20k sats)


class EscrowIntake:
    """Peers' escrow messages for the node `public` on `network`: `on_message` is the
    messenger's callback, `process_inbox` the worker's turn; `accepts_arbitration` says whether
    this node serves as an arbiter (it has a live advert)."""

    def __init__(self, public: bytes, network: Network, store: EscrowStore, book: EscrowBook,
                 steps: EscrowSteps, orders: OrderDesk, *,
                 accepts_arbitration: Callable[[], bool] = lambda: False) -> None:
        self.public, self.network = public, network
        self.store, self.book, self.steps, self.orders = store, book, steps, orders
        self.accepts_arbitration = accepts_arbitration

    def on_message(self, event: MessengerEvent) -> None:
        """The messenger's callback: store escrow messages; the worker judges them."""
        if not isinstance(event, MessageReceived):
            return
        body = event.message.body
        if isinstance(body, EscrowOpen | EscrowStep | EscrowCase):
            self.store.add_inbox(event.message.sender, body, time.time())
            self.book.wake.set()

    async def process_inbox(self) -> None:
        while rows := self.store.inbox():
            for row in rows:
                try:
                    body: EscrowBody = msgspec.msgpack.decode(row.body, type=EscrowBody)
                    park = await self._handle(row.sender, body)
                except (RemoteEscrowError, EscrowWireError, msgspec.MsgspecError) as exc:
                    self.book.violations[row.sender] += 1
                    log.info("dropped an escrow message from %s: %s", row.sender.hex()[:16], exc)
                    park = False
                except (EscrowError, TradeError) as exc:  # never retry a message forever
                    log.warning("could not handle an escrow message from %s: %s",
                                row.sender.hex()[:16], exc)
                    park = False
                if park:
                    self.store.park(row.id)
                else:
                    self.store.drop_inbox(row.id)

    async def _handle(self, sender: bytes, body: EscrowBody) -> bool:
        """Judge one message; True when it must wait for its escrow's proposal."""
        if isinstance(body, EscrowOpen):
            await self._on_open(sender, body)
            return False
        esc = self.book.escrows.get(body.order)
        if esc is None:
            return True
        if isinstance(body, EscrowStep):
            await self._on_step(esc, sender, body)
        else:
            self._on_case(esc, sender, body)
        return False

    # -- proposals ----------------------------------------------------------------------------

    async def _on_open(self, sender: bytes, body: EscrowOpen) -> None:
        proposal = open_proposal(body.proposal)
        if proposal.order != body.order or sender != proposal.buyer:
            raise RemoteEscrowError("a proposal comes from the order's buyer")
        if body.order in self.book.escrows:
            return  # a retry
        role = {proposal.seller: S, proposal.arbiter: A}.get(self.public)
        if role is None:
            raise RemoteEscrowError("a proposal for an escrow this node is not part of")
        order = _opened_order(proposal)
        try:
            terms = msgspec.msgpack.decode(proposal.terms, type=Terms)
        except (msgspec.MsgspecError, ValueError) as exc:
            raise RemoteEscrowError(f"bad escrow terms: {exc}") from exc
        if terms.order_id != proposal.order:
            raise RemoteEscrowError("the terms name another order")
        reason = self.judge(proposal, terms, role, order)
        with self.store.db.transaction():  # a restart must not find it accepted
            esc = self.steps.create(proposal, body.proposal, terms, role)
            if reason:
                log.info("escrow %s: declined: %s", esc.order_id, reason)
                self.steps.act(esc, Cancel(role, reason[:4000]))
            self.store.unpark(esc.order_id)

    def judge(self, proposal: Proposal, terms: Terms, role: Role, order: Order) -> str:
        """Why this node declines the terms ("" when it agrees)."""
        price = order.terms.price
        if price.currency != "BTC" or price.amount != terms.amount_sats:
            return f"the escrow amount {terms.amount_sats} sats is not the order's price"
        if terms.network != self.network:
            return f"this node's escrow runs on {self.network}, not {terms.network}"
        try:
            advert = decode_record(proposal.advert, allow_expired=True)
        except RecordError as exc:
            return f"the arbiter's advert does not verify: {exc}"
        body = advert.body
        if advert.publisher != proposal.arbiter or not isinstance(body, Arbiter):
            return "the advert is not the arbiter's"
        if (terms.arbiter_fee_bp, terms.arbiter_fee_fixed_sats) != (body.fee_percent_bp,
                                                                    body.fee_fixed_sat):
            return "the arbiter fee differs from the arbiter's advert"
        if role is A:
            return "" if self.accepts_arbitration() else "this node does not serve as arbiter"
        return self._judge_as_seller(proposal, terms, order)

    def _judge_as_seller(self, proposal: Proposal, terms: Terms, order: Order) -> str:
        try:
            mine = self.orders.load_order(order.id)
        except TradeError:
            return "no such order here"
        if mine.log.entries[0].raw != proposal.opened:
            return "the proposal's order is not ours"
        if terms.min_confirmations < 1:
            return "the seller waits for at least one confirmation"
        if terms.max_fee_sats > max(20_000, terms.amount_sats // MAX_FEE_SHARE):
            return "the miner fee bound is too high"
        listing = self.orders.own_listing(order.terms.listing.id)
        if listing is not None and isinstance(listing.body, Listing):
            names = listing.body.arbiters
            if names and proposal.arbiter not in names:
                return "the listing does not name this arbiter"
            if terms.deadlines != listing.body.escrow:
                return "the deadlines differ from the listing's"
        return ""

    # -- steps and case files -----------------------------------------------------------------

    async def _on_step(self, esc: Escrow, sender: bytes, body: EscrowStep) -> None:
        step = open_escrow_step(body.step)
        if step.order != esc.order_id or step.author != sender:
            raise RemoteEscrowError("an escrow step is sent by its author, for its order")
        if step.proposal != esc.proposal_hash:
            raise RemoteEscrowError("an escrow step for another proposal")
        role = esc.role_of(sender)
        if role is None or role is esc.role:
            raise RemoteEscrowError("an escrow step from outside the escrow")
        try:
            event = decode_event(step.event)
        except (msgspec.MsgspecError, ValueError) as exc:
            raise RemoteEscrowError(f"not an escrow event: {exc}") from exc
        await self.steps.receive(esc, role, event, body.step, digest(body.step))

    def _on_case(self, esc: Escrow, sender: bytes, body: EscrowCase) -> None:
        """Arbiter: a party's copy of the order log (checked) and its copy of the listing."""
        role = esc.role_of(sender)
        if esc.role is not A or role not in (B, S):
            raise RemoteEscrowError("a case file goes from a party to the arbiter")
        try:
            log_ = verify_chain(list(body.order_log))
        except OrderLogError as exc:
            raise RemoteEscrowError(f"the order log does not verify: {exc}") from exc
        if log_.entries[0].raw != esc.proposal.opened:
            raise RemoteEscrowError("the order log is of another order")
        self.store.set_case(esc.order_id, role, list(body.order_log), body.listing, time.time())
        self.book.mark(esc)


def _opened_order(proposal: Proposal) -> Order:
    """The order as its opening step (signed by the seller) describes it."""
    try:
        order = Order(open_step(proposal.opened), OrderRole.SELLER)
    except OrderLogError as exc:
        raise RemoteEscrowError(f"the order's opening step does not verify: {exc}") from exc
    if (order.id, order.buyer, order.seller) != (proposal.order, proposal.buyer,
                                                 proposal.seller):
        raise RemoteEscrowError("the opening step names another order, buyer or seller")
    return order
