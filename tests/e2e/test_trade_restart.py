"""examples/trade.py carries on across a restart of the seller's node (real processes).

Three `p2pmarket run` processes on loopback: R (the node the others join), the seller and the
buyer. The example's `trade()` runs with clients made as its `main()` makes them; once the
seller's node has the buyer's offer, and before the seller counters, the seller's node is
stopped (SIGTERM) and started again on the same data dir (new API port and token). The
counter-offer is sent while the new node is down or starting; the seller's event stream resumes
on the new node; the trade must complete with a review.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from p2pmarket.client import Client
from tests.support.processes import (
    base_env,
    free_tcp_port,
    free_udp_port,
    init_datadir,
    reap,
    spawn_node,
    stop_node,
    wait_for_api,
)
from tests.support.waiting import when

pytestmark = pytest.mark.timeout(240)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trade.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_trade", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_trade_example_completes_across_a_seller_restart(tmp_path: Path) -> None:
    example = load_example()
    env = base_env(tmp_path / "home")
    dirs = {name: tmp_path / name for name in ("r", "seller", "buyer")}
    for d in dirs.values():
        init_datadir(d, env)
    r_port = free_udp_port()
    join = ("--bootstrap", f"127.0.0.1:{r_port}", "--api-port", "0")
    seller_args = (str(free_udp_port()), "--p2p-port", str(free_tcp_port()), *join)
    procs: dict[str, subprocess.Popen[str]] = {}

    def start(name: str, port: str, *rest: str) -> subprocess.Popen[str]:
        procs[name] = spawn_node(dirs[name], int(port), env, *rest)
        return procs[name]

    async def running(name: str) -> None:
        await asyncio.to_thread(wait_for_api, dirs[name], procs[name])
        async with Client.from_datadir(dirs[name]) as probe:
            await when(probe.get_status, lambda s: s.state == "running" and s.dht is not None
                       and (name == "r" or s.dht.contacts > 0), timeout=60)

    restarts: list[str] = []
    try:
        start("r", str(r_port), "--api-port", "0")
        await running("r")
        start("seller", *seller_args)
        start("buyer", str(free_udp_port()), *join)
        await running("seller")
        await running("buyer")

        said: list[str] = []
        async with Client.from_datadir(dirs["seller"],
                                       restart_wait=example.RESTART_WAIT) as seller, \
                Client.from_datadir(dirs["buyer"], restart_wait=example.RESTART_WAIT) as buyer:
            counter = seller.counter_offer

            async def counter_after_a_restart(*args: Any, **kw: Any) -> Any:
                old_url = seller.url
                assert await asyncio.to_thread(stop_node, procs["seller"]) == 0
                start("seller", *seller_args)  # not waited for: the client does that
                answer = await counter(*args, **kw)
                restarts.append(old_url)
                return answer

            seller.counter_offer = counter_after_a_restart  # type: ignore[method-assign]
            order_id = await example.trade(seller, buyer, say=said.append)
            assert restarts and seller.url != restarts[0]  # the new node answered
            assert (await seller.get_order(order_id)).state == "completed"
            assert (await buyer.get_order(order_id)).state == "completed"
        assert said[-1].startswith("buyer reviewed the seller: 1 review(s), rating 5.0"), said
    finally:
        for proc in procs.values():
            reap(proc)
