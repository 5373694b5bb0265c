"""`EscrowSteps`, the driver's part that feeds our own and the peers' escrow events into each
escrow's machine, stores every step with how it was used, and sends ours, signed, to the two
other parties.

A peer's step is checked before the machine sees it: keys and addresses must be valid for the
network, and a PSBT must spend exactly the escrow output into exactly the agreed payout and carry
a valid signature of its sender (proved by signing a scratch copy ourselves and finalizing:
bdk's finalizer runs the script interpreter). A step that is not legal yet (a signature before
we saw the funding, a ruling before both parties were heard) waits as `pending` and is tried
again after every change; one that breaks a rule is `rejected` and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from escrow.bitcoin import address_script, check_psbt, check_xpub, finalize
from escrow.machine import TRANSITIONS, EscrowMachine
from escrow.terms import (
    DeadlinePassed,
    Effect,
    EscrowError,
    EscrowEvent,
    Funded,
    FundingDoubted,
    FundingLost,
    KeysExchanged,
    PayoutKind,
    PeerMisbehaved,
    RefundSigned,
    ReleaseSigned,
    Role,
    Ruling,
    RulingAccepted,
    RulingNeeded,
    Terms,
    Tick,
    TimeoutClaimAvailable,
    TimeoutClaimed,
)
from node.escrow.book import (
    Escrow,
    EscrowBook,
    EscrowChanged,
    EscrowNotice,
    EscrowRefused,
    Send,
    decode_event,
    encode_event,
    event_tag,
    replay,
)
from node.escrow.store import EscrowRow, EscrowStore
from p2pmarket.identity import Identity
from p2pmarket.wire.escrow import (
    EscrowStep,
    EscrowStepPayload,
    Proposal,
    digest,
    open_proposal,
    sign_escrow_step,
)

log = logging.getLogger(__name__)

B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER
MAX_PENDING = 32  # steps of one escrow waiting for their turn; more are refused
PSBT_EVENTS = (ReleaseSigned, RefundSigned, Ruling, RulingAccepted, TimeoutClaimed)
PSBT_KIND: dict[type[EscrowEvent], PayoutKind] = {
    ReleaseSigned: "release", RefundSigned: "refund", Ruling: "ruling",
    RulingAccepted: "ruling", TimeoutClaimed: "timeout",
}


class EscrowSteps:
    """Every change to an escrow's machine goes through here: `act` (ours), `receive` (a
    peer's), `tick` (the clock); each is stored, and ours is sent signed to the other parties.
    `now` is the machines' clock (unix seconds)."""

    def __init__(self, identity: Identity, store: EscrowStore, book: EscrowBook, send: Send,
                 now: Callable[[], int]) -> None:
        self.identity, self.store, self.book = identity, store, book
        self.send, self.now = send, now

    # -- escrows --------------------------------------------------------------------------------

    def create(self, proposal: Proposal, raw: bytes, terms: Terms, role: Role) -> Escrow:
        """A new escrow from a proposal (ours or the buyer's), stored and in the book."""
        now = self.now()
        esc = Escrow(proposal, raw, digest(raw), terms, role, EscrowMachine(terms, role, now=now),
                     created=now)
        self.store.add_escrow(esc.order_id, role, raw, esc.state, now, time.time())
        self.book.escrows[esc.order_id] = esc
        self.book.mark(esc)  # the reconciler sends our keys
        return esc

    def restore(self, row: EscrowRow) -> Escrow:
        """An escrow rebuilt from its stored row and applied steps (not yet in the book)."""
        proposal = open_proposal(row.proposal)
        terms = msgspec.msgpack.decode(proposal.terms, type=Terms)
        role = Role(row.role)
        machine = replay(terms, role, row.created, self.store.steps(row.order_id, "applied"))
        esc = Escrow(proposal, row.proposal, digest(row.proposal), terms, role, machine,
                     row.created, funding_raw=row.funding_tx, settlement_raw=row.settlement_tx,
                     flags=set(row.flags))
        esc.refusals = [f"{r.author}: {r.reason}"
                        for r in self.store.steps(row.order_id, "rejected")]
        return esc

    def save_flags(self, esc: Escrow, *flags: str) -> None:
        esc.flags.update(flags)
        self.store.set_flags(esc.order_id, esc.flags)

    def drop_flags(self, esc: Escrow, *flags: str) -> None:
        esc.flags.difference_update(flags)
        self.store.set_flags(esc.order_id, esc.flags)

    # -- our own events -----------------------------------------------------------------------

    def tick(self, esc: Escrow) -> None:
        """Bring the machine's clock to now; a tick that changes something is stored too."""
        now = self.now()
        effects = esc.machine.send(Tick(now))
        if effects:
            with self.store.db.transaction():
                self.store.add_step(esc.order_id, esc.role, None, encode_event(Tick(now)),
                                    "applied", now)
                self.store.set_state(esc.order_id, esc.state, time.time())
            self._after(esc, effects)

    def act(self, esc: Escrow, event: EscrowEvent, *, share: bool = True) -> None:
        """Apply our own event, store it and (if `share`) send it signed to both other parties,
        all in one transaction. `NotAllowedNow` if the machine refuses; nothing changes."""
        self.tick(esc)
        now = self.now()
        effects = esc.machine.send(event)
        encoded = encode_event(event)
        try:
            raw = sign_escrow_step(self.identity, EscrowStepPayload(
                order=esc.order_id, proposal=esc.proposal_hash, author=self.identity.public,
                at_ms=now * 1000, event=encoded)) if share else None
            with self.store.db.transaction():
                self.store.add_step(esc.order_id, esc.role, raw, encoded, "applied", now)
                self.store.set_state(esc.order_id, esc.state, time.time())
                if raw is not None:
                    for peer in esc.others():
                        self.send(peer, EscrowStep(order=esc.order_id, step=raw))
        except BaseException:
            self._reload(esc)  # the machine moved but nothing was stored: rebuild it
            raise
        log.debug("escrow %s: sent %s (%s)", esc.order_id, event_tag(event), esc.state)
        self.book.emit(EscrowChanged(esc.order_id, esc.state, event_tag(event), esc.role))
        self._after(esc, effects)

    def _reload(self, esc: Escrow) -> None:
        esc.machine = replay(esc.terms, esc.role, esc.created,
                             self.store.steps(esc.order_id, "applied"))

    def _after(self, esc: Escrow, effects: list[Effect]) -> None:
        """Effects that only need telling; everything else is done by the reconciler, which looks
        at the machine's state rather than at effects, so a restart loses nothing."""
        for effect in effects:
            match effect:
                case RulingNeeded(opened_by=by, reason=reason):
                    self.book.emit(EscrowNotice(esc.order_id, "ruling_needed", f"{by}: {reason}"))
                case DeadlinePassed(name=name):
                    self.book.emit(EscrowNotice(esc.order_id, "deadline_passed", name))
                case PeerMisbehaved(party=party, reason=reason):
                    self._refused(esc, party, "descriptor_ack", reason)
                case TimeoutClaimAvailable():
                    self.book.emit(EscrowNotice(esc.order_id, "timeout_claim_available"))
                case FundingDoubted(funding=funding, reason=reason):
                    self.book.emit(EscrowNotice(esc.order_id, "funding_lost",
                                                f"{funding.txid}: {reason}"))
        self.book.mark(esc)

    def _refused(self, esc: Escrow, party: Role, kind: str, reason: str) -> None:
        log.info("escrow %s: refused %s from the %s: %s", esc.order_id, kind, party, reason)
        esc.refusals.append(f"{party} {kind}: {reason}")
        self.book.violations[esc.parties[party]] += 1
        self.book.emit(EscrowRefused(esc.order_id, party, kind, reason))

    # -- peers' events ------------------------------------------------------------------------

    async def receive(self, esc: Escrow, author: Role, event: EscrowEvent, raw: bytes,
                       step_hash: bytes) -> None:
        if self.store.has_step(esc.order_id, step_hash):
            return  # a retry of a step we have
        encoded, now = encode_event(event), self.now()
        if isinstance(event, Tick | FundingLost):
            why = ("a peer cannot move our clock" if isinstance(event, Tick)
                   else "every node watches the funding itself")
            self.store.add_step(esc.order_id, author, raw, encoded, "rejected", now, why)
            self._refused(esc, author, event_tag(event), why)
            return
        if isinstance(event, Funded):  # a claim: our own watcher checks the chain
            self.store.add_step(esc.order_id, author, raw, encoded, "noted", now)
            self.book.poke.set()
            return
        row_id = self.store.add_step(esc.order_id, author, raw, encoded, "pending", now)
        if await self._try(esc, row_id, author, event):
            await self.retry_pending(esc)

    async def retry_pending(self, esc: Escrow) -> None:
        progress = True
        while progress:
            progress = False
            for row in self.store.steps(esc.order_id, "pending"):
                event = _decode(row.event)
                if event is not None and await self._try(esc, row.id, Role(row.author), event):
                    progress = True

    async def _try(self, esc: Escrow, row_id: int, author: Role, event: EscrowEvent) -> bool:
        """Feed one stored peer step if its turn has come; True if it was applied."""
        wait = self._not_yet(esc, event)
        if wait:
            waiting = len(self.store.steps(esc.order_id, "pending"))
            if esc.final or waiting > MAX_PENDING:  # it can no longer become legal
                reason = f"the escrow ended {esc.state}" if esc.final else "too many waiting"
                self.store.mark_step(row_id, "rejected", self.now(), f"{wait}; {reason}")
            else:
                log.debug("escrow %s: %s waits (%s)", esc.order_id, event_tag(event), wait)
            return False
        try:
            await self._check(esc, author, event)
            self.tick(esc)
            effects = esc.machine.receive(event, author)
        except EscrowError as exc:
            self.store.mark_step(row_id, "rejected", self.now(), str(exc))
            self._refused(esc, author, event_tag(event), str(exc))
            return False
        with self.store.db.transaction():
            self.store.mark_step(row_id, "applied", esc.machine.now)
            self.store.set_state(esc.order_id, esc.state, time.time())
        log.debug("escrow %s: %s from the %s (%s)", esc.order_id, event_tag(event), author,
                  esc.state)
        self.book.emit(EscrowChanged(esc.order_id, esc.state, event_tag(event), author))
        self._after(esc, effects)
        return True

    def _not_yet(self, esc: Escrow, event: EscrowEvent) -> str:
        """Why a peer's step cannot be judged yet ("" when it can)."""
        m = esc.machine
        if (m.state, type(event)) not in TRANSITIONS:
            return f"{event_tag(event)} is not legal in {m.state} (yet)"
        if isinstance(event, PSBT_EVENTS) and (esc.signer is None or esc.funding is None):
            return "the funding is not seen here yet"
        if isinstance(event, Ruling):
            due = m.deadline("ruling")
            if not {B, S} <= m.heard and (due is None or self.now() < due):
                return "a ruling before both parties were heard or the ruling deadline"
        if isinstance(event, TimeoutClaimed):
            window = m.deadline("dispute_window")
            if window is None or self.now() < window:
                return "the dispute window is still open"
        return ""

    async def _check(self, esc: Escrow, author: Role, event: EscrowEvent) -> None:
        """Chain and bitcoin facts the machine cannot check; raises an `EscrowError`."""
        network = esc.terms.network
        if isinstance(event, KeysExchanged):
            for xpub in filter(None, (event.xpub, event.timeout_xpub)):
                await asyncio.to_thread(check_xpub, xpub, network)
            await asyncio.to_thread(address_script, event.payout_address, network)
            return
        if not isinstance(event, PSBT_EVENTS):
            return
        kind = PSBT_KIND[type(event)]
        signer, funding, m = esc.signer, esc.funding, esc.machine
        assert signer is not None and funding is not None
        payout = m.payout(kind, event if isinstance(event, Ruling) else None)
        await asyncio.to_thread(check_psbt, event.psbt, signer.policy, funding, payout)
        before = dict(m.signatures.get(kind, {}))
        if isinstance(event, RulingAccepted) and m.ruling is not None:
            before[A] = m.ruling.psbt
        others = [psbt for role, psbt in before.items() if role != author]
        if kind == "timeout":
            await asyncio.to_thread(finalize, [event.psbt])
        elif others:  # this signature completes the quorum: the set must finalize
            await asyncio.to_thread(finalize, [*others, event.psbt])
        else:  # prove the sender's signature: sign a scratch copy, then finalize the pair
            ours = await asyncio.to_thread(signer.sign, event.psbt, funding, payout)
            await asyncio.to_thread(finalize, [event.psbt, ours])


def _decode(raw: bytes) -> EscrowEvent | None:
    try:
        return decode_event(raw)
    except (msgspec.MsgspecError, ValueError):
        return None
