"""`p2pmarket bootstrap`: a lightweight node for hobbyists — DHT entry point, health and metrics.

It joins (or starts) the DHT, stores and serves records like any node, and exposes `/healthz`
and Prometheus `/metrics` on loopback. No wallet, no market services. py-libp2p 0.8's circuit
relay v2 is not wired in yet: peers behind NAT get their messages through the DHT mailbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from dht.bootstrap import load_neighbours, save_neighbours
from dht.server import DhtNode
from dht.storage import RecordStore
from node.signals import stop_on_signals
from p2pmarket.config import Config
from p2pmarket.datadir import DB_FILE
from p2pmarket.identity import Identity
from p2pmarket.keystore import Keystore
from p2pmarket.storage import Database

log = logging.getLogger(__name__)

DHT_KEY: web.AppKey[DhtNode] = web.AppKey("dht", DhtNode)
STARTED: web.AppKey[float] = web.AppKey("started", float)


async def healthz(request: web.Request) -> web.Response:
    dht = request.app[DHT_KEY]
    status = dht.status()
    healthy = status.listening is not None
    body = {"status": "ok" if healthy else "down", "node_id": status.node_id,
            "contacts": status.contacts, "records": status.records_held,
            "bootstrapped": status.bootstrapped,
            "uptime_s": round(time.time() - request.app[STARTED], 1)}
    return web.json_response(body, status=200 if healthy else 503)


def render_metrics(dht: DhtNode, started: float) -> str:
    status = dht.status()
    lines = [
        "# HELP p2pmarket_dht_contacts Contacts in the routing table.",
        "# TYPE p2pmarket_dht_contacts gauge",
        f"p2pmarket_dht_contacts {status.contacts}",
        "# HELP p2pmarket_dht_records Records held for the network.",
        "# TYPE p2pmarket_dht_records gauge",
        f"p2pmarket_dht_records {status.records_held}",
        "# HELP p2pmarket_uptime_seconds Seconds since the node started.",
        "# TYPE p2pmarket_uptime_seconds gauge",
        f"p2pmarket_uptime_seconds {time.time() - started:.1f}",
    ]
    for name, value in sorted(status.stats.items()):
        metric = f"p2pmarket_dht_{name}_total"
        lines += [f"# HELP {metric} DHT protocol counter: {name.replace('_', ' ')}.",
                  f"# TYPE {metric} counter", f"{metric} {value}"]
    return "\n".join(lines) + "\n"


async def metrics(request: web.Request) -> web.Response:
    text = render_metrics(request.app[DHT_KEY], request.app[STARTED])
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


def make_app(dht: DhtNode) -> web.Application:
    app = web.Application()
    app[DHT_KEY] = dht
    app[STARTED] = time.time()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


class BootstrapNode:
    """start() binds everything; run(stop) serves until `stop` is set, then shuts down."""

    def __init__(self, identity: Identity, db: Database, datadir: Path) -> None:
        self.dht = DhtNode(identity, RecordStore(db))
        self.datadir = datadir
        self._runner = web.AppRunner(make_app(self.dht), access_log=None)
        self.metrics_address: tuple[str, int] | None = None

    async def start(self, *, dht_host: str, dht_port: int, metrics_port: int) -> None:
        await self.dht.listen(dht_port, dht_host)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", metrics_port)
        await site.start()
        host_port = self._runner.addresses[0]
        self.metrics_address = (str(host_port[0]), int(host_port[1]))
        host, port = self.dht.address
        log.info("bootstrap node: DHT on %s:%d, health and metrics on http://%s:%d/",
                 host, port, *self.metrics_address)

    async def run(self, stop: asyncio.Event, bootstrap: list[tuple[str, int]]) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tasks: list[asyncio.Task[Any]] = [tg.create_task(self.dht.serve())]
                if bootstrap:
                    tasks.append(tg.create_task(self.dht.bootstrap(bootstrap)))
                await stop.wait()
                for task in tasks:
                    task.cancel()
            neighbours = self.dht.neighbours()
            if neighbours:
                save_neighbours(self.datadir, neighbours)
        finally:
            await self.close()

    async def close(self) -> None:
        await self._runner.cleanup()
        self.dht.stop()


def run_bootstrap(datadir: Path, config: Config, keystore: Keystore, metrics_port: int) -> int:
    """`p2pmarket bootstrap`: run until SIGINT/SIGTERM; returns the exit code."""
    return asyncio.run(_serve(datadir, config, keystore, metrics_port))


async def _serve(datadir: Path, config: Config, keystore: Keystore, metrics_port: int) -> int:
    stop = asyncio.Event()
    db = Database.open(datadir / DB_FILE)
    try:
        with stop_on_signals(stop):
            node = BootstrapNode(keystore.identity, db, datadir)
            try:
                await node.start(dht_host=config.dht_host, dht_port=config.dht_port,
                                 metrics_port=metrics_port)
            except OSError as exc:
                log.error("cannot start the bootstrap node: %s", exc)
                await node.close()
                return 1
            peers = config.bootstrap_addrs() + load_neighbours(datadir)
            await node.run(stop, list(dict.fromkeys(peers)))
    finally:
        db.close()
    log.info("stopped cleanly")
    return 0
