"""The devchain's in-memory chain state: blocks, transaction index, UTXO set, spends, mempool and
per-script history. Sans-IO; mutated only by `connect_block`, `disconnect_tip`,
`add_to_mempool` and `remove_from_mempool`.

Every transaction in the chain or the mempool is indexed, so spent outputs can still be shown as
an input's prevout. A transaction that leaves both (evicted, replaced, or in a disconnected block
and not taken back) is forgotten: Esplora then answers 404 for it, like electrs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from escrow.devchain.primitives import Block, OutPoint, Tx, TxOut, regtest_genesis, sha256

log = logging.getLogger(__name__)

COINBASE_MATURITY = 100
HALVING_INTERVAL = 150  # regtest
MTP_SPAN = 11


@dataclass(frozen=True, slots=True)
class BlockEntry:
    height: int
    block: Block
    mediantime: int  # median time past including this block

    @property
    def hash(self) -> bytes:
        return self.block.hash

    @property
    def time(self) -> int:
        return self.block.header.time


@dataclass(slots=True)
class TxRecord:
    tx: Tx
    fee: int
    height: int | None = None  # None while in the mempool
    index: int = 0  # position in its block
    seq: int = 0  # arrival order, for mempool ordering
    entry_height: int = 0  # tip height when it entered the mempool (for expiry)
    entry_time: float | None = None  # clock when it entered the mempool; None: never ages


@dataclass(frozen=True, slots=True)
class Coin:
    out: TxOut
    height: int | None  # None: created by a mempool transaction
    coinbase: bool


@dataclass(frozen=True, slots=True)
class Spend:
    txid: bytes
    vin: int


def block_subsidy(height: int) -> int:
    halvings = height // HALVING_INTERVAL
    return 0 if halvings >= 64 else (50 * 100_000_000) >> halvings


def _unspendable(out: TxOut) -> bool:
    return out.script_pubkey[:1] == b"\x6a"


class ChainState:
    """The chain from genesis to tip plus the mempool, with the indexes Esplora queries need."""

    def __init__(self) -> None:
        self.blocks: list[BlockEntry] = []
        self.by_hash: dict[bytes, int] = {}
        self.txs: dict[bytes, TxRecord] = {}
        self.utxo: dict[OutPoint, Coin] = {}  # confirmed, not spent by a confirmed tx
        self.spent_by: dict[OutPoint, Spend] = {}  # by confirmed and by mempool txs
        self.mempool: dict[bytes, TxRecord] = {}  # insertion order = dependency order
        self.history: dict[bytes, list[bytes]] = {}  # sha256(spk) -> txids, arrival order
        self._seq = 0
        self.connect_block(regtest_genesis())

    # -- reads --------------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return len(self.blocks) - 1

    @property
    def tip(self) -> BlockEntry:
        return self.blocks[-1]

    def entry(self, block_hash: bytes) -> BlockEntry | None:
        height = self.by_hash.get(block_hash)
        return None if height is None else self.blocks[height]

    def output(self, outpoint: OutPoint) -> TxOut | None:
        """The output at this outpoint if the transaction is known (spent or not)."""
        record = self.txs.get(outpoint.txid)
        if record is None or outpoint.vout >= len(record.tx.outputs):
            return None
        return record.tx.outputs[outpoint.vout]

    def coin(self, outpoint: OutPoint) -> Coin | None:
        """A confirmed or mempool output that no confirmed transaction has spent."""
        coin = self.utxo.get(outpoint)
        if coin is not None:
            return coin
        record = self.mempool.get(outpoint.txid)
        if record is not None and outpoint.vout < len(record.tx.outputs):
            out = record.tx.outputs[outpoint.vout]
            return None if _unspendable(out) else Coin(out, None, False)
        return None

    def confirmations(self, height: int | None) -> int:
        return 0 if height is None else self.height - height + 1

    def spendable(self, spk: bytes) -> Iterator[tuple[OutPoint, Coin]]:
        """Unspent outputs (confirmed and mempool) paying to this scriptPubKey."""
        seen: set[bytes] = set()
        for txid in self.history.get(sha256(spk), ()):
            if txid in seen:
                continue
            seen.add(txid)
            for vout, out in enumerate(self.txs[txid].tx.outputs):
                point = OutPoint(txid, vout)
                if out.script_pubkey == spk and point not in self.spent_by:
                    coin = self.coin(point)
                    if coin is not None:
                        yield point, coin

    def balance(self, spk: bytes, include_mempool: bool = True) -> int:
        return sum(
            coin.out.value
            for point, coin in self.spendable(spk)
            if coin.height is not None or include_mempool
        )

    def mediantime_at(self, height: int) -> int:
        return self.blocks[max(height, 0)].mediantime

    def scripthash_txids(self, script_hash: bytes) -> tuple[list[bytes], list[bytes]]:
        """(mempool txids newest first, confirmed txids newest first) touching this script."""
        txids = dict.fromkeys(self.history.get(script_hash, ()))
        mempool = [t for t in txids if self.txs[t].height is None]
        confirmed = [t for t in txids if self.txs[t].height is not None]
        mempool.sort(key=lambda t: self.txs[t].seq, reverse=True)
        confirmed.sort(key=lambda t: (self.txs[t].height or 0, self.txs[t].index), reverse=True)
        return mempool, confirmed

    def prevouts(self, tx: Tx) -> list[TxOut | None]:
        return [
            None if tx.is_coinbase else self.output(txin.prevout) for txin in tx.inputs
        ]

    def mempool_descendants(self, txids: Iterable[bytes]) -> list[bytes]:
        """These mempool transactions and every mempool transaction spending their outputs,
        directly or not, parents first (mempool order)."""
        found: set[bytes] = set()
        todo = [t for t in txids if t in self.mempool]
        while todo:
            txid = todo.pop()
            if txid in found:
                continue
            found.add(txid)
            for vout in range(len(self.mempool[txid].tx.outputs)):
                spend = self.spent_by.get(OutPoint(txid, vout))
                if spend is not None and spend.txid in self.mempool:
                    todo.append(spend.txid)
        return [t for t in self.mempool if t in found]

    def mempool_ancestors(self, txid: bytes) -> list[bytes]:
        """The unconfirmed transactions `txid` spends from, directly or not, and itself;
        parents first (mempool order)."""
        found: set[bytes] = set()
        todo = [txid]
        while todo:
            current = todo.pop()
            if current in found or current not in self.mempool:
                continue
            found.add(current)
            todo.extend(txin.prevout.txid for txin in self.mempool[current].tx.inputs)
        return [t for t in self.mempool if t in found]

    # -- writes -------------------------------------------------------------------------------

    def add_to_mempool(
        self, tx: Tx, fee: int, now: float | None = None, entry_height: int | None = None
    ) -> None:
        """Index an already validated transaction as unconfirmed."""
        self._seq += 1
        height = self.height if entry_height is None else entry_height
        record = TxRecord(tx, fee, None, 0, self._seq, height, now)
        self.txs[tx.txid] = record
        self.mempool[tx.txid] = record
        for vin, txin in enumerate(tx.inputs):
            self.spent_by[txin.prevout] = Spend(tx.txid, vin)
        self._index_history(tx)

    def connect_block(self, block: Block) -> BlockEntry:
        """Append a block whose validity the caller has established (mined here or reloaded)."""
        height = len(self.blocks)
        if height and block.header.prev_hash != self.tip.hash:
            raise ValueError(f"block at height {height} does not extend the tip")
        times = [b.time for b in self.blocks[-(MTP_SPAN - 1) :]] + [block.header.time]
        # Bitcoin Core's GetMedianTimePast: the upper median for an even count
        entry = BlockEntry(height, block, sorted(times)[len(times) // 2])
        for index, tx in enumerate(block.txs):
            fee = 0
            if not tx.is_coinbase:
                fee = self._spend_inputs(tx)
            for vout, out in enumerate(tx.outputs):
                # the genesis coinbase is unspendable by consensus, like OP_RETURN outputs
                if height and not _unspendable(out):
                    self.utxo[OutPoint(tx.txid, vout)] = Coin(out, height, tx.is_coinbase)
            known = self.mempool.pop(tx.txid, None)
            if known is None:
                self._seq += 1
                self.txs[tx.txid] = TxRecord(tx, fee, height, index, self._seq)
                self._index_history(tx)
            else:
                known.height, known.index = height, index
        self.blocks.append(entry)
        self.by_hash[block.hash] = height
        return entry

    def remove_from_mempool(self, txids: Iterable[bytes]) -> list[bytes]:
        """Drop these mempool transactions and their descendants (children first, so each
        one's parents are still indexed when it is forgotten); returns them parents first."""
        gone = self.mempool_descendants(txids)
        for txid in reversed(gone):
            self._forget(txid)
        return gone

    def disconnect_tip(self) -> Block:
        """Undo the tip block: its outputs leave the UTXO set, the coins it spent come back, and
        all its transactions are forgotten (the caller decides which return to the mempool).

        The mempool must be empty: its transactions may spend this block's outputs.
        """
        if self.height == 0:
            raise ValueError("the genesis block cannot be disconnected")
        if self.mempool:
            raise ValueError("empty the mempool before disconnecting a block")
        entry = self.blocks.pop()
        del self.by_hash[entry.hash]
        for tx in reversed(entry.block.txs):  # spenders before the outputs they spend
            for vout in range(len(tx.outputs)):
                self.utxo.pop(OutPoint(tx.txid, vout), None)
            if not tx.is_coinbase:
                for txin in tx.inputs:
                    parent = self.txs[txin.prevout.txid]
                    out = parent.tx.outputs[txin.prevout.vout]
                    self.utxo[txin.prevout] = Coin(out, parent.height, parent.tx.is_coinbase)
            self._forget(tx.txid)
        return entry.block

    def _forget(self, txid: bytes) -> None:
        record = self.txs[txid]
        tx = record.tx
        scripts = {out.script_pubkey for out in tx.outputs}
        if not tx.is_coinbase:
            scripts.update(out.script_pubkey for out in self.prevouts(tx) if out is not None)
            for txin in tx.inputs:
                spend = self.spent_by.get(txin.prevout)
                if spend is not None and spend.txid == txid:
                    del self.spent_by[txin.prevout]
        for spk in scripts:
            key = sha256(spk)
            remaining = [t for t in self.history.get(key, ()) if t != txid]
            if remaining:
                self.history[key] = remaining
            else:
                self.history.pop(key, None)
        del self.txs[txid]
        self.mempool.pop(txid, None)

    def _spend_inputs(self, tx: Tx) -> int:
        total = 0
        for vin, txin in enumerate(tx.inputs):
            out = self.output(txin.prevout)
            if out is None:
                raise ValueError(f"block spends unknown output {txin.prevout}")
            total += out.value
            self.utxo.pop(txin.prevout, None)
            self.spent_by[txin.prevout] = Spend(tx.txid, vin)
        return total - sum(out.value for out in tx.outputs)

    def _index_history(self, tx: Tx) -> None:
        scripts = {out.script_pubkey for out in tx.outputs}
        if not tx.is_coinbase:
            scripts.update(
                out.script_pubkey for out in self.prevouts(tx) if out is not None
            )
        for spk in scripts:
            self.history.setdefault(sha256(spk), []).append(tx.txid)
