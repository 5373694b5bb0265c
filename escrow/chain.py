"""The node's chain backend: an Esplora server over HTTP through bdk's client (escrow.bitcoin),
with every blocking call moved off the event loop. Read-only plus broadcast; no keys here.

Mainnet is refused unless the caller passes `allow_mainnet=True` (the CLI's explicit flag).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from escrow.bitcoin import Esplora, address_script, tx_outputs
from escrow.terms import ChainError, Network

log = logging.getLogger(__name__)

NETWORKS: tuple[Network, ...] = ("regtest", "signet", "testnet", "mainnet")


class MainnetRefused(ChainError):
    """Mainnet was asked for without the explicit opt-in."""


@dataclass(frozen=True, slots=True)
class TxStatus:
    txid: str
    confirmed: bool
    block_height: int | None
    confirmations: int  # 0 while unconfirmed


@dataclass(frozen=True, slots=True)
class FundingOutput:
    """An output paying an escrow address, with the whole transaction for the signers."""

    txid: str
    vout: int
    amount: int
    confirmations: int
    raw_tx: bytes


class EsploraChain:
    """Esplora backend for one network. Methods are coroutines; bdk runs in worker threads."""

    def __init__(self, url: str, network: Network, *, allow_mainnet: bool = False) -> None:
        if network not in NETWORKS:
            raise ChainError(f"unknown network {network!r}")
        if network == "mainnet" and not allow_mainnet:
            raise MainnetRefused("mainnet needs an explicit opt-in (allow_mainnet=True)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ChainError(f"not an http(s) Esplora URL: {url!r}")
        self.url = url.rstrip("/")
        self.network = network
        self.esplora = Esplora(self.url)

    async def tip_height(self) -> int:
        return await asyncio.to_thread(self.esplora.height)

    async def tx_status(self, txid: str) -> TxStatus:
        """Where `txid` is; a transaction the server never saw reads as unconfirmed."""
        st, tip = await asyncio.gather(asyncio.to_thread(self.esplora.tx_status, txid),
                                       self.tip_height())
        return TxStatus(txid, st.confirmed, st.height, _depth(st.height, tip))

    async def get_tx(self, txid: str) -> bytes | None:
        return await asyncio.to_thread(self.esplora.raw_tx, txid)

    async def spender(self, txid: str, vout: int) -> str | None:
        """The transaction spending an output (mempool or chain), or None while unspent."""
        return await asyncio.to_thread(self.esplora.spender, txid, vout)

    async def find_funding(self, address: str, amount: int | None = None, *,
                           after_height: int | None = None, unspent: bool = True
                           ) -> FundingOutput | None:
        """The deepest unspent output paying `address` (exactly `amount` sats if given) and not
        confirmed at or below `after_height` (the tip when the escrow's keys were made: nothing
        older can be a payment for it), or None.

        Looks at the address's mempool and newest confirmed transactions (Esplora's first page),
        which is where an escrow's funding is while the trade waits for it. A spent output is
        never funding: whatever spent it, the money is not there any more (`unspent=False`
        lets a buyer see its own earlier payment, spent or not, so it never pays twice).
        """
        spk = address_script(address, self.network)
        txs = await asyncio.to_thread(self.esplora.address_txs, address, self.network)
        tip = await self.tip_height()
        best: FundingOutput | None = None
        for t in txs:
            if after_height is not None and t.height is not None and t.height <= after_height:
                continue
            raw = await self.get_tx(t.txid)
            if raw is None:
                continue
            for vout, (script, value) in enumerate(tx_outputs(raw)):
                if script != spk or (amount is not None and value != amount):
                    continue
                if unspent and await self.spender(t.txid, vout) is not None:
                    continue
                found = FundingOutput(t.txid, vout, value, _depth(t.height, tip), raw)
                if best is None or found.confirmations > best.confirmations:
                    best = found
        return best

    async def broadcast(self, raw_tx: bytes) -> str:
        txid = await asyncio.to_thread(self.esplora.broadcast, raw_tx)
        log.info("broadcast %s", txid)
        return txid

    async def fee_estimates(self) -> dict[int, float]:
        """sat/vB by confirmation target in blocks (as the server reports them)."""
        return await asyncio.to_thread(self.esplora.fee_estimates)

    async def fee_rate(self, target_blocks: int = 6) -> int:
        """Whole sat/vB to confirm within `target_blocks`: the estimate for the largest target
        at or below it (the smallest target if none is), rounded up, at least 1."""
        estimates = await self.fee_estimates()
        if not estimates:
            return 1
        below = [b for b in estimates if b <= target_blocks]
        return max(1, math.ceil(estimates[max(below) if below else min(estimates)]))


def _depth(height: int | None, tip: int) -> int:
    return 0 if height is None else max(0, tip - height + 1)
