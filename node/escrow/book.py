"""One escrow as the driver holds it (machine, keys, signer, chain facts), how it is rebuilt from
its stored steps, and what it shows: views and the events listeners get. Also what the driver's
parts share (`EscrowBook`) and what they need from outside (`OrderDesk`, `Send`).

Pure bookkeeping: no IO here. The machine is rebuilt by feeding the applied steps again in their
feeding order, each preceded by the clock reading it was fed at, so deadlines replay exactly.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from escrow.bitcoin import EscrowPolicy, EscrowSigner, OrderKey
from escrow.machine import FINAL_STATES, EscrowMachine
from escrow.terms import (
    EscrowEvent,
    Funding,
    PayoutKind,
    Role,
    Ruling,
    State,
    Terms,
    Tick,
    UnknownEscrow,
)
from node.escrow.store import StepRow
from node.trade.orders import Order
from node.trade.store import OrderView
from p2pmarket.wire.bodies import Listing
from p2pmarket.wire.escrow import EscrowBody, Proposal
from p2pmarket.wire.market import PaymentMethod
from p2pmarket.wire.records import Record

_encoder = msgspec.msgpack.Encoder()
B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER


class Flag(enum.StrEnum):
    """One-off actions, remembered so a restart does not repeat them."""

    FUNDED_SHARED = "funded_shared"  # our Funded step went to the peers
    PAYMENT_HOOK = "payment_hook"  # seller: the order's payment was confirmed
    SHIPPED = "shipped"  # seller: the escrow heard of the shipment
    CASE_SENT = "case_sent"  # our order log went to the arbiter
    EVIDENCE = "evidence"  # our node answered the dispute
    BROADCAST = "broadcast"  # the settlement was accepted by the chain
    CONFIRMED = "confirmed"  # the settlement is confirmed
    SETTLE_HOOK = "settle_hook"  # seller: the order was settled
    FUND_STARTED = "fund_started"  # buyer: we paid the escrow (never pay twice)
    CONFLICT = "conflict"  # something other than the settlement spent the escrow (told once)


def encode_event(event: EscrowEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(raw: bytes) -> EscrowEvent:
    """An escrow event from untrusted bytes; raises `msgspec.DecodeError`/`ValidationError`."""
    event: EscrowEvent = msgspec.msgpack.decode(raw, type=EscrowEvent)
    return event


def event_tag(event: EscrowEvent | type[EscrowEvent]) -> str:
    return str(event.__struct_config__.tag)


@dataclass(eq=False)
class Escrow:
    """The driver's state for one escrow; `machine` is the only authority on the escrow state."""

    proposal: Proposal
    proposal_raw: bytes
    proposal_hash: bytes
    terms: Terms
    role: Role
    machine: EscrowMachine
    created: int
    key: OrderKey | None = None
    made_height: int | None = None  # tip height when our key was made (None: older escrow)
    refused: str | None = None  # why this node will not take part (a repeated key/address)
    signer: EscrowSigner | None = None
    funding: Funding | None = None
    funding_raw: bytes | None = None
    settlement_raw: bytes | None = None
    flags: set[str] = field(default_factory=set)
    refusals: list[str] = field(default_factory=list)
    retry_at: float = 0.0  # chain actions that failed wait until then

    @property
    def order_id(self) -> str:
        return self.proposal.order

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def parties(self) -> dict[Role, bytes]:
        p = self.proposal
        return {B: p.buyer, S: p.seller, A: p.arbiter}

    def role_of(self, public: bytes) -> Role | None:
        return next((r for r, k in self.parties.items() if k == public), None)

    def others(self) -> list[bytes]:
        return [k for r, k in self.parties.items() if r != self.role]

    @property
    def final(self) -> bool:
        return self.machine.state in FINAL_STATES

    @property
    def policy(self) -> EscrowPolicy | None:
        return self.signer.policy if self.signer is not None else None

    def signed(self, kind: PayoutKind, role: Role | None = None) -> bool:
        return (role or self.role) in self.machine.signatures.get(kind, {})


# -- what the driver's parts share, and what they need from outside ----------------------------

Send = Callable[[bytes, EscrowBody], object]  # queue a message to a peer (`Messenger.send`)


class OrderDesk(Protocol):
    """What the escrow needs of the trade layer: the orders it secures and their listings."""

    def load_order(self, order_id: str) -> Order:
        """The order with its signed log; a `TradeError` when there is none."""
        ...

    def order(self, order_id: str) -> OrderView: ...

    def listing(self, seller: bytes, listing_id: str) -> Record[Listing] | None:
        """The newest copy of a seller's listing this node has."""
        ...

    def offered_listing(self, negotiation_id: str) -> Record[Listing] | None:
        """The listing version a negotiation was made on."""
        ...

    def own_listing(self, listing_id: str) -> Record[Listing] | None:
        """The current record of one of our own listings."""
        ...

    async def confirm_payment(self, order_id: str, method: PaymentMethod,
                              reference: str) -> object: ...

    async def settle(self, order_id: str, reference: str) -> object: ...


class EscrowBook:
    """The escrows of this node and what the driver's parts share about them: the lock they
    take turns on, the listeners, the peers' rule breaks, and which escrows to look at again."""

    def __init__(self) -> None:
        self.escrows: dict[str, Escrow] = {}
        self.listeners: list[Callable[[EscrowUpdate], None]] = []
        self.violations: Counter[bytes] = Counter()
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()  # the worker: inbox or dirty escrows
        self.poke = asyncio.Event()  # the chain watcher
        self.dirty: set[str] = set()

    def get(self, order_id: str) -> Escrow:
        esc = self.escrows.get(order_id)
        if esc is None:
            raise UnknownEscrow(f"no escrow for order {order_id}")
        return esc

    def emit(self, update: EscrowUpdate) -> None:
        for listener in list(self.listeners):
            listener(update)

    def mark(self, esc: Escrow) -> None:
        """Have the worker reconcile `esc` again."""
        self.dirty.add(esc.order_id)
        self.wake.set()

    def take_dirty(self) -> list[str]:
        dirty, self.dirty = sorted(self.dirty), set()
        return dirty


def replay(terms: Terms, role: Role, created: int, rows: Iterable[StepRow]) -> EscrowMachine:
    """Rebuild the machine from the applied steps (in feeding order); raises on a bad log."""
    machine = EscrowMachine(terms, role, now=created)
    for row in rows:
        machine.send(Tick(row.at))
        event = decode_event(row.event)
        if isinstance(event, Tick):
            continue
        if row.author == role:
            machine.send(event)
        else:
            machine.receive(event, Role(row.author))
    return machine


def policy_of(machine: EscrowMachine) -> EscrowPolicy:
    k = machine.keys
    return EscrowPolicy(machine.terms.network, k[B].xpub, k[S].xpub, k[A].xpub,
                        k[S].timeout_xpub, machine.terms.seller_timeout_blocks)


# -- what listeners and the API see -------------------------------------------------------------


class EscrowChanged(msgspec.Struct, frozen=True, tag="escrow"):
    """A step was applied (ours or a peer's); `state` is the escrow state after it."""

    order: str
    state: State
    kind: str  # the escrow event's tag: escrow_keys, funded, release_signed, ruling, ...
    by: str


class EscrowRefused(msgspec.Struct, frozen=True, tag="escrow_refused"):
    """A peer's step was refused (bad PSBT, broken rule); nothing was signed or changed."""

    order: str
    by: str
    kind: str
    reason: str


class EscrowNotice(msgspec.Struct, frozen=True, tag="escrow_notice"):
    """Something the user should know: ruling_needed, deadline_passed, funding_failed,
    broadcast_failed, settled, ..."""

    order: str
    kind: str
    detail: str = ""


EscrowUpdate = EscrowChanged | EscrowRefused | EscrowNotice


class RulingView(msgspec.Struct, frozen=True):
    buyer_sats: int
    seller_sats: int
    fee_sats: int
    note: str


class EscrowView(msgspec.Struct, frozen=True):
    order: str
    role: Role
    state: State
    amount_sats: int
    network: str
    buyer: bytes
    seller: bytes
    arbiter: bytes
    address: str | None
    funding_txid: str | None
    confirmations: int
    signed: tuple[str, ...]  # "release:buyer", "ruling:arbiter", ...
    disputed_by: Role | None
    ruling: RulingView | None
    settled_by: str | None
    settlement_txid: str | None
    confirmed: bool
    deadlines: dict[str, int]
    refusals: tuple[str, ...]


def view(esc: Escrow) -> EscrowView:
    m = esc.machine
    r: Ruling | None = m.ruling
    deadlines = {name: due for name in ("funding", "dispute_window", "ruling")
                 if (due := m.deadline(name)) is not None}
    return EscrowView(
        order=esc.order_id, role=esc.role, state=m.state, amount_sats=esc.terms.amount_sats,
        network=esc.terms.network, buyer=esc.proposal.buyer, seller=esc.proposal.seller,
        arbiter=esc.proposal.arbiter, address=m.address,
        funding_txid=m.funding.txid if m.funding else None, confirmations=m.confirmations,
        signed=tuple(f"{kind}:{role}" for kind, sigs in m.signatures.items() for role in sigs),
        disputed_by=m.disputed_by,
        ruling=RulingView(r.buyer_sats, r.seller_sats, r.fee_sats, r.note) if r else None,
        settled_by=m.settled_by, settlement_txid=m.settlement_txid,
        confirmed=Flag.CONFIRMED in esc.flags, deadlines=deadlines,
        refusals=tuple(esc.refusals[-20:]))
