"""Block assembly for the devchain: pick mempool transactions, build the coinbase (BIP34 height,
subsidy + fees, BIP141 witness commitment), grind the nonce against regtest's trivial target,
and have Bitcoin Core's context-free block check (pbk) confirm the block is well formed.

Transactions are picked like Core's BlockAssembler: by ancestor package feerate, so a child
paying for its parent (CPFP) lifts the parent. By default every package is taken (the mempool
is small); a `min_feerate` leaves packages paying less for a later block.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import replace

import pbk

from escrow.devchain.addresses import push_data, push_int
from escrow.devchain.chain import ChainState, block_subsidy
from escrow.devchain.primitives import (
    NULL_HASH,
    NULL_INDEX,
    REGTEST_BITS,
    WITNESS_COMMITMENT_HEADER,
    Block,
    BlockHeader,
    OutPoint,
    Tx,
    TxIn,
    TxOut,
    bits_to_target,
    merkle_root,
    sha256d,
    witness_merkle_root,
)

log = logging.getLogger(__name__)

BLOCK_VERSION = 0x20000000
MAX_BLOCK_WEIGHT = 4_000_000
COINBASE_RESERVE = 8_000  # weight kept free for the header and the coinbase
COINBASE_TAG = b"/p2pmarket-devchain/"

_consensus_params: pbk.ConsensusParams | None = None
_chain_params: pbk.ChainParameters | None = None


def _params() -> pbk.ConsensusParams:
    global _consensus_params, _chain_params
    if _consensus_params is None:
        # the view borrows from the ChainParameters object: keep both alive
        _chain_params = pbk.ChainParameters(pbk.ChainType.REGTEST)
        _consensus_params = _chain_params.consensus_params
    return _consensus_params


class BlockInvalid(RuntimeError):
    """A block this module built fails Bitcoin Core's context-free check: a devchain bug."""


def select_transactions(state: ChainState, min_feerate: float = 0.0) -> list[Tx]:
    """Mempool transactions for one block, parents first: repeatedly the package (a
    transaction and its unpicked mempool ancestors) with the highest feerate, while that
    feerate is at least `min_feerate` sat/vB and the block has room. Ties keep arrival order."""
    ancestors = {txid: state.mempool_ancestors(txid) for txid in state.mempool}
    picked: set[bytes] = set()
    skipped: set[bytes] = set()
    chosen: list[Tx] = []
    weight = COINBASE_RESERVE
    while True:
        best: tuple[int, int, int, list[bytes]] | None = None  # fee, vsize, weight, package
        for txid, package_all in ancestors.items():
            if txid in picked or txid in skipped:
                continue
            package = [t for t in package_all if t not in picked]
            if any(t in skipped for t in package):
                continue
            fee = sum(state.mempool[t].fee for t in package)
            vsize = sum(state.mempool[t].tx.vsize for t in package)
            if best is None or fee * best[1] > best[0] * vsize:
                pkg_weight = sum(state.mempool[t].tx.weight for t in package)
                best = (fee, vsize, pkg_weight, package)
        if best is None or best[0] < min_feerate * best[1]:
            break
        fee, vsize, pkg_weight, package = best
        if weight + pkg_weight > MAX_BLOCK_WEIGHT:
            skipped.add(package[-1])  # the package's own tx: its ancestors may still fit
            continue
        chosen.extend(state.mempool[t].tx for t in package)
        picked.update(package)
        weight += pkg_weight
    return chosen


def make_coinbase(height: int, value: int, script_pubkey: bytes, txs: list[Tx]) -> Tx:
    outputs = [TxOut(value, script_pubkey)]
    witness: tuple[bytes, ...] = ()
    if any(tx.has_witness for tx in txs):
        reserved = NULL_HASH
        # the coinbase's own wtxid counts as zero, so its witness cannot change the root
        root = witness_merkle_root([Tx(2, (), ())] + txs)
        outputs.append(TxOut(0, WITNESS_COMMITMENT_HEADER + sha256d(root + reserved)))
        witness = (reserved,)
    script_sig = push_int(height) + push_data(COINBASE_TAG)
    coinbase_in = TxIn(OutPoint(NULL_HASH, NULL_INDEX), script_sig, 0xFFFFFFFF, witness)
    return Tx(2, (coinbase_in,), tuple(outputs), 0)


def grind(header: BlockHeader) -> BlockHeader:
    """The first nonce meeting the target (about two tries at regtest difficulty)."""
    target = bits_to_target(header.bits)
    prefix = header.serialize()[:76]
    for nonce in range(1 << 32):
        digest = hashlib.sha256(hashlib.sha256(prefix + struct.pack("<I", nonce)).digest())
        if int.from_bytes(digest.digest(), "little") <= target:
            return replace(header, nonce=nonce)
    raise BlockInvalid("no nonce meets the target")  # pragma: no cover - needs a real target


def build_block(
    state: ChainState, script_pubkey: bytes, now: int, min_feerate: float = 0.0
) -> Block:
    """The next block on the tip paying subsidy + fees to `script_pubkey`, with the mempool's
    packages paying at least `min_feerate` sat/vB.

    Reads `state` only (safe in a worker thread while nothing mutates it).
    """
    height = state.height + 1
    txs = select_transactions(state, min_feerate)
    fees = sum(state.txs[tx.txid].fee for tx in txs)
    coinbase = make_coinbase(height, block_subsidy(height) + fees, script_pubkey, txs)
    all_txs = [coinbase, *txs]
    # a block's time must exceed the median time past; fast mining may run ahead of the clock
    time = max(now, state.tip.mediantime + 1)
    header = BlockHeader(
        BLOCK_VERSION, state.tip.hash, merkle_root([tx.txid for tx in all_txs]), time,
        REGTEST_BITS, 0,
    )
    block = Block(grind(header), tuple(all_txs))
    check_block(block)
    return block


def check_block(block: Block) -> None:
    """Bitcoin Core's context-free block checks: PoW, merkle root, coinbase, sizes, txs."""
    checked = pbk.Block(block.serialize())
    if bytes(checked.block_hash) != block.hash:
        raise BlockInvalid("consensus library computes a different block hash")
    state = checked.check(_params(), pbk.BlockCheckFlags.ALL)
    if state.validation_mode != pbk.ValidationMode.VALID:
        raise BlockInvalid(
            f"block fails the consensus check: {state.validation_mode.name} "
            f"{state.block_validation_result.name}"
        )
