"""The node wallet: a single-sig BDK wallet (escrow.bitcoin.HotWallet) from the keystore's
mnemonic, kept in `<datadir>/wallet-<network>.sqlite`; receives funds and funds escrows.

Every wallet call blocks, so each runs in a worker thread, one at a time (an asyncio lock):
the wallet is one piece of state and concurrent builds could pick the same coins.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from escrow.bitcoin import HotWallet, WalletBalance, address_script, tx_outputs, txid
from escrow.chain import EsploraChain
from escrow.terms import EscrowBitcoinError, Network

log = logging.getLogger(__name__)


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
        self.network: Network = core.network

    @classmethod
    async def open(cls, mnemonic: str, network: Network, datadir: Path | None) -> NodeWallet:
        """Open (or create) the wallet; `datadir=None` keeps it in memory (tests)."""
        path = None if datadir is None else str(Path(datadir) / f"wallet-{network}.sqlite")
        return cls(await asyncio.to_thread(HotWallet, mnemonic, network, path))

    async def receive_address(self) -> str:
        """A fresh address (revealed and saved, so it is watched from now on)."""
        async with self._lock:
            return await asyncio.to_thread(self._core.receive_address)

    async def balance(self) -> WalletBalance:
        async with self._lock:
            return await asyncio.to_thread(self._core.balance)

    async def sync(self, chain: EsploraChain, *, full: bool = False) -> WalletBalance:
        """Catch up with `chain` and return the new balance."""
        self._same_network(chain)
        async with self._lock:
            await asyncio.to_thread(self._core.sync, chain.esplora, full=full)
            return await asyncio.to_thread(self._core.balance)

    async def fund_escrow(self, chain: EsploraChain, address: str, sats: int,
                          *, sat_per_vb: int | None = None) -> EscrowFunding:
        """Pay exactly `sats` to the escrow `address` and broadcast it. Sync first."""
        self._same_network(chain)
        spk = address_script(address, self.network)
        rate = sat_per_vb if sat_per_vb is not None else await chain.fee_rate()
        async with self._lock:
            raw = await asyncio.to_thread(self._core.pay, address, sats, rate)
            await chain.broadcast(raw)
            await asyncio.to_thread(self._core.note_sent, raw)
        vout = next(i for i, (s, v) in enumerate(tx_outputs(raw)) if s == spk and v == sats)
        funding = EscrowFunding(txid(raw), vout, sats, raw)
        log.info("funded escrow %s with %d sats in %s:%d", address, sats, funding.txid, vout)
        return funding

    def _same_network(self, chain: EsploraChain) -> None:
        if chain.network != self.network:
            raise EscrowBitcoinError(f"wallet is on {self.network}, chain on {chain.network}")
