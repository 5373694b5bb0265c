"""The devchain's HTTP app: the Esplora API (esplora.py) and its own routes: faucet, mining, and
what tests need to stage a hostile chain (reorg, forced double spend, eviction, fee estimates).
Bodies are JSON with bounded sizes and counts; errors are problem+json.

    POST /devchain/mine        {"blocks"?, "address"?, "min_feerate"?}
    POST /devchain/faucet      {"address", "sats", "confirm"?}
    POST /devchain/invalidate  {"blocks"? | "hash"?, "replace"?: [hex], "mine"?}
    POST /devchain/replace     {"tx": hex}
    POST /devchain/evict       {"txid"}
    POST /devchain/fees        {"1": 20.0, "6": 5.0, ...}      DELETE /devchain/fees
    GET  /devchain/info
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Annotated, Any, Protocol

import msgspec
from aiohttp import web

from escrow.devchain.esplora import BACKEND, Backend
from escrow.devchain.esplora import routes as esplora_routes
from escrow.devchain.rules import MAX_TX_WEIGHT, TxRejected

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes of any request body, POST /tx included
MAX_MINE = 1000
MAX_INVALIDATE = 1000
MAX_REPLACE = 25
MAX_FEE_TARGETS = 64
MAX_FEE_TARGET = 1008
MAX_FEERATE = 1_000_000.0  # sat/vB
_MAX_TX_HEX = 2 * MAX_TX_WEIGHT  # a transaction's size is at most its weight

@dataclass(frozen=True, slots=True)
class Reorg:
    """What `Devchain.invalidate` did (hex hashes and txids)."""

    disconnected: list[str]  # block hashes, tip first
    returned: list[str]  # their transactions back in the mempool
    dropped: list[str]  # transactions in neither the chain nor the mempool any more
    replaced_by: list[str]  # the forced replacements now in the mempool (or mined)
    mined: list[str]  # new block hashes
    height: int


class Controls(Backend, Protocol):
    """What these routes ask of the chain (`server.Devchain`; a protocol, so this module does
    not import the server that imports it)."""

    async def mine(self, n: int = 1, address: str | None = None, min_feerate: float = 0.0
                   ) -> list[str]: ...
    async def faucet(self, address: str, sats: int, confirm: bool = True) -> str: ...
    async def invalidate(self, blocks: int = 1, block_hash: str | None = None,
                         replace: list[bytes] | None = None, mine: int = 0) -> Reorg: ...
    async def replace(self, raw: bytes) -> tuple[str, list[str]]: ...
    async def evict(self, txid: str) -> list[str]: ...
    def set_fee_estimates(self, estimates: dict[int, float] | None) -> None: ...
    def info(self) -> dict[str, Any]: ...


DEVCHAIN: web.AppKey[Controls] = web.AppKey("devchain")
routes = web.RouteTableDef()

TxHex = Annotated[str, msgspec.Meta(min_length=2, max_length=_MAX_TX_HEX)]
Hash = Annotated[str, msgspec.Meta(min_length=64, max_length=64)]
FeeRate = Annotated[float, msgspec.Meta(ge=0, le=MAX_FEERATE)]


class DevchainError(Exception):
    """A devchain request that cannot be served (bad address, empty faucet, unknown txid,
    a reorg deeper than the chain, ...): the caller's mistake; nothing changed."""


class MineRequest(msgspec.Struct, forbid_unknown_fields=True):
    blocks: Annotated[int, msgspec.Meta(ge=1, le=MAX_MINE)] = 1
    address: str | None = None
    min_feerate: FeeRate = 0.0  # leave packages paying less in the mempool


class FaucetRequest(msgspec.Struct, forbid_unknown_fields=True):
    address: str
    sats: Annotated[int, msgspec.Meta(ge=1, le=21_000_000 * 100_000_000)]
    confirm: bool = False


class InvalidateRequest(msgspec.Struct, forbid_unknown_fields=True):
    blocks: Annotated[int, msgspec.Meta(ge=1, le=MAX_INVALIDATE)] = 1
    hash: Hash | None = None  # this block and every block above it (instead of `blocks`)
    replace: Annotated[list[TxHex], msgspec.Meta(max_length=MAX_REPLACE)] = []
    mine: Annotated[int, msgspec.Meta(ge=0, le=MAX_MINE)] = 0


class ReplaceRequest(msgspec.Struct, forbid_unknown_fields=True):
    tx: TxHex


class EvictRequest(msgspec.Struct, forbid_unknown_fields=True):
    txid: Hash


FeeTable = Annotated[dict[str, FeeRate], msgspec.Meta(max_length=MAX_FEE_TARGETS)]


def _problem(status: int, detail: str) -> web.Response:
    return web.json_response(
        {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
         "detail": detail},
        status=status, content_type="application/problem+json",
    )


async def _decode(request: web.Request, kind: Any) -> Any:
    try:
        return msgspec.json.decode(await request.read(), type=kind)
    except msgspec.ValidationError as exc:
        raise DevchainError(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise DevchainError(f"request body is not JSON: {exc}") from None


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise DevchainError("a transaction must be given in hex") from None


@web.middleware
async def devchain_errors(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except DevchainError as exc:
        return _problem(400, str(exc))
    except TxRejected as exc:
        return _problem(400, f"transaction rejected: {exc}")
    return response


@routes.post("/devchain/mine")
async def post_mine(request: web.Request) -> web.Response:
    body: MineRequest = await _decode(request, MineRequest)
    chain = request.app[DEVCHAIN]
    hashes = await chain.mine(body.blocks, body.address, body.min_feerate)
    return web.json_response({"blocks": hashes, "height": chain.state.height})


@routes.post("/devchain/faucet")
async def post_faucet(request: web.Request) -> web.Response:
    body: FaucetRequest = await _decode(request, FaucetRequest)
    chain = request.app[DEVCHAIN]
    txid = await chain.faucet(body.address, body.sats, confirm=body.confirm)
    reply: dict[str, Any] = {"txid": txid}
    if body.confirm:
        record = chain.state.txs[bytes.fromhex(txid)[::-1]]
        reply["block_height"] = record.height
    return web.json_response(reply)


@routes.post("/devchain/invalidate")
async def post_invalidate(request: web.Request) -> web.Response:
    body: InvalidateRequest = await _decode(request, InvalidateRequest)
    reorg = await request.app[DEVCHAIN].invalidate(
        body.blocks, body.hash, [_hex(t) for t in body.replace], body.mine
    )
    return web.json_response(asdict(reorg))


@routes.post("/devchain/replace")
async def post_replace(request: web.Request) -> web.Response:
    body: ReplaceRequest = await _decode(request, ReplaceRequest)
    txid, evicted = await request.app[DEVCHAIN].replace(_hex(body.tx))
    return web.json_response({"txid": txid, "evicted": evicted})


@routes.post("/devchain/evict")
async def post_evict(request: web.Request) -> web.Response:
    body: EvictRequest = await _decode(request, EvictRequest)
    return web.json_response({"evicted": await request.app[DEVCHAIN].evict(body.txid)})


@routes.post("/devchain/fees")
async def post_fees(request: web.Request) -> web.Response:
    table: dict[str, float] = await _decode(request, FeeTable)
    estimates: dict[int, float] = {}
    for key, rate in table.items():
        if not key.isdigit() or not 1 <= int(key) <= MAX_FEE_TARGET:
            raise DevchainError(f"fee target {key!r} is not a block count 1-{MAX_FEE_TARGET}")
        estimates[int(key)] = rate
    chain = request.app[DEVCHAIN]
    chain.set_fee_estimates(estimates)
    return web.json_response({str(k): v for k, v in chain.fee_estimates().items()})


@routes.delete("/devchain/fees")
async def delete_fees(request: web.Request) -> web.Response:
    chain = request.app[DEVCHAIN]
    chain.set_fee_estimates(None)
    return web.json_response({str(k): v for k, v in chain.fee_estimates().items()})


@routes.get("/devchain/info")
async def get_info(request: web.Request) -> web.Response:
    return web.json_response(request.app[DEVCHAIN].info())


def make_app(chain: Controls) -> web.Application:
    app = web.Application(middlewares=[devchain_errors], client_max_size=MAX_BODY)
    app[BACKEND] = chain
    app[DEVCHAIN] = chain
    app.add_routes(esplora_routes)
    app.add_routes(routes)
    return app
