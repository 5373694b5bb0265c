"""The devchain's mempool and reorg transitions, each a pure function over the chain state that
returns what changed (for the store to follow): admit (policy or permissive), force a conflicting
spend in, evict, expire, and invalidate blocks with the mempool rebuilt on the shorter chain.

Every transaction that enters, or comes back, passes the consensus check (rules.py) again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from escrow.devchain.chain import ChainState
from escrow.devchain.policy import Admission, RelayPolicy, check_policy, expired
from escrow.devchain.primitives import Block, Tx, hash_hex
from escrow.devchain.rules import Checked, TxRejected, check_spend, check_transaction

log = logging.getLogger(__name__)


class MempoolError(Exception):
    """A devchain operation on the mempool or the chain that cannot be done (unknown txid,
    invalidating the genesis block, ...): the caller's mistake, the state is unchanged."""


@dataclass(frozen=True, slots=True)
class MempoolChange:
    """What one transition did. `removed` left the mempool unmined (evicted, replaced,
    expired, or not taken back after a reorg), parents first."""

    added: tuple[Tx, ...] = ()
    removed: tuple[bytes, ...] = ()
    disconnected: tuple[Block, ...] = ()  # tip first
    returned: tuple[bytes, ...] = ()  # from disconnected blocks back into the mempool


def judge(state: ChainState, tx: Tx, policy: RelayPolicy | None) -> Admission:
    """The verdict on a submitted transaction (reads `state` only, may run in a thread):
    without a policy a conflict is refused, with one it may replace (BIP125)."""
    if policy is None:
        return Admission(check_transaction(state, tx))
    return check_policy(state, tx, check_spend(state, tx), policy)


def admit(state: ChainState, tx: Tx, admission: Admission, now: float) -> MempoolChange:
    """Apply a verdict from `judge` (on the same state): evict, then add."""
    removed = state.remove_from_mempool(admission.evicts)
    state.add_to_mempool(tx, admission.fee, now)
    return MempoolChange(added=(tx,), removed=tuple(removed))


def judge_forced(state: ChainState, tx: Tx) -> Admission:
    """A conflicting spend a miner would take (the test's double spend): consensus only, no
    policy; it evicts the mempool transactions it conflicts with and their descendants."""
    checked = check_spend(state, tx)
    evicts = tuple(state.mempool_descendants(checked.conflicts))
    _refuse_spending_evicted(tx, checked, evicts)
    return Admission(checked.fee, evicts)


def _refuse_spending_evicted(tx: Tx, checked: Checked, evicts: tuple[bytes, ...]) -> None:
    gone = set(evicts)
    for txin in tx.inputs:
        if txin.prevout.txid in gone:
            raise TxRejected(
                f"bad-txns-spends-conflicting-tx: {tx.txid_hex} spends "
                f"{hash_hex(txin.prevout.txid)}, which it replaces"
            )


def evict(state: ChainState, txid: bytes) -> MempoolChange:
    """Drop a mempool transaction and its descendants (what a full or expiring mempool does)."""
    if txid not in state.mempool:
        raise MempoolError(f"transaction {hash_hex(txid)} is not in the mempool")
    return MempoolChange(removed=tuple(state.remove_from_mempool([txid])))


def expire(state: ChainState, policy: RelayPolicy | None, now: float) -> MempoolChange:
    """Evict what `policy` says has waited too long, with descendants (no policy: nothing)."""
    if policy is None:
        return MempoolChange()
    old = expired(state, policy, now)
    if not old:
        return MempoolChange()
    removed = state.remove_from_mempool(old)
    log.info("devchain: %d mempool transaction(s) expired", len(removed))
    return MempoolChange(removed=tuple(removed))


def invalidate(
    state: ChainState, depth: int, replacements: list[Tx], now: float
) -> MempoolChange:
    """Disconnect the top `depth` blocks, then rebuild the mempool like Bitcoin Core after a
    reorg: the disconnected blocks' transactions (oldest first), then the old mempool, each
    kept only if it is still valid on the shorter chain (consensus, no fee policy: Core
    bypasses fee limits for them). Coinbases are gone. `replacements` then go in as forced
    spends, so a disconnected transaction a replacement double-spends is dropped, with its
    descendants, instead of coming back. If a replacement is refused, the blocks are connected
    again and the old mempool restored before the error propagates.
    """
    if not 1 <= depth <= state.height:
        raise MempoolError(f"cannot invalidate {depth} block(s) at height {state.height}")
    old_mempool = [(r.tx, r.entry_height, r.entry_time) for r in state.mempool.values()]
    state.remove_from_mempool(list(state.mempool))
    blocks = [state.disconnect_tip() for _ in range(depth)]
    back_height = state.height
    candidates = [(tx, back_height, now) for b in reversed(blocks) for tx in b.txs[1:]]
    from_blocks = {tx.txid for b in blocks for tx in b.txs[1:]}
    dropped = _readmit(state, candidates + old_mempool)
    added: list[Tx] = []
    try:
        for tx in replacements:
            change = admit(state, tx, judge_forced(state, tx), now)
            dropped.extend(change.removed)
            added.append(tx)
    except TxRejected:
        state.remove_from_mempool(list(state.mempool))
        for block in reversed(blocks):
            state.connect_block(block)
        _readmit(state, old_mempool)
        raise
    returned = tuple(t for t in state.mempool if t in from_blocks)
    return MempoolChange(
        added=tuple(added), removed=tuple(dict.fromkeys(dropped)), disconnected=tuple(blocks),
        returned=returned,
    )


def _readmit(state: ChainState, txs: list[tuple[Tx, int, float | None]]) -> list[bytes]:
    """Put these (transaction, entry height, entry time) back in order; returns the refused."""
    dropped = []
    for tx, entry_height, entry_time in txs:
        try:
            fee = check_transaction(state, tx)
        except TxRejected as exc:
            log.info("devchain: %s does not return to the mempool: %s", tx.txid_hex, exc)
            dropped.append(tx.txid)
            continue
        state.add_to_mempool(tx, fee, entry_time, entry_height)
    return dropped
