"""The sans-IO escrow machine: every legal path through three machines joined in memory, the
rules that reject illegal events (typed by who broke them), and random event sequences."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escrow.machine import AUTHORS, TRANSITIONS, Deadline, EscrowMachine, Quorum
from escrow.terms import (
    DUST_SATS,
    Broadcast,
    Cancel,
    DeadlinePassed,
    DeriveEscrowAddress,
    DescriptorAcked,
    DisputeOpened,
    Effect,
    EscrowError,
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
from p2pmarket.wire.bodies import DAY, Arbiter, EscrowTerms

B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER
T0 = 1_700_000_000
AMOUNT = 1_000_000
ESCROW_ADDR = "bcrt1qescrowescrowescrowescrowescrowescrow"
TXID = "ab" * 32


def xpub(role: Role, n: int = 0) -> str:
    return f"tpub{role.value}{n}".ljust(111, "x")


def payto(role: Role) -> str:
    return f"bcrt1q{role.value}payoutaddress"


def make_terms(**changes: object) -> Terms:
    fields: dict[str, object] = dict(
        order_id="order-0001", amount_sats=AMOUNT, min_fee_sats=200, max_fee_sats=10_000,
        arbiter_fee_bp=100, arbiter_fee_fixed_sats=1_000,
    )
    fields.update(changes)
    return msgspec.convert(fields, Terms)


def keys(role: Role, terms: Terms) -> KeysExchanged:
    timeout = xpub(role, 1) if role == S and terms.seller_timeout_blocks else None
    return KeysExchanged(role, xpub(role), payto(role), timeout)


class Trio:
    """Buyer, seller and arbiter machines joined by an in-memory link (h11's ConnectionPair)."""

    def __init__(self, terms: Terms | None = None) -> None:
        self.terms = terms or make_terms()
        self.m = {r: EscrowMachine(self.terms, r, now=T0) for r in Role}
        self.now = T0
        self.log: list[tuple[Role | None, EscrowEvent]] = []  # what a node keeps on disk

    def act(self, author: Role, event: EscrowEvent) -> dict[Role, list[Effect]]:
        out = {author: self.m[author].send(event)}
        self.log.append((author, event))
        for r in Role:
            if r != author:
                out[r] = self.m[r].receive(event, author)
        return out

    def tick(self, seconds: int) -> dict[Role, list[Effect]]:
        self.now += seconds
        self.log.append((None, Tick(self.now)))
        return {r: m.send(Tick(self.now)) for r, m in self.m.items()}

    def states(self) -> set[State]:
        return {m.state for m in self.m.values()}

    def agree(self) -> None:
        for r in Role:
            self.act(r, keys(r, self.terms))
        for r in Role:
            self.act(r, DescriptorAcked(r, ESCROW_ADDR))

    def fund(self, confirmations: int = 1) -> dict[Role, list[Effect]]:
        return self.act(B, Funded(TXID, 0, AMOUNT, confirmations))

    def funded_and_shipped(self) -> None:
        self.agree()
        self.fund()
        self.act(S, Shipped("DHL 123"))


def rejected_everywhere(trio: Trio, author: Role, event: EscrowEvent) -> None:
    before = {r: m.state for r, m in trio.m.items()}
    with pytest.raises(LocalEscrowError):
        trio.m[author].send(event)
    for r in Role:
        if r != author:
            with pytest.raises(RemoteEscrowError):
                trio.m[r].receive(event, author)
    assert {r: m.state for r, m in trio.m.items()} == before


# -- legal paths ------------------------------------------------------------------------------


def test_agreement_derives_the_address_then_asks_the_buyer_to_fund() -> None:
    t = Trio()
    out = {}
    for r in Role:
        out = t.act(r, keys(r, t.terms))
    assert out[A] == [DeriveEscrowAddress(xpub(B), xpub(S), xpub(A), None, None)]
    for r in (S, A):
        t.act(r, DescriptorAcked(r, ESCROW_ADDR))
    assert t.states() == {State.PROPOSED}
    out = t.act(B, DescriptorAcked(B, ESCROW_ADDR))
    assert t.states() == {State.AGREED}
    watch = WatchFunding(ESCROW_ADDR, AMOUNT, 1)
    assert out[B] == [StateChanged(State.PROPOSED, State.AGREED), watch,
                      FundEscrow(ESCROW_ADDR, AMOUNT, T0 + 2 * DAY)]
    assert out[S] == [StateChanged(State.PROPOSED, State.AGREED), watch]


def test_release_buyer_then_seller() -> None:
    t = Trio()
    t.funded_and_shipped()
    assert t.states() == {State.SHIPPED}
    out = t.act(B, ReleaseSigned(B, "psbt-b"))
    release = t.m[S].payout("release")
    assert release.remainder_to == payto(S) and release.outputs == ()
    assert out[S] == [NeedSignature(release, "psbt-b")]
    assert out[A] == [] and out[B] == []
    out = t.act(S, ReleaseSigned(S, "psbt-bs"))
    assert t.states() == {State.RELEASED}
    assert out[B][-1] == FinalizeAndBroadcast(release, ("psbt-b", "psbt-bs"))
    out = t.act(S, Broadcast("cd" * 32))
    assert out[B] == [WatchSettlement("cd" * 32)]
    assert t.m[A].settlement_txid == "cd" * 32


def test_release_before_shipping_and_seller_first() -> None:
    t = Trio()
    t.agree()
    t.fund()
    out = t.act(S, ReleaseSigned(S, "s"))
    assert out[B] == [NeedSignature(t.m[B].payout("release"), "s")]
    t.act(B, ReleaseSigned(B, "sb"))
    assert t.states() == {State.RELEASED}


def test_refund_seller_then_buyer() -> None:
    t = Trio()
    t.funded_and_shipped()
    out = t.act(S, RefundSigned(S, "s"))
    refund = t.m[B].payout("refund")
    assert refund.remainder_to == payto(B)
    assert out[B] == [NeedSignature(refund, "s")]
    t.act(B, RefundSigned(B, "sb"))
    assert t.states() == {State.REFUNDED}


@pytest.mark.parametrize("winner", [B, S])
def test_dispute_ruled_and_accepted_by_the_winner(winner: Role) -> None:
    t = Trio()
    t.funded_and_shipped()
    out = t.act(B, DisputeOpened(B, "arrived broken"))
    assert t.states() == {State.DISPUTED}
    assert RulingNeeded(B, "arrived broken") in out[A]
    t.act(S, Evidence(S, "it left intact", (bytes(32),)))
    fee = t.terms.arbiter_fee_sats  # 1_000 + 1% = 11_000
    win = AMOUNT - fee - 1_000
    split = (win, 0) if winner == B else (0, win)
    out = t.act(A, Ruling(split[0], split[1], fee, "photos convincing", "psbt-a"))
    ruling = t.m[B].payout("ruling")
    assert set(ruling.outputs) == {PayoutOutput(payto(winner), win), PayoutOutput(payto(A), fee)}
    assert ruling.remainder_to is None
    assert out[B] == out[S] == [NeedSignature(ruling, "psbt-a")]
    out = t.act(winner, RulingAccepted(winner, "psbt-aw"))
    assert t.states() == {State.RESOLVED}
    assert out[A][-1] == FinalizeAndBroadcast(ruling, ("psbt-a", "psbt-aw"))


def test_ruling_with_one_party_absent_after_the_ruling_timeout() -> None:
    t = Trio()
    t.funded_and_shipped()
    t.act(B, DisputeOpened(B, "never arrived"))
    early = Ruling(AMOUNT - 12_000, 0, 11_000)
    rejected_everywhere(t, A, early)  # the seller was never heard
    out = t.tick(14 * DAY)
    assert out[A] == [DeadlinePassed("ruling")]
    assert t.tick(DAY)[A] == []  # announced once
    t.act(A, early)
    t.act(B, RulingAccepted(B, "x"))
    assert t.states() == {State.RESOLVED}


def test_split_ruling_paid_to_both() -> None:
    t = Trio(make_terms(arbiter_fee_bp=0, arbiter_fee_fixed_sats=0))
    t.funded_and_shipped()
    t.act(S, DisputeOpened(S, "buyer silent"))
    t.act(B, Evidence(B))
    t.act(A, Ruling(500_000, 499_000, 0))
    assert len(t.m[A].payout("ruling").outputs) == 2  # no arbiter output when its fee is 0
    t.act(S, RulingAccepted(S, "y"))
    assert t.states() == {State.RESOLVED}


def test_mutual_release_ends_a_dispute() -> None:
    t = Trio()
    t.funded_and_shipped()
    t.act(B, DisputeOpened(B, "late"))
    t.act(S, DisputeOpened(S, "me too"))  # simultaneous openings: the second is just heard
    t.act(B, ReleaseSigned(B, "b"))
    t.act(S, ReleaseSigned(S, "bs"))
    assert t.states() == {State.RELEASED}


def test_expiry_before_funding() -> None:
    t = Trio()
    t.agree()
    t.tick(2 * DAY - 1)
    assert t.states() == {State.AGREED}
    out = t.tick(1)
    assert t.states() == {State.EXPIRED}
    assert out[B] == [DeadlinePassed("funding"), StateChanged(State.AGREED, State.EXPIRED)]
    rejected_everywhere(t, S, Shipped())


def test_proposal_expires_when_keys_never_arrive() -> None:
    t = Trio()
    t.act(B, keys(B, t.terms))
    t.tick(2 * DAY)
    assert t.states() == {State.EXPIRED}


def test_funding_seen_in_time_stops_expiry_and_depth_moves_to_funded() -> None:
    t = Trio(make_terms(min_confirmations=2))
    t.agree()
    t.fund(confirmations=0)
    t.tick(3 * DAY)
    assert t.states() == {State.AGREED}
    t.fund(confirmations=1)
    assert t.states() == {State.AGREED}
    out = t.act(S, Funded(TXID, 0, AMOUNT, 2))  # the seller's own watcher may report it too
    assert t.states() == {State.FUNDED}
    assert out[S] == [StateChanged(State.AGREED, State.FUNDED)]


def test_funding_lost_before_shipping_goes_back_to_agreed_and_counts_again() -> None:
    t = Trio()
    t.agree()
    t.fund()
    assert t.states() == {State.FUNDED}
    for r in Role:  # each node's own watcher sees the reorg
        out = t.m[r].send(FundingLost(TXID, "only 0 confirmations now (a reorg)", T0 + 60))
        assert out == [FundingDoubted(Funding(TXID, 0, AMOUNT), "only 0 confirmations now "
                                      "(a reorg)"), StateChanged(State.FUNDED, State.AGREED)]
    assert t.states() == {State.AGREED} and all(m.funding is None for m in t.m.values())
    t.fund()  # the same transaction confirms again: counted anew (not a duplicate)
    assert t.states() == {State.FUNDED}
    with pytest.raises(LocalEscrowError):  # not the funding it counts
        t.m[S].send(FundingLost("ef" * 32, "reorg", T0 + 90))


def test_funding_lost_after_shipping_only_raises_the_alarm() -> None:
    t = Trio()
    t.funded_and_shipped()
    out = t.m[S].send(FundingLost(TXID, "its transaction is gone", T0 + 60))
    assert out == [FundingDoubted(Funding(TXID, 0, AMOUNT), "its transaction is gone")]
    assert t.m[S].state is State.SHIPPED


def test_peers_cannot_report_funding_lost() -> None:
    t = Trio()
    t.agree()
    t.fund()
    with pytest.raises(RemoteEscrowError, match="watches the funding itself"):
        t.m[S].receive(FundingLost(TXID, "trust me", T0), B)
    assert t.m[S].state is State.FUNDED


def test_a_peers_broadcast_notice_never_replaces_our_settlement() -> None:
    t = Trio()
    t.funded_and_shipped()
    t.act(B, ReleaseSigned(B, "b"))
    t.act(S, ReleaseSigned(S, "s"))
    assert t.states() == {State.RELEASED}
    ours, forged = "ab" * 32, "cd" * 32
    t.m[A].receive(Broadcast(forged), B)  # before we finalized: noted for now
    t.m[A].send(Broadcast(ours))  # what we finalized replaces it
    assert t.m[A].settlement_txid == ours
    with pytest.raises(RemoteEscrowError, match="announced settlement"):
        t.m[A].receive(Broadcast(forged), S)
    assert t.m[A].settlement_txid == ours


@pytest.mark.parametrize("funded", [False, True])
def test_cancel_before_funding(funded: bool) -> None:
    t = Trio()
    t.act(S, keys(S, t.terms))
    if funded:
        t = Trio()
        t.agree()
    t.act(B, Cancel(B, "changed my mind"))
    assert t.states() == {State.CANCELLED}


def test_cancel_after_funding_is_refused() -> None:
    t = Trio()
    t.agree()
    t.fund()
    rejected_everywhere(t, B, Cancel(B))
    rejected_everywhere(t, A, Cancel(A))


def test_late_funding_after_expiry_can_be_refunded() -> None:
    t = Trio()
    t.agree()
    t.tick(2 * DAY)
    out = t.fund()
    assert isinstance(out[S][0], LateFunding)
    t.act(B, RefundSigned(B, "b"))
    t.act(S, RefundSigned(S, "bs"))
    assert t.states() == {State.REFUNDED}


def test_seller_timeout_claim_after_the_dispute_window() -> None:
    t = Trio(make_terms(seller_timeout_blocks=144))
    t.funded_and_shipped()
    claim = TimeoutClaimed("psbt-s2")
    rejected_everywhere(t, S, claim)
    out = t.tick(14 * DAY)
    assert out[S] == [DeadlinePassed("dispute_window"),
                      TimeoutClaimAvailable(t.m[S].payout("timeout"), 144)]
    assert out[B] == [DeadlinePassed("dispute_window")]
    rejected_everywhere(t, B, DisputeOpened(B, "too late"))
    out = t.act(S, claim)
    assert t.states() == {State.RELEASED}
    assert out[A][-1] == FinalizeAndBroadcast(t.m[A].payout("timeout"), ("psbt-s2",))


def test_replaying_the_log_rebuilds_the_machine_after_a_restart() -> None:
    t = Trio()
    t.funded_and_shipped()
    t.tick(DAY)
    t.act(B, DisputeOpened(B, "x"))
    t.act(S, Evidence(S))
    t.act(A, Ruling(AMOUNT - 12_000, 0, 11_000, psbt="a"))
    fresh = EscrowMachine(t.terms, S, now=T0)
    for author, event in t.log:
        if author in (S, None):
            fresh.send(event)
        else:
            fresh.receive(event, author)
    old = t.m[S]
    assert (fresh.state, fresh.funding, fresh.ruling, fresh.signatures, fresh.entered_at) == (
        old.state, old.funding, old.ruling, old.signatures, old.entered_at)
    assert fresh.payout("ruling") == old.payout("ruling")


# -- illegal events ---------------------------------------------------------------------------


def test_roles_are_enforced() -> None:
    t = Trio()
    t.agree()
    t.fund()
    rejected_everywhere(t, B, Shipped())
    rejected_everywhere(t, A, ReleaseSigned(A))
    rejected_everywhere(t, S, ReleaseSigned(B))  # speaking for another party
    rejected_everywhere(t, A, DisputeOpened(A, "bored"))
    rejected_everywhere(t, S, Ruling(0, AMOUNT - 1_000, 0))
    rejected_everywhere(t, B, RulingAccepted(B))  # not disputed
    t.act(B, DisputeOpened(B, "x"))
    rejected_everywhere(t, B, RulingAccepted(B))  # no ruling yet
    with pytest.raises(RemoteEscrowError):
        t.m[B].receive(Tick(T0 + 100 * DAY), S)
    with pytest.raises(LocalEscrowError):
        t.m[B].receive(Evidence(B), B)


@pytest.mark.parametrize("ruling", [
    Ruling(AMOUNT - 20_000, 0, 19_999),  # above the agreed arbiter fee (11_000)
    Ruling(AMOUNT - 11_100, 100, 11_000),  # a dust output
    Ruling(AMOUNT - 11_000 - 100, 0, 11_000),  # miner fee below the minimum
    Ruling(AMOUNT - 11_000 - 60_000, 0, 11_000),  # miner fee above the maximum
])
def test_bad_rulings_are_refused(ruling: Ruling) -> None:
    t = Trio()
    t.funded_and_shipped()
    t.act(B, DisputeOpened(B, "x"))
    t.act(S, Evidence(S))
    rejected_everywhere(t, A, ruling)


def test_a_ruling_is_final() -> None:
    t = Trio()
    t.funded_and_shipped()
    t.act(B, DisputeOpened(B, "x"))
    t.act(S, Evidence(S))
    t.act(A, Ruling(AMOUNT - 12_000, 0, 11_000))
    rejected_everywhere(t, A, Ruling(0, AMOUNT - 12_000, 11_000))


def test_funding_must_match_the_terms() -> None:
    t = Trio()
    t.agree()
    rejected_everywhere(t, B, Funded(TXID, 0, AMOUNT - 1, 3))
    t.fund()
    rejected_everywhere(t, B, Funded("ef" * 32, 0, AMOUNT, 3))  # a second funding output


def test_keys_rules() -> None:
    t = Trio(make_terms(seller_timeout_blocks=10))
    t.act(B, keys(B, t.terms))
    rejected_everywhere(t, S, KeysExchanged(S, xpub(S), payto(S)))  # timeout key missing
    rejected_everywhere(t, A, KeysExchanged(A, xpub(B), payto(A)))  # reuses the buyer's key
    rejected_everywhere(t, B, KeysExchanged(B, xpub(B, 7), payto(B)))  # keys cannot change
    with pytest.raises(LocalEscrowError):
        t.m[B].send(DescriptorAcked(B, ESCROW_ADDR))  # not all keys yet


def test_address_mismatch() -> None:
    t = Trio()
    for r in Role:
        t.act(r, keys(r, t.terms))
    t.m[B].send(DescriptorAcked(B, ESCROW_ADDR))
    with pytest.raises(RemoteEscrowError):
        t.m[B].receive(DescriptorAcked(S, "bcrt1qsomeotheraddress"), S)
    # an ack that arrived before ours is checked when ours is made, and dropped
    t.m[A].receive(DescriptorAcked(S, "bcrt1qsomeotheraddress"), S)
    out = t.m[A].send(DescriptorAcked(A, ESCROW_ADDR))
    assert out == [PeerMisbehaved(S, "acknowledged address bcrt1qsomeotheraddress")]
    assert t.m[A].state == State.PROPOSED


def test_buyer_dispute_window_closes_after_shipping_but_not_the_sellers() -> None:
    t = Trio()
    t.funded_and_shipped()
    t.tick(14 * DAY)
    rejected_everywhere(t, B, DisputeOpened(B, "late"))
    t.act(S, DisputeOpened(S, "buyer never releases"))
    assert t.states() == {State.DISPUTED}


def test_duplicates_are_no_ops_and_conflicts_are_errors() -> None:
    t = Trio()
    t.funded_and_shipped()
    t.act(B, ReleaseSigned(B, "b"))
    assert t.m[S].receive(ReleaseSigned(B, "b"), B) == []
    with pytest.raises(RemoteEscrowError):
        t.m[S].receive(ReleaseSigned(B, "other"), B)
    t.act(S, ReleaseSigned(S, "bs"))
    assert t.m[A].receive(ReleaseSigned(S, "bs"), S) == []  # a retry after the transition
    rejected_everywhere(t, S, Shipped("again"))


def test_terms_validation_and_listing_terms() -> None:
    with pytest.raises(msgspec.ValidationError):
        make_terms(min_fee_sats=5_000, max_fee_sats=1_000)
    with pytest.raises(msgspec.ValidationError):
        make_terms(amount_sats=DUST_SATS + 10)
    with pytest.raises(msgspec.ValidationError):
        make_terms(arbiter_fee_bp=2000, arbiter_fee_fixed_sats=900_000)
    deadlines = EscrowTerms(funding_timeout=3600, dispute_window=DAY, ruling_timeout=DAY)
    t = Terms.for_listing("order-0002", 50_000, deadlines, Arbiter("Ann", fee_percent_bp=250,
                                                                  fee_fixed_sat=500))
    assert t.arbiter_fee_sats == 500 + 1_250 and t.deadlines.funding_timeout == 3600


def test_events_round_trip_as_one_tagged_union() -> None:
    events: list[EscrowEvent] = [
        keys(S, make_terms()), DescriptorAcked(A, ESCROW_ADDR), Funded(TXID, 1, 5, 0),
        Shipped(), ReleaseSigned(B, "cHNidP8="), RefundSigned(S), DisputeOpened(B, "r"),
        Evidence(S, "t", (bytes(32),)), Ruling(1, 2, 3), RulingAccepted(B), TimeoutClaimed(),
        Broadcast(TXID), Cancel(A), Tick(5), FundingLost(TXID, "reorg", 7),
    ]
    for ev in events:
        wire = msgspec.msgpack.encode(ev)
        assert msgspec.msgpack.decode(wire, type=EscrowEvent) == ev
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode(Funded("zz", 0, 1, 0)), type=EscrowEvent)


def test_every_transition_has_a_handler_and_authors() -> None:
    for (_state, event_type), target in TRANSITIONS.items():
        assert event_type is Tick or event_type in AUTHORS  # FundingLost: ours only (receive)
        assert hasattr(EscrowMachine, f"_on_{event_type.__name__}") or event_type is Tick
        if isinstance(target, Deadline):
            assert event_type is Tick
        if isinstance(target, Quorum):
            assert target.signers


# -- random sequences -------------------------------------------------------------------------

_TERMS = make_terms(seller_timeout_blocks=50)
_FEE = _TERMS.arbiter_fee_sats
_POOL: list[tuple[Role, EscrowEvent]] = [
    *((r, keys(r, _TERMS)) for r in Role),
    *((r, DescriptorAcked(r, ESCROW_ADDR)) for r in Role),
    (B, KeysExchanged(B, xpub(S), payto(B))),
    (B, Funded(TXID, 0, AMOUNT, 0)), (S, Funded(TXID, 0, AMOUNT, 1)),
    (A, Funded(TXID, 0, AMOUNT - 1, 1)), (B, Funded("ef" * 32, 1, AMOUNT, 6)),
    (S, Shipped()), (B, Shipped()),
    *((r, ReleaseSigned(r, r.value)) for r in Role), *((r, RefundSigned(r, r.value)) for r in Role),
    (S, ReleaseSigned(B)), (B, DisputeOpened(B, "b")), (S, DisputeOpened(S, "s")),
    (A, DisputeOpened(A, "a")), *((r, Evidence(r)) for r in Role),
    (A, Ruling(AMOUNT - _FEE - 1_000, 0, _FEE)), (A, Ruling(0, AMOUNT - 1_000, 0)),
    (A, Ruling(AMOUNT - 1_000, 0, _FEE)), (B, Ruling(AMOUNT - 1_000, 0, 0)),
    *((r, RulingAccepted(r, "acc")) for r in Role), (S, TimeoutClaimed("t")), (B, TimeoutClaimed()),
    (B, Broadcast(TXID)), *((r, Cancel(r)) for r in Role),
]
_STEP = st.one_of(st.sampled_from(_POOL), st.sampled_from([DAY, 3 * DAY, 15 * DAY]))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["none", "agreed", "funded", "shipped", "disputed"]),
       st.lists(_STEP, max_size=30))
def test_random_sequences_keep_the_three_machines_consistent(start: str,
                                                             steps: list[object]) -> None:
    t = Trio(_TERMS)
    if start != "none":
        t.agree()
    if start in ("funded", "shipped", "disputed"):
        t.fund()
    if start in ("shipped", "disputed"):
        t.act(S, Shipped())
    if start == "disputed":
        t.act(B, DisputeOpened(B, "x"))
        t.act(S, Evidence(S))
    edges = {(s, tgt if isinstance(tgt, State) else tgt.target) for (s, _), tgt in
             TRANSITIONS.items()}
    for step in steps:
        before = t.m[B].state
        if isinstance(step, int):
            t.tick(step)
        else:
            assert isinstance(step, tuple)
            author, event = step
            try:
                t.m[author].send(event)
                accepted = True
            except LocalEscrowError:
                accepted = False
                if isinstance(event, DescriptorAcked):
                    continue  # peers buffer an early ack its author could not make yet
            for r in Role:
                if r == author:
                    continue
                try:
                    t.m[r].receive(event, author)
                    assert accepted, (event, r)
                except RemoteEscrowError:
                    assert not accepted, (event, r)
                except EscrowError as exc:  # pragma: no cover - the wrong kind of error
                    raise AssertionError(exc) from exc
        assert len(t.states()) == 1, (step, {r: m.state for r, m in t.m.items()})
        m = t.m[B]
        assert before == m.state or (before, m.state) in edges
        if m.state in (State.FUNDED, State.SHIPPED, State.DISPUTED, State.REFUNDED):
            assert m.funding is not None
        if m.state == State.RELEASED:
            assert {B, S} <= m.signatures.get("release", {}).keys() or m.settled_by == "timeout"
        if m.state == State.REFUNDED:
            assert {B, S} <= m.signatures["refund"].keys()
        if m.state == State.RESOLVED:
            assert m.ruling is not None and len(m.signatures["ruling"]) == 2
