"""The node wallet: a single-sig BDK wallet (escrow.bitcoin.HotWallet) from the keystore's
mnemonic, kept in `<datadir>/wallet-<network>.sqlite`; receives funds, funds escrows, pays out.

Every wallet call blocks, so each runs in a worker thread, one at a time (an asyncio lock):
the wallet is one piece of state and concurrent builds could pick the same coins. A payment is
built, checked, broadcast and recorded under that one lock, so no other build sees its coins
as unspent. Only confirmed coins are ever spent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from escrow.bitcoin import (
    HotWallet,
    PaymentPlan,
    WalletBalance,
    WalletTx,
    address_script,
    tx_outputs,
    txid,
)
from escrow.chain import EsploraChain
from escrow.terms import EscrowBitcoinError, Network

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EscrowFunding:
    """A transaction we broadcast to fund an escrow: what the buyer announces as `Funded`."""

    txid: str
    vout: int
    amount: int
    raw_tx: bytes


class NodeWallet:
    """The node's wallet. Create with `await NodeWallet.open(...)`."""

    def __init__(self, core: HotWallet) -> None:
        self._core = core
        self._lock = asyncio.Lock()
        self._inflight: set[asyncio.Future[Any]] = set()
        self.network: Network = core.network
        self.synced_at: float | None = None  # unix time of the last sync that worked

    @classmethod
    async def open(cls, mnemonic: str, network: Network, datadir: Path | None) -> NodeWallet:
        """Open (or create) the wallet; `datadir=None` keeps it in memory (tests)."""
        path = None if datadir is None else str(Path(datadir) / f"wallet-{network}.sqlite")
        return cls(await asyncio.to_thread(HotWallet, mnemonic, network, path))

    async def receive_address(self) -> str:
        """A fresh address (revealed and saved, so it is watched from now on)."""
        async with self._lock:
            return await self._thread(self._core.receive_address)

    async def balance(self) -> WalletBalance:
        async with self._lock:
            return await self._thread(self._core.balance)

    async def sync(self, chain: EsploraChain, *, full: bool = False) -> WalletBalance:
        """Catch up with `chain` and return the new balance."""
        self._same_network(chain)
        async with self._lock:
            await self._thread(self._core.sync, chain.esplora, full=full)
            self.synced_at = time.time()
            return await self._thread(self._core.balance)

    async def history(self) -> tuple[list[WalletTx], int]:
        """The wallet's transactions (newest first) and the height it last synced to."""
        async with self._lock:
            return await self._thread(lambda: (self._core.history(), self._core.tip_height()))

    async def preview(self, address: str, sats: int | None, sat_per_vb: int) -> PaymentPlan:
        """What paying `sats` (None: everything) to `address` would cost; nothing is signed
        for the chain and no coin is reserved."""
        async with self._lock:
            return await self._thread(self._core.plan, address, sats, sat_per_vb,
                                           preview=True)

    async def send(self, chain: EsploraChain, address: str, sats: int, sat_per_vb: int,
                   check: Callable[[PaymentPlan], None]) -> PaymentPlan:
        """Build and sign the payment, let `check` refuse it (raise) or record it, then
        broadcast it and note it in the wallet."""
        self._same_network(chain)
        async with self._lock:
            plan = await self._thread(self._core.plan, address, sats, sat_per_vb)
            check(plan)
            assert plan.raw_tx is not None
            await chain.broadcast(plan.raw_tx)
            await self._thread(self._core.note_sent, plan.raw_tx)
        log.info("sent %d sats to %s in %s (fee %d)", plan.amount, address, plan.txid, plan.fee)
        return plan

    async def rebroadcast(self, chain: EsploraChain, raw_tx: bytes) -> None:
        """Broadcast a payment built earlier again (broadcasting twice is harmless)."""
        self._same_network(chain)
        async with self._lock:
            await chain.broadcast(raw_tx)
            await self._thread(self._core.note_sent, raw_tx)

    async def fund_escrow(self, chain: EsploraChain, address: str, sats: int,
                          *, sat_per_vb: int | None = None) -> EscrowFunding:
        """Pay exactly `sats` to the escrow `address` from confirmed coins and broadcast it.
        Sync first."""
        self._same_network(chain)
        spk = address_script(address, self.network)
        rate = sat_per_vb if sat_per_vb is not None else await chain.fee_rate()
        async with self._lock:
            raw = await self._thread(self._core.pay, address, sats, rate)
            await chain.broadcast(raw)
            await self._thread(self._core.note_sent, raw)
        vout = next(i for i, (s, v) in enumerate(tx_outputs(raw)) if s == spk and v == sats)
        funding = EscrowFunding(txid(raw), vout, sats, raw)
        log.info("funded escrow %s with %d sats in %s:%d", address, sats, funding.txid, vout)
        return funding

    async def _thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """One blocking wallet call in a worker thread. A thread cannot be stopped, so a
        cancelled caller still waits for it (keeping the lock it holds): two calls never
        touch the wallet at once, and `close` finds nothing running behind its back."""
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    async def close(self) -> None:
        """Wait for wallet calls still running in threads (a sync against a slow server)."""
        if self._inflight:
            await asyncio.wait(set(self._inflight))

    def _same_network(self, chain: EsploraChain) -> None:
        if chain.network != self.network:
            raise EscrowBitcoinError(f"wallet is on {self.network}, chain on {chain.network}")
