"""A bootstrap node lets nodes that only know it find each other, and reports health."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from dht.testing import make_node, start_node
from node.bootstrap import BootstrapNode
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.dhtkeys import record_key
from p2pmarket.wire.records import sign_record
from tests.support.records import make_listing

pytestmark = pytest.mark.timeout(60)


async def test_two_nodes_meet_through_the_bootstrap_node(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "boot.db")
    boot = BootstrapNode(Identity.generate(), db, tmp_path)
    await boot.start(dht_host="127.0.0.1", dht_port=0, metrics_port=0)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(boot.run(stop, []))
        a = await start_node(make_node(), [boot.dht.address])
        b = await start_node(make_node(), [boot.dht.address])
        try:
            assert a.protocol is not None and b.protocol is not None
            await a.bootstrap([boot.dht.address])  # a learns of b through the bootstrap node
            await asyncio.sleep(0.1)  # the identify challenge before b enters a's table
            a_knows = {n.id for n in a.protocol.router.find_neighbors(a.node, k=20)}
            assert b.node.id in a_knows
            rec = sign_record(Identity.generate(), make_listing(), seq=1)
            assert (await a.put(rec)).ok
            assert await b.get(record_key(rec)) == rec

            assert boot.metrics_address is not None
            host, port = boot.metrics_address
            base = f"http://{host}:{port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/healthz") as resp:
                    health = await resp.json()
                    assert resp.status == 200 and health["status"] == "ok"
                    assert health["contacts"] >= 2
                async with http.get(base + "/metrics") as resp:
                    text = await resp.text()
                    assert resp.status == 200
                    assert "p2pmarket_dht_contacts " in text
                    assert "# TYPE p2pmarket_dht_rpcs_sent_total counter" in text
        finally:
            a.stop()
            b.stop()
            stop.set()
    assert boot.dht.transport is None
    db.close()
