"""The devchain: a loopback, Esplora-compatible regtest chain for development and tests, with a
mempool, mining on demand or on a timer, a faucet, and SQLite persistence.

A transaction enters the mempool only if every input spends an unspent output and validates under
Bitcoin Core's consensus library (see rules.py). Blocks start at the real regtest genesis,
carry BIP34 heights and witness commitments, and pass Core's context-free block check.

    async with Devchain.running(":memory:") as chain:        # or a path to a SQLite file
        client = bdkpython.EsploraClient(chain.url)
        txid = await chain.faucet(address, 100_000)           # confirm=True mines a block

HTTP extras next to the Esplora API: POST /devchain/mine {"blocks", "address"?},
POST /devchain/faucet {"address", "sats", "confirm"?}, GET /devchain/info.
The faucet key is stored unencrypted in the devchain's database: regtest coins only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
from aiohttp import web

from escrow.devchain.addresses import AddressError, address_to_script
from escrow.devchain.chain import COINBASE_MATURITY, ChainState
from escrow.devchain.esplora import BACKEND, parse_submitted
from escrow.devchain.esplora import routes as esplora_routes
from escrow.devchain.faucet import FaucetError, FaucetKey, build_payment
from escrow.devchain.mining import build_block
from escrow.devchain.primitives import Block, Tx, hash_hex, regtest_genesis
from escrow.devchain.rules import TxRejected, check_transaction
from escrow.devchain.store import DevchainStore
from p2pmarket.storage import Database

log = logging.getLogger(__name__)

__all__ = ["Devchain", "DevchainError", "TxRejected", "serve_devchain"]

BOOTSTRAP_BLOCKS = COINBASE_MATURITY + 1  # the first faucet coinbase is spendable at once
MAX_MINE = 1000
DB_FILE = "devchain.db"
_T = TypeVar("_T")


class DevchainError(Exception):
    """A devchain request that cannot be served (bad address, empty faucet, ...)."""


class MineRequest(msgspec.Struct, forbid_unknown_fields=True):
    blocks: Annotated[int, msgspec.Meta(ge=1, le=MAX_MINE)] = 1
    address: str | None = None


class FaucetRequest(msgspec.Struct, forbid_unknown_fields=True):
    address: str
    sats: Annotated[int, msgspec.Meta(ge=1, le=21_000_000 * 100_000_000)]
    confirm: bool = False


class Devchain:
    """Chain state + store + faucet. All state changes hold `_lock`; heavy work (pbk checks,
    block building, SQLite) runs in worker threads that only read the state, and the change
    itself is applied on the event loop, so HTTP readers never see half a block."""

    network = "regtest"

    def __init__(self, store: DevchainStore, state: ChainState, faucet_key: FaucetKey) -> None:
        self.store = store
        self.state = state
        self.faucet_key = faucet_key
        self.url = ""
        self.block_interval: float | None = None
        self._lock = asyncio.Lock()

    # -- lifetime -----------------------------------------------------------------------------

    @classmethod
    async def open(cls, db: Path | str | Database) -> Devchain:
        """Load (or create) the chain in `db`; a new chain mines its faucet's first coins."""
        chain = cls(*await asyncio.to_thread(_load, db))
        if chain.state.height == 0:
            await chain.mine(BOOTSTRAP_BLOCKS)
        return chain

    async def close(self) -> None:
        async with self._lock:
            await _atomic(asyncio.to_thread(self.store.close))

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        db: Path | str | Database,
        host: str = "127.0.0.1",
        port: int = 0,
        block_interval: float | None = None,
    ) -> AsyncIterator[Devchain]:
        """Open the chain and serve its HTTP API on a loopback address until the block ends."""
        if not _is_loopback(host):
            raise DevchainError(f"the devchain binds loopback addresses only, not {host!r}")
        chain = await cls.open(db)
        runner = web.AppRunner(make_app(chain), access_log=None)
        timer: asyncio.Task[None] | None = None
        try:
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            bound_port = runner.addresses[0][1]
            chain.url = f"http://[{host}]:{bound_port}" if ":" in host else (
                f"http://{host}:{bound_port}"
            )
            if block_interval:
                chain.block_interval = block_interval
                timer = asyncio.create_task(chain._mine_on_timer(block_interval))
            log.info("devchain serving %s at height %d", chain.url, chain.state.height)
            yield chain
        finally:
            if timer is not None:
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer
            await runner.cleanup()
            await chain.close()

    async def _mine_on_timer(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.mine(1)
            except Exception:  # a failed timer block must not stop the chain
                log.exception("devchain: timer mining failed")

    # -- operations ---------------------------------------------------------------------------

    async def submit(self, raw: bytes) -> str:
        """Accept a transaction into the mempool; returns its txid or raises TxRejected."""
        tx = parse_submitted(raw)
        async with self._lock:
            await _atomic(self._accept(tx))
        return tx.txid_hex

    async def _accept(self, tx: Tx) -> None:
        if tx.txid in self.state.txs:
            return  # already known: broadcasting twice is not an error
        fee = await asyncio.to_thread(check_transaction, self.state, tx)
        await asyncio.to_thread(self.store.add_mempool, tx)
        self.state.add_to_mempool(tx, fee)
        log.debug("devchain: accepted %s (fee %d sat)", tx.txid_hex, fee)

    async def mine(self, n: int = 1, address: str | None = None) -> list[str]:
        """Mine `n` blocks with the mempool's transactions; coinbase to `address` or the faucet.

        Returns the new block hashes.
        """
        if not 1 <= n <= 100_000:
            raise DevchainError(f"cannot mine {n} blocks")
        spk = self._script(address) if address else self.faucet_key.script_pubkey
        hashes = []
        async with self._lock:
            for _ in range(n):
                hashes.append(await _atomic(self._mine_one(spk)))
        log.debug("devchain: mined %d block(s), height %d", n, self.state.height)
        return hashes

    async def _mine_one(self, spk: bytes) -> str:
        block = await asyncio.to_thread(self._build_and_store, spk)
        self.state.connect_block(block)
        return hash_hex(block.hash)

    def _build_and_store(self, spk: bytes) -> Block:
        block = build_block(self.state, spk, int(time.time()))
        self.store.add_block(self.state.height + 1, block)
        return block

    async def faucet(self, address: str, sats: int, confirm: bool = True) -> str:
        """Send `sats` from the faucet to `address`; with `confirm`, mine a block at once."""
        spk = self._script(address)
        async with self._lock:
            try:
                tx = await asyncio.to_thread(
                    build_payment, self.state, self.faucet_key, spk, sats
                )
            except FaucetError as exc:
                raise DevchainError(str(exc)) from None
            await _atomic(self._accept(tx))
        if confirm:
            await self.mine(1)
        return tx.txid_hex

    def balance_of(self, address: str, include_mempool: bool = True) -> int:
        """Unspent sats paid to `address` (by default including unconfirmed ones)."""
        return self.state.balance(self._script(address), include_mempool)

    def info(self) -> dict[str, Any]:
        key = self.faucet_key
        return {
            "network": self.network,
            "url": self.url,
            "height": self.state.height,
            "tip": hash_hex(self.state.tip.hash),
            "mempool_size": len(self.state.mempool),
            "faucet_address": key.address(self.network),
            "faucet_balance": self.state.balance(key.script_pubkey),
            "block_interval": self.block_interval,
        }

    def _script(self, address: str) -> bytes:
        try:
            return address_to_script(address, self.network)
        except AddressError as exc:
            raise DevchainError(f"invalid {self.network} address {address!r}: {exc}") from None


async def _atomic(step: Awaitable[_T]) -> _T:
    """Run `step` to its end even if the caller is cancelled meanwhile, then re-raise the
    cancellation: a half-done step would leave the store and the in-memory state apart, or
    let the next lock holder use the database while a worker thread still does."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        raise


def _load(db: Path | str | Database) -> tuple[DevchainStore, ChainState, FaucetKey]:
    """Rebuild the chain state from the store (blocking)."""
    store = DevchainStore.open(db)
    state = ChainState()
    raw_blocks = store.load_blocks()
    if not raw_blocks:
        store.add_block(0, regtest_genesis())
    elif Block.parse(raw_blocks[0]).hash != state.tip.hash:
        raise DevchainError(f"{store.db.path} holds a chain with a different genesis block")
    for raw in raw_blocks[1:]:
        state.connect_block(Block.parse(raw))
    secret = store.get_meta("faucet_key")
    if secret is None:
        key = FaucetKey.generate()
        store.set_meta("faucet_key", key.secret)
    else:
        key = FaucetKey(secret)
    dropped = []
    for raw in store.load_mempool():
        tx = Tx.parse(raw)
        try:
            state.add_to_mempool(tx, check_transaction(state, tx))
        except TxRejected as exc:
            log.warning("devchain: dropping stored mempool tx %s: %s", tx.txid_hex, exc)
            dropped.append(tx.txid)
    store.drop_mempool(dropped)
    log.info("devchain: loaded %d blocks, %d mempool txs", state.height, len(state.mempool))
    return store, state, key


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- HTTP ---------------------------------------------------------------------------------------

DEVCHAIN = web.AppKey("devchain", Devchain)
devchain_routes = web.RouteTableDef()


def _problem(status: int, detail: str) -> web.Response:
    return web.json_response(
        {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
         "detail": detail},
        status=status, content_type="application/problem+json",
    )


async def _decode(request: web.Request, kind: type[_T]) -> _T:
    try:
        return msgspec.json.decode(await request.read(), type=kind)
    except msgspec.ValidationError as exc:
        raise DevchainError(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise DevchainError(f"request body is not JSON: {exc}") from None


@web.middleware
async def _devchain_errors(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except DevchainError as exc:
        return _problem(400, str(exc))
    except TxRejected as exc:
        return _problem(400, f"transaction rejected: {exc}")
    return response


@devchain_routes.post("/devchain/mine")
async def post_mine(request: web.Request) -> web.Response:
    body = await _decode(request, MineRequest)
    chain = request.app[DEVCHAIN]
    hashes = await chain.mine(body.blocks, body.address)
    return web.json_response({"blocks": hashes, "height": chain.state.height})


@devchain_routes.post("/devchain/faucet")
async def post_faucet(request: web.Request) -> web.Response:
    body = await _decode(request, FaucetRequest)
    chain = request.app[DEVCHAIN]
    txid = await chain.faucet(body.address, body.sats, confirm=body.confirm)
    reply: dict[str, Any] = {"txid": txid}
    if body.confirm:
        record = chain.state.txs[bytes.fromhex(txid)[::-1]]
        reply["block_height"] = record.height
    return web.json_response(reply)


@devchain_routes.get("/devchain/info")
async def get_info(request: web.Request) -> web.Response:
    return web.json_response(request.app[DEVCHAIN].info())


def make_app(chain: Devchain) -> web.Application:
    app = web.Application(middlewares=[_devchain_errors])
    app[BACKEND] = chain
    app[DEVCHAIN] = chain
    app.add_routes(esplora_routes)
    app.add_routes(devchain_routes)
    return app


async def serve_devchain(
    datadir: Path,
    host: str = "127.0.0.1",
    port: int = 3002,
    block_interval: float | None = None,
    on_ready: Callable[[Devchain], None] | None = None,
) -> None:
    """Run the devchain from `<datadir>/devchain.db` until cancelled (the CLI's entry point)."""
    await asyncio.to_thread(datadir.mkdir, parents=True, exist_ok=True)
    async with Devchain.running(datadir / DB_FILE, host, port, block_interval) as chain:
        log.info(
            "devchain ready: %s (height %d, faucet %s)",
            chain.url, chain.state.height, chain.faucet_key.address(chain.network),
        )
        if on_ready is not None:
            on_ready(chain)
        await asyncio.Event().wait()
