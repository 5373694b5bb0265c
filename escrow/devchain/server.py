"""The devchain: a loopback, Esplora-compatible regtest chain for development and tests, with a
mempool, mining on demand or on a timer, a faucet, and SQLite persistence.

A transaction enters the mempool only if every input spends an unspent output and validates under
Bitcoin Core's consensus library (see rules.py). Blocks start at the real regtest genesis,
carry BIP34 heights and witness commitments, and pass Core's context-free block check.

    async with Devchain.running(":memory:") as chain:        # or a path to a SQLite file
        client = bdkpython.EsploraClient(chain.url)
        txid = await chain.faucet(address, 100_000)           # confirm=True mines a block

By default it relays like a permissive node (no fee minimum, no dust rule, a conflicting spend is
refused); `policy=RelayPolicy()` applies Bitcoin Core's relay policy (policy.py) and lets a
better-paying spend replace an unconfirmed one. The test-only operations (reorg, forced double
spend, eviction, fee estimates) and their HTTP routes (control.py) work in both modes.
The faucet key is stored unencrypted in the devchain's database: regtest coins only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from escrow.devchain.addresses import AddressError, address_to_script
from escrow.devchain.chain import COINBASE_MATURITY, ChainState
from escrow.devchain.control import DevchainError, Reorg, make_app
from escrow.devchain.esplora import DEFAULT_FEE_ESTIMATES, parse_submitted
from escrow.devchain.faucet import FaucetError, FaucetKey, build_payment
from escrow.devchain.mempool import (
    MempoolChange,
    MempoolError,
    admit,
    evict,
    expire,
    invalidate,
    judge,
    judge_forced,
)
from escrow.devchain.mining import build_block
from escrow.devchain.policy import RelayPolicy
from escrow.devchain.primitives import Block, Tx, hash_from_hex, hash_hex, regtest_genesis
from escrow.devchain.rules import TxRejected, check_transaction
from escrow.devchain.store import DevchainStore
from p2pmarket.storage import Database

log = logging.getLogger(__name__)

__all__ = ["Devchain", "DevchainError", "RelayPolicy", "Reorg", "TxRejected", "serve_devchain"]

BOOTSTRAP_BLOCKS = COINBASE_MATURITY + 1  # the first faucet coinbase is spendable at once
DB_FILE = "devchain.db"
_T = TypeVar("_T")


class Devchain:
    """Chain state + store + faucet. All state changes hold `_lock`; heavy work (pbk checks,
    block building, SQLite) runs in worker threads that only read the state, and the change
    itself is applied on the event loop, so HTTP readers never see half a block."""

    network = "regtest"

    def __init__(
        self,
        store: DevchainStore,
        state: ChainState,
        faucet_key: FaucetKey,
        policy: RelayPolicy | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.faucet_key = faucet_key
        self.policy = policy
        self.url = ""
        self.block_interval: float | None = None
        self._fee_estimates: dict[int, float] | None = None  # None: the defaults
        self._lock = asyncio.Lock()

    # -- lifetime -----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, db: Path | str | Database, policy: RelayPolicy | None = None
    ) -> Devchain:
        """Load (or create) the chain in `db`; a new chain mines its faucet's first coins."""
        chain = cls(*await asyncio.to_thread(_load, db), policy=policy)
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
        policy: RelayPolicy | None = None,
    ) -> AsyncIterator[Devchain]:
        """Open the chain and serve its HTTP API on a loopback address until the block ends;
        `policy` switches Bitcoin Core's relay policy on (default: permissive)."""
        if not _is_loopback(host):
            raise DevchainError(f"the devchain binds loopback addresses only, not {host!r}")
        chain = await cls.open(db, policy)
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

    async def _accept(self, tx: Tx, forced: bool = False) -> list[str]:
        """Judge in a worker thread, store, then apply on the loop; returns evicted txids."""
        if tx.txid in self.state.txs:
            return []  # already known: broadcasting twice is not an error
        if forced:
            admission = await asyncio.to_thread(judge_forced, self.state, tx)
        else:
            admission = await asyncio.to_thread(judge, self.state, tx, self.policy)
        await asyncio.to_thread(self.store.change_mempool, [tx], list(admission.evicts))
        change = admit(self.state, tx, admission, time.time())
        log.debug("devchain: accepted %s (fee %d sat, evicted %d)", tx.txid_hex,
                  admission.fee, len(change.removed))
        return [hash_hex(t) for t in change.removed]

    async def replace(self, raw: bytes) -> tuple[str, list[str]]:
        """Force a transaction in, evicting the mempool transactions it double-spends and their
        descendants: a miner's choice, so no relay policy, but still the consensus check.
        Returns its txid and the evicted txids. A confirmed conflict needs `invalidate`."""
        tx = parse_submitted(raw)
        async with self._lock:
            return tx.txid_hex, await _atomic(self._accept(tx, forced=True))

    async def evict(self, txid: str) -> list[str]:
        """Drop a mempool transaction and its descendants, as a full or expiring mempool would
        (the node must rebroadcast). Returns the evicted txids, parents first."""
        key = _txid(txid)
        async with self._lock:
            gone = self.state.mempool_descendants([key])
            if not gone:
                raise DevchainError(f"transaction {txid} is not in the mempool")
            await _atomic(asyncio.to_thread(self.store.drop_mempool, gone))
            change = evict(self.state, key)
        return [hash_hex(t) for t in change.removed]

    async def invalidate(
        self,
        blocks: int = 1,
        block_hash: str | None = None,
        replace: list[bytes] | None = None,
        mine: int = 0,
    ) -> Reorg:
        """Reorg: disconnect the top `blocks` blocks (or `block_hash` and all above it), put
        their transactions back in the mempool unless now invalid, force `replace` in (a
        double spend of a returned transaction drops it instead), then mine `mine` blocks.

        The chain change runs on the event loop, so no reader sees a half-reorged chain; it
        re-checks every mempool transaction, which a devchain's mempool makes cheap.
        """
        txs = [parse_submitted(raw) for raw in replace or []]
        async with self._lock:
            depth = blocks if block_hash is None else self._depth_of(block_hash)
            try:
                change = invalidate(self.state, depth, txs, time.time())
            except MempoolError as exc:
                raise DevchainError(str(exc)) from None
            mempool = [record.tx for record in self.state.mempool.values()]
            await _atomic(asyncio.to_thread(self.store.rewind, self.state.height, mempool))
            mined = [await _atomic(self._mine_one(self.faucet_key.script_pubkey))
                     for _ in range(mine)]
        log.info("devchain: invalidated %d block(s), %d returned, %d dropped, height %d",
                 depth, len(change.returned), len(change.removed), self.state.height)
        return _reorg(change, txs, mined, self.state.height)

    def _depth_of(self, block_hash: str) -> int:
        entry = self.state.entry(_txid(block_hash))
        if entry is None:
            raise DevchainError(f"block {block_hash} is not in the best chain")
        return self.state.height - entry.height + 1

    async def mine(
        self, n: int = 1, address: str | None = None, min_feerate: float = 0.0
    ) -> list[str]:
        """Mine `n` blocks with the mempool's packages paying at least `min_feerate` sat/vB
        (default: all); coinbase to `address` or the faucet. Returns the new block hashes."""
        if not 1 <= n <= 100_000:
            raise DevchainError(f"cannot mine {n} blocks")
        spk = self._script(address) if address else self.faucet_key.script_pubkey
        hashes = []
        async with self._lock:
            for _ in range(n):
                hashes.append(await _atomic(self._mine_one(spk, min_feerate)))
        log.debug("devchain: mined %d block(s), height %d", n, self.state.height)
        return hashes

    async def _mine_one(self, spk: bytes, min_feerate: float = 0.0) -> str:
        block = await asyncio.to_thread(self._build_and_store, spk, min_feerate)
        self.state.connect_block(block)
        # the policy's expiry runs on every block; the store follows (a crash in between only
        # leaves the expired transactions to be re-admitted at the next start)
        expired = expire(self.state, self.policy, time.time())
        if expired.removed:
            await asyncio.to_thread(self.store.drop_mempool, list(expired.removed))
        return hash_hex(block.hash)

    def _build_and_store(self, spk: bytes, min_feerate: float) -> Block:
        block = build_block(self.state, spk, int(time.time()), min_feerate)
        self.store.add_block(self.state.height + 1, block)
        return block

    def set_fee_estimates(self, estimates: dict[int, float] | None) -> None:
        """What `GET /fee-estimates` answers from now on (sat/vB by target); None: defaults."""
        self._fee_estimates = None if estimates is None else dict(sorted(estimates.items()))

    def fee_estimates(self) -> dict[int, float]:
        table = self._fee_estimates
        return dict(DEFAULT_FEE_ESTIMATES if table is None else table)

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
            "policy": None if self.policy is None else asdict(self.policy),
            "fee_estimates": {str(k): v for k, v in self.fee_estimates().items()},
        }

    def _script(self, address: str) -> bytes:
        try:
            return address_to_script(address, self.network)
        except AddressError as exc:
            raise DevchainError(f"invalid {self.network} address {address!r}: {exc}") from None


def _txid(text: str) -> bytes:
    try:
        return hash_from_hex(text)
    except ValueError:
        raise DevchainError(f"not a 32-byte hex hash: {text!r}") from None


def _reorg(change: MempoolChange, txs: list[Tx], mined: list[str], height: int) -> Reorg:
    return Reorg(
        disconnected=[hash_hex(b.hash) for b in change.disconnected],
        returned=[hash_hex(t) for t in change.returned],
        dropped=[hash_hex(t) for t in change.removed],
        replaced_by=[tx.txid_hex for tx in txs],
        mined=mined,
        height=height,
    )


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
    now = time.time()  # the mempool's entry times restart with the devchain
    for raw in store.load_mempool():
        tx = Tx.parse(raw)
        try:
            state.add_to_mempool(tx, check_transaction(state, tx), now)
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


async def serve_devchain(
    datadir: Path,
    host: str = "127.0.0.1",
    port: int = 3002,
    block_interval: float | None = None,
    on_ready: Callable[[Devchain], None] | None = None,
    policy: RelayPolicy | None = None,
) -> None:
    """Run the devchain from `<datadir>/devchain.db` until cancelled (the CLI's entry point)."""
    await asyncio.to_thread(datadir.mkdir, parents=True, exist_ok=True)
    async with Devchain.running(
        datadir / DB_FILE, host, port, block_interval, policy
    ) as chain:
        log.info(
            "devchain ready: %s (height %d, faucet %s)",
            chain.url, chain.state.height, chain.faucet_key.address(chain.network),
        )
        if on_ready is not None:
            on_ready(chain)
        await asyncio.Event().wait()
