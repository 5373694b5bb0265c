"""Which transactions the devchain accepts into its mempool: Bitcoin's context-free checks, the
chain rules against the tip (unspent inputs, coinbase maturity, nLockTime, BIP68 relative locks,
value) and every input's scripts checked by Bitcoin Core's consensus library (pbk, flags ALL).

Relay policy (minimum relay fee, dust, replacement) lives in policy.py and applies only when the
devchain runs with one: here a zero-fee transaction is valid, and `check_transaction` refuses a
spend that conflicts with the mempool. `check_spend` reports such conflicts instead, for a
replacement to weigh. Reasons start with Bitcoin Core's reject reason where Core has one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pbk

from escrow.devchain.addresses import script_type
from escrow.devchain.chain import COINBASE_MATURITY, ChainState
from escrow.devchain.primitives import MAX_MONEY, SEQUENCE_FINAL, Tx, TxOut, hash_hex

log = logging.getLogger(__name__)

MAX_TX_WEIGHT = 400_000  # Bitcoin Core's standard limit; a devchain block holds several
LOCKTIME_THRESHOLD = 500_000_000
SEQ_DISABLE_FLAG = 1 << 31
SEQ_TYPE_FLAG = 1 << 22
SEQ_MASK = 0x0000FFFF
SEQ_GRANULARITY = 9


class TxRejected(Exception):
    """The transaction breaks a rule; the message is the reason given to the submitter."""


@dataclass(frozen=True, slots=True)
class Checked:
    """A transaction valid on top of the tip, once its mempool conflicts are gone."""

    fee: int
    conflicts: frozenset[bytes]  # mempool txids spending one of its inputs


def check_transaction(state: ChainState, tx: Tx) -> int:
    """Validate `tx` for the mempool on top of the current tip; returns its fee in sats.
    A spend that conflicts with a mempool transaction is refused.

    Reads `state` only, so it may run in a worker thread while nothing mutates the state.
    """
    checked = check_spend(state, tx)
    if checked.conflicts:
        point, spender = next(
            (txin.prevout, spend.txid) for txin in tx.inputs
            if (spend := state.spent_by.get(txin.prevout)) is not None
        )
        raise TxRejected(
            f"txn-mempool-conflict: double spend of {point} (already spent by "
            f"{hash_hex(spender)} in the mempool)"
        )
    return checked.fee


def check_spend(state: ChainState, tx: Tx) -> Checked:
    """Consensus checks of `tx` on top of the tip, where an input a mempool transaction
    already spends is a conflict to report, not an error. Reads `state` only."""
    _check_context_free(tx)
    spent, conflicts = _check_inputs(state, tx)
    value_in = sum(out.value for out in spent)
    value_out = sum(out.value for out in tx.outputs)
    if value_in < value_out:
        raise TxRejected(
            f"bad-txns-in-belowout: outputs ({value_out} sat) exceed inputs ({value_in} sat)"
        )
    _check_locktime(state, tx)
    _check_sequence_locks(state, tx)
    _check_scripts(tx, spent)
    return Checked(value_in - value_out, frozenset(conflicts))


def _check_context_free(tx: Tx) -> None:
    if not tx.inputs:
        raise TxRejected("transaction has no inputs")
    if not tx.outputs:
        raise TxRejected("transaction has no outputs")
    if tx.weight > MAX_TX_WEIGHT:
        raise TxRejected(f"transaction weight {tx.weight} exceeds {MAX_TX_WEIGHT}")
    total = 0
    for n, out in enumerate(tx.outputs):
        if not 0 <= out.value <= MAX_MONEY:
            raise TxRejected(f"output {n}: value {out.value} out of range")
        total += out.value
    if total > MAX_MONEY:
        raise TxRejected("total output value out of range")
    if tx.is_coinbase or any(txin.prevout.is_null for txin in tx.inputs):
        raise TxRejected("a coinbase transaction cannot be submitted")
    points = [txin.prevout for txin in tx.inputs]
    if len(set(points)) != len(points):
        raise TxRejected("transaction spends the same output twice")


def _check_inputs(state: ChainState, tx: Tx) -> tuple[list[TxOut], set[bytes]]:
    spent: list[TxOut] = []
    conflicts: set[bytes] = set()
    next_height = state.height + 1
    for n, txin in enumerate(tx.inputs):
        point = txin.prevout
        spender = state.spent_by.get(point)
        if spender is not None:
            if spender.txid in state.mempool:
                conflicts.add(spender.txid)
            else:
                raise TxRejected(
                    f"bad-txns-inputs-missingorspent: double spend of {point} (already spent "
                    f"by {hash_hex(spender.txid)} in the chain)"
                )
        coin = state.coin(point)
        if coin is None:
            if state.output(point) is not None:
                raise TxRejected(
                    f"bad-txns-inputs-missingorspent: input {n}: output {point} is not spendable"
                )
            raise TxRejected(
                f"bad-txns-inputs-missingorspent: input {n}: missing or unknown output {point}"
            )
        if coin.coinbase and coin.height is not None:
            depth = next_height - coin.height
            if depth < COINBASE_MATURITY:
                raise TxRejected(
                    f"input {n}: premature spend of coinbase output {point}: "
                    f"{state.confirmations(coin.height)} confirmations, a spend can be mined "
                    f"only {COINBASE_MATURITY} blocks after it (at height "
                    f"{coin.height + COINBASE_MATURITY})"
                )
        spent.append(coin.out)
    return spent, conflicts


def _check_locktime(state: ChainState, tx: Tx) -> None:
    """IsFinalTx for the next block: height tip+1, time = median time past of the tip (BIP113)."""
    if tx.locktime == 0:
        return
    height, mtp = state.height + 1, state.tip.mediantime
    is_height = tx.locktime < LOCKTIME_THRESHOLD
    if tx.locktime < (height if is_height else mtp):
        return
    if all(txin.sequence == SEQUENCE_FINAL for txin in tx.inputs):
        return
    unit = f"height {height}" if is_height else f"median time past {mtp}"
    raise TxRejected(f"non-final transaction: nLockTime {tx.locktime} not reached at {unit}")


def _check_sequence_locks(state: ChainState, tx: Tx) -> None:
    """BIP68 relative locks against the next block (CalculateSequenceLocks + Evaluate...)."""
    if (tx.version & 0xFFFFFFFF) < 2:
        return
    next_height, tip_mtp = state.height + 1, state.tip.mediantime
    for n, txin in enumerate(tx.inputs):
        seq = txin.sequence
        if seq & SEQ_DISABLE_FLAG:
            continue
        coin = state.coin(txin.prevout)
        coin_height = next_height if coin is None or coin.height is None else coin.height
        value = seq & SEQ_MASK
        if seq & SEQ_TYPE_FLAG:
            coin_time = state.mediantime_at(coin_height - 1)
            min_time = coin_time + (value << SEQ_GRANULARITY) - 1
            if min_time >= tip_mtp:
                raise TxRejected(
                    f"input {n}: relative time lock of {value << SEQ_GRANULARITY} s on "
                    f"{txin.prevout} not reached (median time past {tip_mtp}, needs > {min_time})"
                )
        else:
            min_height = coin_height + value - 1
            if min_height >= next_height:
                depth = 0 if coin is None or coin.height is None else next_height - coin_height
                raise TxRejected(
                    f"input {n}: relative lock of {value} blocks on {txin.prevout} not reached "
                    f"(output would be {depth} blocks deep in the next block, needs {value})"
                )


def _check_scripts(tx: Tx, spent: list[TxOut]) -> None:
    try:
        ptx = pbk.Transaction(tx.raw)
    except Exception as exc:  # the kernel refuses bytes our parser took: say so plainly
        raise TxRejected(f"consensus library cannot parse the transaction: {exc}") from exc
    scripts = [pbk.ScriptPubkey(out.script_pubkey) for out in spent]
    outputs = [pbk.TransactionOutput(s, out.value) for s, out in zip(scripts, spent, strict=True)]
    precomputed = pbk.script.PrecomputedTransactionData(ptx, outputs)
    flags = pbk.ScriptVerificationFlags.ALL
    for n, (script, out) in enumerate(zip(scripts, spent, strict=True)):
        try:
            ok = script.verify(out.value, ptx, precomputed, n, flags)
        except pbk.ScriptVerifyException as exc:
            raise TxRejected(f"input {n}: script verification failed: {exc}") from exc
        if not ok:
            raise TxRejected(
                f"input {n}: script verification failed: Bitcoin Core's consensus check "
                f"(flags ALL) rejects the spend of {tx.inputs[n].prevout} "
                f"({script_type(out.script_pubkey)}, {out.value} sat)"
            )
