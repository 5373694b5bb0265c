"""Esplora's JSON shapes for the devchain's blocks, transactions, outputs and script statistics,
as Blockstream's Esplora serves them and BDK's esplora client parses them.

Deviation: the *_asm fields are omitted (no client we serve reads them).
"""

from __future__ import annotations

from typing import Any

from escrow.devchain.addresses import script_to_address, script_type
from escrow.devchain.chain import BlockEntry, ChainState, TxRecord
from escrow.devchain.primitives import OutPoint, TxOut, difficulty, hash_hex, sha256d

Json = dict[str, Any]


def output_json(out: TxOut, network: str) -> Json:
    item: Json = {
        "scriptpubkey": out.script_pubkey.hex(),
        "scriptpubkey_type": script_type(out.script_pubkey),
        "value": out.value,
    }
    address = script_to_address(out.script_pubkey, network)
    if address is not None:
        item["scriptpubkey_address"] = address
    return item


def status_json(state: ChainState, height: int | None) -> Json:
    if height is None:
        return {"confirmed": False}
    entry = state.blocks[height]
    return {
        "confirmed": True,
        "block_height": height,
        "block_hash": hash_hex(entry.hash),
        "block_time": entry.time,
    }


def tx_json(state: ChainState, record: TxRecord, network: str) -> Json:
    tx = record.tx
    vin = []
    for txin, prev in zip(tx.inputs, state.prevouts(tx), strict=True):
        item: Json = {
            "txid": hash_hex(txin.prevout.txid),
            "vout": txin.prevout.vout,
            "prevout": None if prev is None else output_json(prev, network),
            "scriptsig": txin.script_sig.hex(),
            "is_coinbase": tx.is_coinbase,
            "sequence": txin.sequence,
        }
        if txin.witness:
            item["witness"] = [w.hex() for w in txin.witness]
        vin.append(item)
    return {
        "txid": tx.txid_hex,
        "version": tx.version,
        "locktime": tx.locktime,
        "vin": vin,
        "vout": [output_json(out, network) for out in tx.outputs],
        "size": tx.size,
        "weight": tx.weight,
        "fee": record.fee,
        "status": status_json(state, record.height),
    }


def block_json(state: ChainState, entry: BlockEntry) -> Json:
    header = entry.block.header
    return {
        "id": hash_hex(entry.hash),
        "height": entry.height,
        "version": header.version,
        "timestamp": header.time,
        "tx_count": len(entry.block.txs),
        "size": entry.block.size,
        "weight": entry.block.weight,
        "merkle_root": hash_hex(header.merkle_root),
        "previousblockhash": hash_hex(header.prev_hash) if entry.height else None,
        "mediantime": entry.mediantime,
        "nonce": header.nonce,
        "bits": header.bits,
        "difficulty": difficulty(header.bits),
    }


def outspend_json(state: ChainState, point: OutPoint) -> Json:
    spend = state.spent_by.get(point)
    if spend is None:
        return {"spent": False}
    return {
        "spent": True,
        "txid": hash_hex(spend.txid),
        "vin": spend.vin,
        "status": status_json(state, state.txs[spend.txid].height),
    }


def merkle_proof(txids: list[bytes], pos: int) -> list[str]:
    """Sibling hashes from the leaf up, in display (reversed) hex, as Esplora gives them."""
    path, level = [], list(txids)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        path.append(hash_hex(level[pos ^ 1]))
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        pos //= 2
    return path


def script_stats(state: ChainState, spk: bytes, script_hash: bytes) -> Json:
    mempool, chain = state.scripthash_txids(script_hash)
    stats = {
        "chain_stats": empty_stats(len(chain)),
        "mempool_stats": empty_stats(len(mempool)),
    }
    for txid in mempool + chain:
        record = state.txs[txid]
        bucket = stats["chain_stats" if record.height is not None else "mempool_stats"]
        for out in record.tx.outputs:
            if out.script_pubkey == spk:
                bucket["funded_txo_count"] += 1
                bucket["funded_txo_sum"] += out.value
        for prev in state.prevouts(record.tx):
            if prev is not None and prev.script_pubkey == spk:
                bucket["spent_txo_count"] += 1
                bucket["spent_txo_sum"] += prev.value
    return stats


def empty_stats(tx_count: int) -> dict[str, int]:
    return {
        "funded_txo_count": 0, "funded_txo_sum": 0, "spent_txo_count": 0, "spent_txo_sum": 0,
        "tx_count": tx_count,
    }
