"""The Esplora REST API over the devchain's state, in the JSON shapes Blockstream's Esplora serves
and BDK's esplora client parses (see github.com/Blockstream/esplora/blob/master/API.md).

Deviation: script history is not capped at 50 mempool transactions.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web

from escrow.devchain.addresses import AddressError, address_to_script
from escrow.devchain.chain import BlockEntry, ChainState, TxRecord
from escrow.devchain.json_shapes import (
    Json,
    block_json,
    empty_stats,
    merkle_proof,
    outspend_json,
    script_stats,
    status_json,
    tx_json,
)
from escrow.devchain.primitives import (
    DecodeError,
    OutPoint,
    Tx,
    hash_from_hex,
    hash_hex,
    sha256,
)
from escrow.devchain.rules import TxRejected

log = logging.getLogger(__name__)

PAGE_BLOCKS = 10
PAGE_TXS = 25
FEE_TARGETS = [*range(1, 26), 144, 504, 1008]
# blocks are mined on demand, so every target is met by the minimum relay rate or close
DEFAULT_FEE_ESTIMATES = {t: 2.0 if t <= 2 else 1.0 for t in FEE_TARGETS}


class Backend(Protocol):
    state: ChainState
    network: str

    async def submit(self, raw: bytes) -> str: ...

    def fee_estimates(self) -> dict[int, float]: ...


BACKEND = web.AppKey("devchain_backend", Backend)


# -- request helpers --------------------------------------------------------------------------


def _backend(request: web.Request) -> Backend:
    return request.app[BACKEND]


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


def _hash_param(request: web.Request, name: str) -> bytes:
    try:
        return hash_from_hex(request.match_info[name])
    except ValueError:
        raise _bad(f"Invalid hex string: {request.match_info[name]!r}") from None


def _record(request: web.Request) -> TxRecord:
    record = _backend(request).state.txs.get(_hash_param(request, "txid"))
    if record is None:
        raise web.HTTPNotFound(text="Transaction not found")
    return record


def _entry(request: web.Request) -> BlockEntry:
    entry = _backend(request).state.entry(_hash_param(request, "hash"))
    if entry is None:
        raise web.HTTPNotFound(text="Block not found")
    return entry


def _script(request: web.Request) -> tuple[bytes | None, bytes]:
    """(scriptPubKey if known from an address, sha256 script hash) of the request."""
    backend = _backend(request)
    if "address" in request.match_info:
        try:
            spk = address_to_script(request.match_info["address"], backend.network)
        except AddressError as exc:
            raise _bad(f"Invalid Bitcoin address: {exc}") from None
        return spk, sha256(spk)
    try:
        script_hash = bytes.fromhex(request.match_info["scripthash"])
    except ValueError:
        raise _bad("Invalid hex string") from None
    if len(script_hash) != 32:
        raise _bad("Invalid scripthash: expected 32 bytes")
    return None, script_hash


def _txs_response(request: web.Request, txids: list[bytes]) -> web.Response:
    backend = _backend(request)
    return web.json_response(
        [tx_json(backend.state, backend.state.txs[t], backend.network) for t in txids]
    )


# -- handlers ---------------------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.get("/blocks/tip/height")
async def tip_height(request: web.Request) -> web.Response:
    return web.Response(text=str(_backend(request).state.height))


@routes.get("/blocks/tip/hash")
async def tip_hash(request: web.Request) -> web.Response:
    return web.Response(text=hash_hex(_backend(request).state.tip.hash))


@routes.get("/blocks")
@routes.get(r"/blocks/{height:\d+}")
async def blocks(request: web.Request) -> web.Response:
    state = _backend(request).state
    start = min(int(request.match_info.get("height", state.height)), state.height)
    entries = state.blocks[max(start - PAGE_BLOCKS + 1, 0) : start + 1]
    return web.json_response([block_json(state, e) for e in reversed(entries)])


@routes.get(r"/block-height/{height:\d+}")
async def block_height(request: web.Request) -> web.Response:
    state = _backend(request).state
    height = int(request.match_info["height"])
    if height > state.height:
        raise web.HTTPNotFound(text="Block not found")
    return web.Response(text=hash_hex(state.blocks[height].hash))


@routes.get("/block/{hash}")
async def block(request: web.Request) -> web.Response:
    return web.json_response(block_json(_backend(request).state, _entry(request)))


@routes.get("/block/{hash}/status")
async def block_status(request: web.Request) -> web.Response:
    state = _backend(request).state
    entry = state.entry(_hash_param(request, "hash"))
    if entry is None:
        return web.json_response({"in_best_chain": False, "height": None, "next_best": None})
    following = entry.height + 1
    next_best = hash_hex(state.blocks[following].hash) if following <= state.height else None
    return web.json_response(
        {"in_best_chain": True, "height": entry.height, "next_best": next_best}
    )


@routes.get("/block/{hash}/header")
async def block_header(request: web.Request) -> web.Response:
    return web.Response(text=_entry(request).block.header.serialize().hex())


@routes.get("/block/{hash}/raw")
async def block_raw(request: web.Request) -> web.Response:
    raw = _entry(request).block.serialize()
    return web.Response(body=raw, content_type="application/octet-stream")


@routes.get("/block/{hash}/txids")
async def block_txids(request: web.Request) -> web.Response:
    return web.json_response([tx.txid_hex for tx in _entry(request).block.txs])


@routes.get(r"/block/{hash}/txid/{index:\d+}")
async def block_txid(request: web.Request) -> web.Response:
    txs = _entry(request).block.txs
    index = int(request.match_info["index"])
    if index >= len(txs):
        raise web.HTTPNotFound(text="Transaction not found")
    return web.Response(text=txs[index].txid_hex)


@routes.get("/block/{hash}/txs")
@routes.get(r"/block/{hash}/txs/{start:\d+}")
async def block_txs(request: web.Request) -> web.Response:
    txs = _entry(request).block.txs
    start = int(request.match_info.get("start", 0))
    if start % PAGE_TXS or (start and start >= len(txs)):
        raise _bad(f"start index must be a multiple of {PAGE_TXS} below the tx count")
    return _txs_response(request, [tx.txid for tx in txs[start : start + PAGE_TXS]])


@routes.get("/tx/{txid}")
async def tx(request: web.Request) -> web.Response:
    backend = _backend(request)
    return web.json_response(tx_json(backend.state, _record(request), backend.network))


@routes.get("/tx/{txid}/hex")
async def tx_hex(request: web.Request) -> web.Response:
    return web.Response(text=_record(request).tx.raw.hex())


@routes.get("/tx/{txid}/raw")
async def tx_raw(request: web.Request) -> web.Response:
    return web.Response(body=_record(request).tx.raw, content_type="application/octet-stream")


@routes.get("/tx/{txid}/status")
async def tx_status(request: web.Request) -> web.Response:
    # like electrs: an unknown (e.g. refused or never broadcast) txid is simply unconfirmed
    state = _backend(request).state
    record = state.txs.get(_hash_param(request, "txid"))
    return web.json_response(status_json(state, None if record is None else record.height))


@routes.get("/tx/{txid}/merkle-proof")
async def tx_merkle_proof(request: web.Request) -> web.Response:
    record = _record(request)
    if record.height is None:
        raise web.HTTPNotFound(text="Transaction not found or is unconfirmed")
    block_txs = _backend(request).state.blocks[record.height].block.txs
    proof = merkle_proof([t.txid for t in block_txs], record.index)
    return web.json_response(
        {"block_height": record.height, "merkle": proof, "pos": record.index}
    )


@routes.get(r"/tx/{txid}/outspend/{vout:\d+}")
async def tx_outspend(request: web.Request) -> web.Response:
    # like electrs: an output nobody spent, or that does not exist, is reported unspent
    point = OutPoint(_hash_param(request, "txid"), int(request.match_info["vout"]))
    return web.json_response(outspend_json(_backend(request).state, point))


@routes.get("/tx/{txid}/outspends")
async def tx_outspends(request: web.Request) -> web.Response:
    record = _record(request)
    state = _backend(request).state
    return web.json_response([
        outspend_json(state, OutPoint(record.tx.txid, n)) for n in range(len(record.tx.outputs))
    ])


@routes.post("/tx")
async def post_tx(request: web.Request) -> web.Response:
    body = (await request.text()).strip()
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise _bad("Invalid hex string: the body must be the transaction in hex") from None
    try:
        txid = await _backend(request).submit(raw)
    except TxRejected as exc:
        log.info("devchain refused a transaction: %s", exc)
        raise _bad(str(exc)) from None
    return web.Response(text=txid)


@routes.get("/fee-estimates")
async def fee_estimates(request: web.Request) -> web.Response:
    estimates = _backend(request).fee_estimates()
    return web.json_response({str(t): rate for t, rate in estimates.items()})


@routes.get("/mempool")
async def mempool(request: web.Request) -> web.Response:
    records = list(_backend(request).state.mempool.values())
    return web.json_response({
        "count": len(records),
        "vsize": sum(r.tx.vsize for r in records),
        "total_fee": sum(r.fee for r in records),
        "fee_histogram": [],
    })


@routes.get("/mempool/txids")
async def mempool_txids(request: web.Request) -> web.Response:
    return web.json_response([hash_hex(t) for t in _backend(request).state.mempool])


@routes.get("/mempool/recent")
async def mempool_recent(request: web.Request) -> web.Response:
    records = list(_backend(request).state.mempool.values())[-10:]
    return web.json_response([
        {"txid": r.tx.txid_hex, "fee": r.fee, "vsize": r.tx.vsize,
         "value": sum(o.value for o in r.tx.outputs)}
        for r in reversed(records)
    ])


# script history: the same handlers serve /scripthash/:scripthash and /address/:address
async def script_summary(request: web.Request) -> web.Response:
    spk, script_hash = _script(request)
    state = _backend(request).state
    spk = spk if spk is not None else _find_script(state, script_hash)
    body: Json = (
        script_stats(state, spk, script_hash) if spk is not None
        else {"chain_stats": empty_stats(0), "mempool_stats": empty_stats(0)}
    )
    key = "address" if "address" in request.match_info else "scripthash"
    return web.json_response({key: request.match_info[key], **body})


async def script_txs(request: web.Request) -> web.Response:
    mempool, chain = _backend(request).state.scripthash_txids(_script(request)[1])
    return _txs_response(request, mempool + chain[:PAGE_TXS])


async def script_txs_chain(request: web.Request) -> web.Response:
    _, chain = _backend(request).state.scripthash_txids(_script(request)[1])
    if "last_seen" in request.match_info:
        last_seen = _hash_param(request, "last_seen")
        # like electrs: an unknown last_seen means nothing comes after it
        chain = chain[chain.index(last_seen) + 1 :] if last_seen in chain else []
    return _txs_response(request, chain[:PAGE_TXS])


async def script_txs_mempool(request: web.Request) -> web.Response:
    mempool, _ = _backend(request).state.scripthash_txids(_script(request)[1])
    return _txs_response(request, mempool)


async def script_utxo(request: web.Request) -> web.Response:
    spk, script_hash = _script(request)
    state = _backend(request).state
    spk = spk if spk is not None else _find_script(state, script_hash)
    coins = [] if spk is None else list(state.spendable(spk))
    return web.json_response([
        {"txid": hash_hex(point.txid), "vout": point.vout,
         "status": status_json(state, coin.height), "value": coin.out.value}
        for point, coin in coins
    ])


def _find_script(state: ChainState, script_hash: bytes) -> bytes | None:
    """The scriptPubKey behind a script hash, from any transaction that paid to it."""
    for txid in state.history.get(script_hash, ()):
        for out in state.txs[txid].tx.outputs:
            if sha256(out.script_pubkey) == script_hash:
                return out.script_pubkey
    return None


for _prefix in ("/scripthash/{scripthash}", "/address/{address}"):
    routes.get(_prefix)(script_summary)
    routes.get(_prefix + "/txs")(script_txs)
    routes.get(_prefix + "/txs/chain")(script_txs_chain)
    routes.get(_prefix + "/txs/chain/{last_seen}")(script_txs_chain)
    routes.get(_prefix + "/txs/mempool")(script_txs_mempool)
    routes.get(_prefix + "/utxo")(script_utxo)


def parse_submitted(raw: bytes) -> Tx:
    """Decode a submitted transaction or raise TxRejected with the reason."""
    try:
        return Tx.parse(raw)
    except DecodeError as exc:
        raise TxRejected(f"transaction decode failed: {exc}") from None
