"""`GET /node` on a node with escrow: the chain backend (network, URL, tip height) and the DHT's
bootstrap state; a backend that stops answering is reported, not waited for."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node.api.routes import node as routes_node
from node.api.server import ApiServer
from p2pmarket.client import Client
from tests.support.escrow_world import escrow_world

pytestmark = pytest.mark.timeout(60)


async def test_status_shows_chain_and_bootstrap(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async with escrow_world(tmp_path) as world:
        node = await world.start("solo")
        api = ApiServer(node.datadir, port=0, stop=asyncio.Event())
        await api.start()
        api.attach(node.node)
        client = Client.from_datadir(node.datadir, timeout=30)
        try:
            status = await client.get_status()
            assert status.escrow and status.chain is not None
            assert status.chain.network == "regtest"
            assert status.chain.backend == world.devchain.url.rstrip("/")
            assert status.chain.tip_height == await world.chain.tip_height()
            assert status.dht is not None and status.dht.bootstrapped
            assert status.dht.bootstrap_addrs == 1 and status.dht.next_bootstrap_retry is None

            await world.mine(2)  # a fresh reading shows the new tip
            monkeypatch.setattr(routes_node, "CHAIN_FRESH", 0.0)
            status = await client.get_status()
            assert status.chain is not None
            assert status.chain.tip_height == await world.chain.tip_height()

            async def hangs() -> int:
                await asyncio.sleep(3600)
                return 0
            monkeypatch.setattr(node.escrow.chain, "tip_height", hangs)
            monkeypatch.setattr(routes_node, "CHAIN_TIMEOUT", 0.2)
            status = await client.get_status()
            assert status.chain is not None and status.chain.tip_height is None
            assert "no answer within 0.2 s" in status.chain.error
        finally:
            await client.close()
            await api.stop()
