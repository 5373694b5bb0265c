"""The devchain's optional relay policy, after Bitcoin Core's defaults: minimum relay fee, dust,
replacement of unconfirmed spends (BIP125 rules as Core 28 applies them, full RBF by default)
and mempool expiry. Pure: reads the chain state, never changes it (mempool.py applies verdicts).

Not modelled: other standardness rules (script types, sizes), package relay, ephemeral dust,
TRUC (v3) transactions, the dynamic mempool minimum fee and ancestor/descendant limits.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from escrow.devchain.chain import ChainState
from escrow.devchain.primitives import Tx, TxOut, hash_hex, ser_varint
from escrow.devchain.rules import Checked, TxRejected

log = logging.getLogger(__name__)

BIP125_MAX_SEQUENCE = 0xFFFFFFFD  # an input with nSequence at most this signals replaceability


class PolicyRejected(TxRejected):
    """Valid by consensus but refused by the relay policy; `reason` is Bitcoin Core's word
    ("min relay fee not met", "dust", "insufficient fee", "txn-mempool-conflict", ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}, {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """Bitcoin Core's relay defaults in sat/vB; `expiry_*` None never expires."""

    min_relay_feerate: float = 1.0  # -minrelaytxfee
    incremental_feerate: float = 1.0  # -incrementalrelayfee: what a replacement adds, per vB
    dust_feerate: float = 3.0  # -dustrelayfee
    full_rbf: bool = True  # False: a replaced transaction must signal BIP125
    max_replacements: int = 100  # transactions one replacement may evict
    expiry_blocks: int | None = None  # evict after this many blocks left it unmined
    expiry_seconds: float | None = 336 * 3600.0  # -mempoolexpiry

    def __post_init__(self) -> None:
        rates = (self.min_relay_feerate, self.incremental_feerate, self.dust_feerate)
        if any(not 0 <= r <= 1_000_000 for r in rates):
            raise ValueError("relay feerates must be between 0 and 1e6 sat/vB")
        if self.max_replacements < 1:
            raise ValueError("max_replacements must be at least 1")
        if self.expiry_blocks is not None and self.expiry_blocks < 1:
            raise ValueError("expiry_blocks must be at least 1")
        if self.expiry_seconds is not None and self.expiry_seconds <= 0:
            raise ValueError("expiry_seconds must be positive")


@dataclass(frozen=True, slots=True)
class Admission:
    """What accepting a transaction does: its fee, and the mempool txids it evicts
    (conflicts and their descendants, parents first)."""

    fee: int
    evicts: tuple[bytes, ...] = ()


def fee_for(feerate: float, vsize: int) -> int:
    """Core's CFeeRate::GetFee: the fee for `vsize` vbytes, rounded up."""
    return math.ceil(feerate * vsize - 1e-9)


def dust_threshold(out: TxOut, dust_feerate: float) -> int:
    """Core's GetDustThreshold: the fee to spend this output at the dust feerate (0 for
    OP_RETURN); an output paying less is dust. P2WPKH 294, P2WSH/P2TR 330, P2PKH 546 sat."""
    spk = out.script_pubkey
    if spk[:1] == b"\x6a":
        return 0
    size = 8 + len(ser_varint(len(spk))) + len(spk)
    witness_program = 4 <= len(spk) <= 42 and (spk[0] == 0 or 0x51 <= spk[0] <= 0x60) and (
        spk[1] + 2 == len(spk)
    )
    # the input that spends it: outpoint, sequence, script length and a ~107-byte scriptSig,
    # whose witness counts a quarter
    size += 32 + 4 + 1 + (107 // 4 if witness_program else 107) + 4
    return fee_for(dust_feerate, size)


def check_policy(
    state: ChainState, tx: Tx, checked: Checked, policy: RelayPolicy
) -> Admission:
    """Judge a consensus-valid `tx` under `policy`: dust, then the minimum relay fee, then, if
    it spends what the mempool already spends, the replacement rules. Reads `state` only."""
    for n, out in enumerate(tx.outputs):
        threshold = dust_threshold(out, policy.dust_feerate)
        if out.value < threshold:
            raise PolicyRejected("dust", f"output {n} pays {out.value} sat, below {threshold}")
    required = fee_for(policy.min_relay_feerate, tx.vsize)
    if checked.fee < required:
        raise PolicyRejected("min relay fee not met", f"{checked.fee} < {required}")
    if not checked.conflicts:
        return Admission(checked.fee)
    return Admission(checked.fee, _check_replacement(state, tx, checked, policy))


def _signals(tx: Tx) -> bool:
    return any(txin.sequence <= BIP125_MAX_SEQUENCE for txin in tx.inputs)


def _check_replacement(
    state: ChainState, tx: Tx, checked: Checked, policy: RelayPolicy
) -> tuple[bytes, ...]:
    """BIP125 as Core checks it (full RBF unless told otherwise); returns what it evicts."""
    txid = hash_hex(tx.txid)
    conflicts = [state.mempool[c] for c in sorted(checked.conflicts)]
    if not policy.full_rbf and not any(_signals(c.tx) for c in conflicts):
        raise PolicyRejected("txn-mempool-conflict", "the replaced transaction does not signal")
    evicts = state.mempool_descendants(checked.conflicts)
    if len(evicts) > policy.max_replacements:
        raise PolicyRejected(
            "too many potential replacements",
            f"rejecting replacement {txid}; too many potential replacements "
            f"({len(evicts)} > {policy.max_replacements})",
        )
    gone = set(evicts)
    for txin in tx.inputs:
        if txin.prevout.txid in gone:
            raise PolicyRejected(
                "bad-txns-spends-conflicting-tx",
                f"{txid} spends conflicting transaction {hash_hex(txin.prevout.txid)}",
            )
    # rule 2: no unconfirmed input that none of the replaced transactions had
    parents = {txin.prevout.txid for c in conflicts for txin in c.tx.inputs}
    for n, txin in enumerate(tx.inputs):
        if txin.prevout.txid in state.mempool and txin.prevout.txid not in parents:
            raise PolicyRejected(
                "replacement-adds-unconfirmed", f"replacement {txid} adds unconfirmed input {n}"
            )
    # rule 6: a higher feerate than each transaction it directly replaces
    vsize = tx.vsize
    for c in conflicts:
        if checked.fee * c.tx.vsize <= c.fee * vsize:
            raise PolicyRejected(
                "insufficient fee",
                f"rejecting replacement {txid}; new feerate {checked.fee / vsize:.2f} <= old "
                f"feerate {c.fee / c.tx.vsize:.2f} sat/vB",
            )
    # rules 3 and 4: pays at least what it evicts, plus its own relay at the incremental rate
    evicted_fees = sum(state.mempool[t].fee for t in evicts)
    if checked.fee < evicted_fees:
        raise PolicyRejected(
            "insufficient fee",
            f"rejecting replacement {txid}, less fees than conflicting txs; "
            f"{checked.fee} < {evicted_fees}",
        )
    relay = fee_for(policy.incremental_feerate, vsize)
    if checked.fee - evicted_fees < relay:
        raise PolicyRejected(
            "insufficient fee",
            f"rejecting replacement {txid}, not enough additional fees to relay; "
            f"{checked.fee - evicted_fees} < {relay}",
        )
    return tuple(evicts)


def expired(state: ChainState, policy: RelayPolicy, now: float) -> list[bytes]:
    """Mempool txids past the expiry (by blocks left unmined, or by age), oldest first."""
    out = []
    for txid, record in state.mempool.items():
        by_blocks = policy.expiry_blocks is not None and (
            state.height - record.entry_height >= policy.expiry_blocks
        )
        by_age = policy.expiry_seconds is not None and record.entry_time is not None and (
            now - record.entry_time >= policy.expiry_seconds
        )
        if by_blocks or by_age:
            out.append(txid)
    return out
