"""The sans-IO order state machine: one `Order` per order and party, over its hash-chained log.

Everything that affects the order's state lives in this file: `TRANSITIONS` (the table is the
spec; a key is (state, author's role, action)), `PRECEDENCE` (which of two crossing steps
stands) and the guards in `Order`. No IO, no clock: the shell passes `at_ms`, sends the bytes
`send` returns and feeds the peer's steps to `receive`.

Decisions beyond the design page, written down here:
- The seller writes the first step (`Opened`, with the review grant): the seller owns the stock
  and the listing, so an order exists once the seller's node has said so.
- Payment is a step too: `PaymentConfirmed` (AWAITING_PAYMENT -> PAID) and `Settled`
  (RECEIVED -> COMPLETED) are the hooks the escrow driver will call through the seller's node
  (method "escrow", reference = txid). With method "manual" the seller confirms money received
  off-platform and its node settles by itself once the buyer confirms receipt.
- Both parties may act in CREATED and AWAITING_PAYMENT (cancel crosses address or payment), so two
  steps can extend the same entry. Both sides keep the step that ranks higher in `PRECEDENCE`
  (payment > cancel > the rest), the lower hash on a tie; the losing side drops its own step
  and the peer's later steps built on it. Both logs end up identical.
- A rejected step raises `LocalProtocolError` (our caller's mistake: `IllegalEvent`,
  `WrongRole`) or `RemoteProtocolError` (the peer's) and changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from node.trade.errors import (
    IllegalEvent,
    LocalProtocolError,
    RemoteProtocolError,
    TradeError,
    WrongRole,
)
from p2pmarket.identity import Identity
from p2pmarket.wire.market import (
    Action,
    AddressSent,
    Cancelled,
    Opened,
    PaymentConfirmed,
    Received,
    Settled,
    Shipped,
    order_id_for,
    verify_grant,
)
from p2pmarket.wire.order_steps import (
    GENESIS_PREV,
    Entry,
    OrderLog,
    OrderLogError,
    open_step,
    sign_step,
    verify_chain,
)

MAX_WAITING = 16  # steps held back while an earlier one is still on its way


class Role(enum.StrEnum):
    BUYER = "buyer"
    SELLER = "seller"

    @property
    def other(self) -> Role:
        return Role.SELLER if self is Role.BUYER else Role.BUYER


class OrderState(enum.StrEnum):
    CREATED = "created"
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    SHIPPED = "shipped"
    RECEIVED = "received"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


B, S = Role.BUYER, Role.SELLER
O = OrderState  # noqa: E741 - short name keeps the table readable

TRANSITIONS: dict[tuple[OrderState, Role, type[Action]], OrderState] = {
    (O.CREATED, B, AddressSent): O.AWAITING_PAYMENT,
    (O.CREATED, B, Cancelled): O.CANCELLED,
    (O.CREATED, S, Cancelled): O.CANCELLED,
    (O.AWAITING_PAYMENT, S, PaymentConfirmed): O.PAID,
    (O.AWAITING_PAYMENT, B, Cancelled): O.CANCELLED,
    (O.AWAITING_PAYMENT, S, Cancelled): O.CANCELLED,
    (O.PAID, S, Shipped): O.SHIPPED,
    (O.SHIPPED, B, Received): O.RECEIVED,
    (O.RECEIVED, S, Settled): O.COMPLETED,
}
# the opening step: (author, action) that creates an order in CREATED
GENESIS: tuple[Role, type[Action]] = (S, Opened)
FINAL_STATES = frozenset({O.COMPLETED, O.CANCELLED})
# of two steps extending the same entry, the higher stands (then the lower hash)
PRECEDENCE: dict[type[Action], int] = {PaymentConfirmed: 2, Cancelled: 1}
AUTHORS: dict[type[Action], frozenset[Role]] = {
    action: frozenset(r for (_, r, a) in TRANSITIONS if a is action)
    for action in {a for (_, _, a) in TRANSITIONS}
}
VERBS: dict[type[Action], str] = {
    Opened: "open", AddressSent: "send the address of", PaymentConfirmed: "confirm payment of",
    Shipped: "ship", Received: "confirm receipt of", Settled: "settle", Cancelled: "cancel",
}


@dataclass(frozen=True, slots=True)
class Applied:
    """Steps added to the log (the received one, then any it unblocked); `dropped` are our own
    steps that lost to a crossing step of the peer's."""

    entries: tuple[Entry, ...]
    state: OrderState
    dropped: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


Outcome = Applied | Ignored


def _wins(a: Entry, b: Entry) -> bool:
    rank_a, rank_b = PRECEDENCE.get(type(a.action), 0), PRECEDENCE.get(type(b.action), 0)
    return rank_a > rank_b or (rank_a == rank_b and a.hash < b.hash)


class Order:
    """One party's view of an order; build it with `create`, `from_genesis` or `restore`."""

    def __init__(self, genesis: Entry, our_role: Role) -> None:
        terms = genesis.action
        if not isinstance(terms, Opened) or genesis.author != terms.seller:
            raise OrderLogError("an order opens with the seller's Opened step")
        if genesis.step.index != 0 or genesis.step.prev != GENESIS_PREV:
            raise OrderLogError("the opening step is step 0")
        if genesis.step.order != order_id_for(terms.negotiation, terms.proposal):
            raise OrderLogError("order id is not derived from the accepted proposal")
        if terms.buyer == terms.seller:
            raise OrderLogError("buyer and seller are the same key")
        if not verify_grant(terms.seller, genesis.step.order, terms.rating_key, terms.grant):
            raise OrderLogError("the review grant does not verify")
        self.id = genesis.step.order
        self.terms = terms
        self.our_role = our_role
        self.me = terms.buyer if our_role is B else terms.seller
        self.log = OrderLog(self.id, [genesis])
        self._states: list[OrderState] = [O.CREATED]
        self._lost: set[bytes] = set()  # peer steps that lost a crossing, and their descendants
        self._waiting: dict[bytes, bytes] = {}  # prev hash -> raw step that arrived early

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def create(cls, seller: Identity, terms: Opened, at_ms: int) -> Order:
        """The seller opens an order; send `order.log.entries[0].raw` to the buyer."""
        order_id = order_id_for(terms.negotiation, terms.proposal)
        try:
            return cls(sign_step(seller, order_id, 0, GENESIS_PREV, terms, at_ms), S)
        except OrderLogError as exc:
            raise LocalProtocolError(f"cannot open the order: {exc}") from exc

    @classmethod
    def from_genesis(cls, raw: bytes, buyer: bytes) -> Order:
        """The buyer's copy, from the opening step the seller sent; `buyer` is our key."""
        try:
            order = cls(open_step(raw), B)
        except OrderLogError as exc:
            raise RemoteProtocolError(f"bad opening step: {exc}") from exc
        if order.terms.buyer != buyer:
            raise RemoteProtocolError("the order names another buyer")
        return order

    @classmethod
    def restore(cls, raws: list[bytes], our_role: Role) -> Order:
        """Rebuild from a stored log, checking the chain and every transition again."""
        try:
            log = verify_chain(raws)
            order = cls(log.entries[0], our_role)
            for entry in log.entries[1:]:
                order._apply(entry, order._check(entry, order.state, remote=True))
        except (OrderLogError, RemoteProtocolError) as exc:
            raise TradeError(f"stored order log does not verify: {exc}") from exc
        return order

    # -- queries -------------------------------------------------------------------------------

    @property
    def state(self) -> OrderState:
        return self._states[-1]

    @property
    def buyer(self) -> bytes:
        return self.terms.buyer

    @property
    def seller(self) -> bytes:
        return self.terms.seller

    def role_of(self, author: bytes) -> Role | None:
        return B if author == self.buyer else S if author == self.seller else None

    def last(self, action: type[Action]) -> Entry | None:
        return next((e for e in reversed(self.log.entries) if isinstance(e.action, action)),
                    None)

    def allowed(self, role: Role) -> list[type[Action]]:
        """The actions `role` may take now."""
        return [a for (s, r, a) in TRANSITIONS if s is self.state and r is role]

    # -- transitions ---------------------------------------------------------------------------

    def send(self, identity: Identity, action: Action, at_ms: int) -> Entry:
        """Our own step: checked, signed, appended; send `entry.raw` to the other party."""
        if identity.public != self.me:
            raise LocalProtocolError("signing key is not our party's key in this order")
        kind = type(action)
        if self.our_role not in AUTHORS.get(kind, frozenset()):
            if kind is Opened:
                raise IllegalEvent("an order is opened only once")
            only = " or ".join(sorted(AUTHORS.get(kind, ()))) or "nobody"
            raise WrongRole(f"only the {only} can {VERBS[kind]} an order")
        if (self.state, self.our_role, kind) not in TRANSITIONS:
            raise IllegalEvent(f"cannot {VERBS[kind]} an order that is {self.state}")
        try:
            entry = sign_step(identity, self.id, len(self.log), self.log.head, action, at_ms)
        except OrderLogError as exc:
            raise LocalProtocolError(str(exc)) from exc
        self._apply(entry, TRANSITIONS[(self.state, self.our_role, kind)])
        return entry

    def receive(self, raw: bytes) -> Outcome:
        """A step from the other party; raises `RemoteProtocolError` if it breaks the rules."""
        try:
            entry = open_step(raw)
        except OrderLogError as exc:
            raise RemoteProtocolError(str(exc)) from exc
        if entry.step.order != self.id:
            raise RemoteProtocolError(f"step of order {entry.step.order} sent as {self.id}")
        if self.role_of(entry.author) is not self.our_role.other:
            raise RemoteProtocolError("step not signed by the other party")
        if self.log.find(entry.hash) is not None:
            return Ignored("duplicate step")
        if entry.step.prev in self._lost:
            self._lost.add(entry.hash)
            return Ignored("builds on a step that lost a crossing")
        index = entry.step.index
        if self.log.extends(entry):
            self._apply(entry, self._check(entry, self.state, remote=True))
            return Applied((entry, *self._drain()), self.state)
        if 0 < index < len(self.log) and entry.step.prev == self.log.entries[index - 1].hash:
            return self._fork(entry, index)
        if index > len(self.log) and len(self._waiting) < MAX_WAITING:
            self._waiting[entry.step.prev] = raw
            return Ignored("waiting for an earlier step")
        raise RemoteProtocolError(f"step {index} does not extend the log at {len(self.log)}")

    def _fork(self, entry: Entry, index: int) -> Outcome:
        ours = self.log.entries[index:]
        if any(e.author != self.me for e in ours):
            raise RemoteProtocolError("step forks the log below the peer's own later steps")
        target = self._check(entry, self._states[index - 1], remote=True)
        if not _wins(entry, ours[0]):
            self._lost.add(entry.hash)
            return Ignored("crossed one of our steps, which stands")
        dropped = self.log.truncate(index)
        del self._states[index:]
        self._apply(entry, target)
        return Applied((entry, *self._drain()), self.state, tuple(dropped))

    def _drain(self) -> list[Entry]:
        applied: list[Entry] = []
        while (raw := self._waiting.pop(self.log.head, None)) is not None:
            try:
                outcome = self.receive(raw)
            except RemoteProtocolError:
                break
            if isinstance(outcome, Applied):
                applied.extend(outcome.entries)
        return applied

    def _check(self, entry: Entry, state: OrderState, *, remote: bool) -> OrderState:
        role = self.role_of(entry.author)
        error = RemoteProtocolError if remote else LocalProtocolError
        if role is None:
            raise error("step signed by neither party")
        target = TRANSITIONS.get((state, role, type(entry.action)))
        if target is None:
            raise error(f"the {role} may not {VERBS[type(entry.action)]} an order that is "
                        f"{state}")
        return target

    def _apply(self, entry: Entry, target: OrderState) -> None:
        self.log.append(entry)
        self._states.append(target)
