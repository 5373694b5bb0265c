"""The sans-IO escrow state machine: one object per escrow and per party, driven by the events on
the order's log and by the local clock, answering with effects for the shell to carry out.

Everything that changes the state lives in this file: `TRANSITIONS` (the table is the spec),
`AUTHORS` (who may say what) and the guards in `EscrowMachine`. No IO, no clock, no bitcoin
library: time arrives as `Tick(now)`, PSBTs pass through as opaque strings, and the shell checks
signatures, PSBTs and chain facts before it feeds an event in.

Decisions beyond the design page, written down here:
- `send(event)` is our own action, `receive(event, sender)` a peer's message. A rejected event
  raises `NotAllowedNow` (a `LocalEscrowError`) or `RemoteEscrowError` (who broke the rule) and
  changes nothing.
  Feeding the same event from the same author twice is a no-op (the outbox retries).
- PROPOSED expires like AGREED: `funding_timeout` after creation, so a trade whose keys never
  arrive does not hang forever. Funding seen before the deadline (any depth) stops expiry.
- The dispute window only limits the buyer and only after shipping: before shipping the buyer
  can always complain of non-delivery, and the seller can always ask the arbiter to rule (the
  way out when a buyer vanishes).
- A ruling is final once made (a revision could race a co-signature of the old one).
- Funding that a reorg or a double spend takes away (`FundingLost`, from our own watcher) sends
  a FUNDED escrow back to AGREED, where it counts funding again; after shipping it can only
  raise the alarm (`FundingDoubted`).
- Buyer and seller together can still release or refund during a dispute. Money that reaches
  the escrow after CANCELLED/EXPIRED can be refunded (buyer + seller) rather than stuck.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from escrow.terms import (
    DUST_SATS,
    Broadcast,
    Cancel,
    DeadlinePassed,
    DeriveEscrowAddress,
    DescriptorAcked,
    DisputeOpened,
    Effect,
    EscrowEvent,
    Evidence,
    FinalizeAndBroadcast,
    Funded,
    FundEscrow,
    Funding,
    FundingDoubted,
    FundingLost,
    KeysExchanged,
    LateFunding,
    LocalEscrowError,
    NeedSignature,
    NotAllowedNow,
    Payout,
    PayoutKind,
    PayoutOutput,
    PeerMisbehaved,
    RefundSigned,
    ReleaseSigned,
    RemoteEscrowError,
    Role,
    Ruling,
    RulingAccepted,
    RulingNeeded,
    Shipped,
    State,
    StateChanged,
    Terms,
    Tick,
    TimeoutClaimAvailable,
    TimeoutClaimed,
    WatchFunding,
    WatchSettlement,
)

FINAL_STATES = frozenset({State.RELEASED, State.REFUNDED, State.RESOLVED})
B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER
EVERYONE = frozenset(Role)
DeadlineName = Literal["funding", "dispute_window", "ruling"]


@dataclass(frozen=True, slots=True)
class Quorum:
    """Go to `target` once every role in `signers` has sent this event; stay until then."""

    target: State
    signers: frozenset[Role]


@dataclass(frozen=True, slots=True)
class Deadline:
    """On a Tick past the named deadline, go to `target` (announced once)."""

    name: DeadlineName
    target: State


@dataclass(frozen=True, slots=True)
class Deep:
    """Go to `target` once the funding output is `min_confirmations` deep; stay until then."""

    target: State


Target = State | Quorum | Deadline | Deep
_RELEASE = Quorum(State.RELEASED, frozenset({B, S}))
_REFUND = Quorum(State.REFUNDED, frozenset({B, S}))

TRANSITIONS: dict[tuple[State, type[EscrowEvent]], Target] = {
    (State.PROPOSED, KeysExchanged): State.PROPOSED,
    (State.PROPOSED, DescriptorAcked): Quorum(State.AGREED, EVERYONE),
    (State.PROPOSED, Cancel): State.CANCELLED,
    (State.PROPOSED, Tick): Deadline("funding", State.EXPIRED),
    (State.AGREED, Funded): Deep(State.FUNDED),
    (State.AGREED, Cancel): State.CANCELLED,
    (State.AGREED, Tick): Deadline("funding", State.EXPIRED),
    (State.FUNDED, Funded): State.FUNDED,
    (State.FUNDED, Shipped): State.SHIPPED,
    (State.FUNDED, ReleaseSigned): _RELEASE,
    (State.FUNDED, RefundSigned): _REFUND,
    (State.FUNDED, DisputeOpened): State.DISPUTED,
    (State.FUNDED, Tick): State.FUNDED,
    (State.FUNDED, FundingLost): State.AGREED,  # not shipped yet: wait for funding again
    (State.SHIPPED, Funded): State.SHIPPED,
    (State.SHIPPED, ReleaseSigned): _RELEASE,
    (State.SHIPPED, RefundSigned): _REFUND,
    (State.SHIPPED, DisputeOpened): State.DISPUTED,
    (State.SHIPPED, TimeoutClaimed): State.RELEASED,
    (State.SHIPPED, Tick): Deadline("dispute_window", State.SHIPPED),
    (State.SHIPPED, FundingLost): State.SHIPPED,  # shipped: only an alarm is left
    (State.DISPUTED, Funded): State.DISPUTED,
    (State.DISPUTED, DisputeOpened): State.DISPUTED,  # both opened at once: the second is heard
    (State.DISPUTED, Evidence): State.DISPUTED,
    (State.DISPUTED, Ruling): State.DISPUTED,
    (State.DISPUTED, RulingAccepted): State.RESOLVED,
    (State.DISPUTED, ReleaseSigned): _RELEASE,
    (State.DISPUTED, RefundSigned): _REFUND,
    (State.DISPUTED, Tick): Deadline("ruling", State.DISPUTED),
    (State.DISPUTED, FundingLost): State.DISPUTED,
    **{(s, e): s for s in FINAL_STATES for e in (Broadcast, Tick)},
    **{(s, e): s for s in (State.CANCELLED, State.EXPIRED) for e in (Funded, Tick)},
    (State.CANCELLED, RefundSigned): _REFUND,
    (State.EXPIRED, RefundSigned): _REFUND,
}

# Who may author each event; the local clock (Tick) has no author and comes only from `send`.
AUTHORS: dict[type[EscrowEvent], frozenset[Role]] = {
    KeysExchanged: EVERYONE, DescriptorAcked: EVERYONE, Funded: EVERYONE,
    Shipped: frozenset({S}), ReleaseSigned: frozenset({B, S}), RefundSigned: frozenset({B, S}),
    DisputeOpened: frozenset({B, S}), Evidence: EVERYONE, Ruling: frozenset({A}),
    RulingAccepted: frozenset({B, S}), TimeoutClaimed: frozenset({S}), Broadcast: EVERYONE,
    Cancel: EVERYONE, FundingLost: EVERYONE,  # only ever our own: receive() refuses it
}


# -- the machine ------------------------------------------------------------------------------


class EscrowMachine:
    """One party's view of one escrow. Not thread-safe; drive it from one task."""

    def __init__(self, terms: Terms, role: Role, *, now: int) -> None:
        self.terms = terms
        self.role = role
        self.state = State.PROPOSED
        self.now = now
        self.created_at = now
        self.entered_at = now  # when the current state was entered
        self.keys: dict[Role, KeysExchanged] = {}
        self.acks: dict[Role, str] = {}
        self.address: str | None = None  # our own DescriptorAcked address once sent
        self.funding: Funding | None = None
        self.confirmations = 0
        self.shipped_at: int | None = None
        self.disputed_by: Role | None = None
        self.heard: set[Role] = set()
        self.ruling: Ruling | None = None
        self.signatures: dict[PayoutKind, dict[Role, str]] = {}
        self.settled_by: PayoutKind | None = None
        self.settlement_txid: str | None = None
        self.announced: set[DeadlineName] = set()
        self._seen: set[tuple[Role, EscrowEvent]] = set()

    # -- public API ---------------------------------------------------------------------------

    def send(self, event: EscrowEvent) -> list[Effect]:
        """Apply our own action (or the local clock); `LocalEscrowError` if not allowed now."""
        return self._handle(event, self.role)

    def receive(self, event: EscrowEvent, sender: Role) -> list[Effect]:
        """Apply a peer's message; `RemoteEscrowError` if it breaks the rules."""
        if sender == self.role:
            raise LocalEscrowError("receive() is for peers' messages; use send() for ours")
        if isinstance(event, Tick):
            raise RemoteEscrowError("a peer cannot move our clock")
        if isinstance(event, FundingLost):
            raise RemoteEscrowError("every node watches the funding itself")
        return self._handle(event, sender)

    def deadline(self, name: DeadlineName) -> int | None:
        d = self.terms.deadlines
        if name == "funding" and self.state in (State.PROPOSED, State.AGREED):
            return self.entered_at + d.funding_timeout
        if name == "dispute_window" and self.shipped_at is not None:
            return self.shipped_at + d.dispute_window
        if name == "ruling" and self.state == State.DISPUTED:
            return self.entered_at + d.ruling_timeout
        return None

    def payout(self, kind: PayoutKind, ruling: Ruling | None = None) -> Payout:
        """The exact outputs the `kind` settlement must have (for building and checking PSBTs).

        For "ruling" the split is the recorded ruling, or `ruling` (the arbiter building the
        PSBT it will attach to its Ruling event).
        """
        t, keys = self.terms, self.keys
        if len(keys) < 3:
            raise NotAllowedNow("payout addresses are not known before all keys are in")
        outputs: tuple[PayoutOutput, ...] = ()
        remainder: str | None = None
        if kind in ("release", "timeout"):
            remainder = keys[S].payout_address
        elif kind == "refund":
            remainder = keys[B].payout_address
        else:
            r = ruling or self.ruling
            if r is None:
                raise NotAllowedNow("no ruling yet")
            split = ((B, r.buyer_sats), (S, r.seller_sats), (A, r.fee_sats))
            outputs = tuple(PayoutOutput(keys[p].payout_address, v) for p, v in split if v)
        return Payout(kind, outputs, remainder, t.min_fee_sats, t.max_fee_sats)

    # -- dispatch -----------------------------------------------------------------------------

    def _fail(self, sender: Role, message: str) -> NotAllowedNow | RemoteEscrowError:
        if sender == self.role:
            return NotAllowedNow(message)
        return RemoteEscrowError(f"{sender}: {message}")

    def _handle(self, event: EscrowEvent, sender: Role) -> list[Effect]:
        if isinstance(event, Tick):
            self.now = max(self.now, event.now)
            target = TRANSITIONS.get((self.state, Tick), self.state)
            return self._tick(target)
        key = (sender, event)
        if key in self._seen:
            return []
        found = TRANSITIONS.get((self.state, type(event)))
        if found is None:
            raise self._fail(sender, f"{type(event).__name__} is not allowed in {self.state}")
        if sender not in AUTHORS[type(event)]:
            raise self._fail(sender, f"the {sender} may not send {type(event).__name__}")
        claimed = getattr(event, "party", None) or getattr(event, "by", None)
        if claimed is not None and claimed != sender:
            raise self._fail(sender, f"the {sender} cannot speak for the {claimed}")
        handler = getattr(self, f"_on_{type(event).__name__}")
        effects: list[Effect] = handler(event, sender, found)
        self._seen.add(key)
        return effects

    def _go(self, new: State) -> list[Effect]:
        if new == self.state:
            return []
        old, self.state, self.entered_at = self.state, new, self.now
        return [StateChanged(old, new)]

    def _tick(self, target: Target) -> list[Effect]:
        if not isinstance(target, Deadline):
            return []
        due = self.deadline(target.name)
        if due is None or self.now < due or target.name in self.announced:
            return []
        if target.name == "funding" and self.funding is not None:
            return []  # funding seen in time; waiting for depth only
        self.announced.add(target.name)
        effects: list[Effect] = [DeadlinePassed(target.name), *self._go(target.target)]
        if target.name == "dispute_window" and self.role == S and self.keys.get(S):
            blocks = self.terms.seller_timeout_blocks
            if blocks is not None and self.keys[S].timeout_xpub:
                effects.append(TimeoutClaimAvailable(self.payout("timeout"), blocks))
        return effects

    # -- handlers: validate first, then change state ------------------------------------------

    def _on_KeysExchanged(self, ev: KeysExchanged, sender: Role, _: Target) -> list[Effect]:
        if sender in self.keys:
            raise self._fail(sender, "keys were already exchanged and cannot change")
        wants_timeout = sender == S and self.terms.seller_timeout_blocks is not None
        if wants_timeout != (ev.timeout_xpub is not None):
            raise self._fail(sender, "timeout key present/absent against the terms")
        xpubs = {k.xpub for k in self.keys.values()} | {
            k.timeout_xpub for k in self.keys.values() if k.timeout_xpub}
        if ev.xpub in xpubs or (ev.timeout_xpub and ev.timeout_xpub in xpubs | {ev.xpub}):
            raise self._fail(sender, "reuses another party's key")
        self.keys[sender] = ev
        if len(self.keys) < 3:
            return []
        k = self.keys
        return [DeriveEscrowAddress(k[B].xpub, k[S].xpub, k[A].xpub, k[S].timeout_xpub,
                                    self.terms.seller_timeout_blocks)]

    def _on_DescriptorAcked(self, ev: DescriptorAcked, sender: Role, t: Target) -> list[Effect]:
        if sender in self.acks:
            raise self._fail(sender, "already acknowledged a different address")
        effects: list[Effect] = []
        if sender == self.role:
            if len(self.keys) < 3:
                raise NotAllowedNow("cannot acknowledge an address before all keys are in")
            self.address = ev.address
            for party, addr in list(self.acks.items()):  # acks that arrived before ours
                if addr != ev.address:
                    del self.acks[party]
                    effects.append(PeerMisbehaved(party, f"acknowledged address {addr}"))
        elif self.address is not None and ev.address != self.address:
            raise self._fail(sender, f"acknowledged {ev.address}, we computed {self.address}")
        self.acks[sender] = ev.address
        assert isinstance(t, Quorum)
        if not t.signers <= self.acks.keys():
            return effects
        effects += self._go(t.target)
        effects.append(WatchFunding(ev.address, self.terms.amount_sats,
                                    self.terms.min_confirmations))
        if self.role == B:
            due = self.deadline("funding")
            assert due is not None
            effects.append(FundEscrow(ev.address, self.terms.amount_sats, due))
        return effects

    def _on_Funded(self, ev: Funded, sender: Role, t: Target) -> list[Effect]:
        if ev.amount != self.terms.amount_sats:
            agreed = self.terms.amount_sats
            raise self._fail(sender, f"funding of {ev.amount} sats, agreed {agreed}")
        seen = Funding(ev.txid, ev.vout, ev.amount)
        late = self.state in (State.CANCELLED, State.EXPIRED)
        if late and len(self.acks) < 3:
            raise self._fail(sender, "no escrow address was ever agreed")
        if self.funding is not None and seen != self.funding and self.state != State.AGREED:
            raise self._fail(sender, "a second funding output; the escrow is already funded")
        first = self.funding != seen
        self.funding = seen
        self.confirmations = ev.confirmations if first else max(self.confirmations,
                                                                ev.confirmations)
        if late:
            return [LateFunding(seen)] if first else []
        if isinstance(t, Deep) and self.confirmations >= self.terms.min_confirmations:
            return self._go(t.target)
        return []

    def _on_FundingLost(self, ev: FundingLost, sender: Role, t: Target) -> list[Effect]:
        if self.funding is None or self.funding.txid != ev.txid:
            raise self._fail(sender, "that is not the funding this escrow counted")
        effects: list[Effect] = [FundingDoubted(self.funding, ev.reason)]
        self.confirmations = 0
        if t == State.AGREED:  # forget it: the same or another funding is counted anew
            self.funding = None
            self._seen = {k for k in self._seen if not isinstance(k[1], Funded)}
            effects += self._go(State.AGREED)
        return effects

    def _on_Shipped(self, ev: Shipped, sender: Role, t: Target) -> list[Effect]:
        self.shipped_at = self.now
        return self._go(State.SHIPPED)

    def _on_ReleaseSigned(self, ev: ReleaseSigned, sender: Role, t: Target) -> list[Effect]:
        return self._signed("release", ev.psbt, sender, t)

    def _on_RefundSigned(self, ev: RefundSigned, sender: Role, t: Target) -> list[Effect]:
        if self.funding is None:
            raise self._fail(sender, "nothing to refund: no funding seen")
        return self._signed("refund", ev.psbt, sender, t)

    def _signed(self, kind: PayoutKind, psbt: str, sender: Role, t: Target) -> list[Effect]:
        sigs = self.signatures.setdefault(kind, {})
        if sender in sigs:
            raise self._fail(sender, f"already signed the {kind} with another PSBT")
        sigs[sender] = psbt
        assert isinstance(t, Quorum)
        if not t.signers <= sigs.keys():
            if sender != self.role and self.role in t.signers:
                return [NeedSignature(self.payout(kind), psbt)]
            return []
        self.settled_by = kind
        return [*self._go(t.target),
                FinalizeAndBroadcast(self.payout(kind), tuple(sigs[r] for r in sorted(sigs)))]

    def _on_DisputeOpened(self, ev: DisputeOpened, sender: Role, t: Target) -> list[Effect]:
        if self.state == State.DISPUTED:
            self.heard.add(sender)
            return []
        window = self.deadline("dispute_window")
        if sender == B and window is not None and self.now >= window:
            raise self._fail(sender, "the dispute window has closed")
        self.disputed_by = sender
        self.heard = {sender}
        effects = self._go(State.DISPUTED)
        if self.role == A:
            effects.append(RulingNeeded(sender, ev.reason))
        return effects

    def _on_Evidence(self, ev: Evidence, sender: Role, t: Target) -> list[Effect]:
        self.heard.add(sender)
        return []

    def _on_Ruling(self, ev: Ruling, sender: Role, t: Target) -> list[Effect]:
        if self.ruling is not None:
            raise self._fail(sender, "the ruling was already made and cannot change")
        due = self.deadline("ruling")
        if not {B, S} <= self.heard and (due is None or self.now < due):
            raise self._fail(sender, "ruling before both parties were heard or the timeout")
        parts = (ev.buyer_sats, ev.seller_sats, ev.fee_sats)
        if any(0 < v < DUST_SATS for v in parts):
            raise self._fail(sender, "a ruling output below the dust limit")
        if ev.fee_sats > self.terms.arbiter_fee_sats:
            raise self._fail(sender, f"arbiter fee {ev.fee_sats} above the agreed "
                                     f"{self.terms.arbiter_fee_sats}")
        miner = self.terms.amount_sats - sum(parts)
        if not self.terms.min_fee_sats <= miner <= self.terms.max_fee_sats:
            raise self._fail(sender, f"the split leaves a miner fee of {miner} sats")
        self.ruling = ev
        self.signatures["ruling"] = {A: ev.psbt}
        if self.role in (B, S):
            return [NeedSignature(self.payout("ruling"), ev.psbt)]
        return []

    def _on_RulingAccepted(self, ev: RulingAccepted, sender: Role, t: Target) -> list[Effect]:
        if self.ruling is None:
            raise self._fail(sender, "there is no ruling to accept")
        sigs = self.signatures["ruling"]
        sigs[sender] = ev.psbt
        self.settled_by = "ruling"
        return [*self._go(State.RESOLVED),
                FinalizeAndBroadcast(self.payout("ruling"), (sigs[A], ev.psbt))]

    def _on_TimeoutClaimed(self, ev: TimeoutClaimed, sender: Role, t: Target) -> list[Effect]:
        window = self.deadline("dispute_window")
        if self.terms.seller_timeout_blocks is None:
            raise self._fail(sender, "the escrow has no timeout branch")
        if window is None or self.now < window:
            raise self._fail(sender, "the dispute window is still open")
        self.signatures["timeout"] = {S: ev.psbt}
        self.settled_by = "timeout"
        return [*self._go(State.RELEASED),
                FinalizeAndBroadcast(self.payout("timeout"), (ev.psbt,))]

    def _on_Broadcast(self, ev: Broadcast, sender: Role, t: Target) -> list[Effect]:
        if self.settlement_txid == ev.txid:
            return []
        if sender != self.role and self.settlement_txid is not None:
            # ours is the transaction we finalized from the signatures; a peer's notice
            # naming another one never replaces it (the watcher checks what spent the funding)
            raise RemoteEscrowError(f"{sender}: announced settlement {ev.txid}, "
                                    f"but it is {self.settlement_txid}")
        self.settlement_txid = ev.txid
        return [WatchSettlement(ev.txid)]

    def _on_Cancel(self, ev: Cancel, sender: Role, t: Target) -> list[Effect]:
        effects = self._go(State.CANCELLED)
        if self.funding is not None:
            effects.append(LateFunding(self.funding))
        return effects
