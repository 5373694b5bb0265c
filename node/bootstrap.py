"""`p2pmarket bootstrap`: a lightweight node for hobbyists — DHT entry point, health and metrics.

It joins (or starts) the DHT, stores and serves records like any node, and exposes `/healthz`
and Prometheus `/metrics` on loopback. No wallet, no market services. Given `--p2p-port`, it
is also a circuit relay v2 hop there (`RELAY_LIMITS`) so peers behind NAT stay reachable: a node
run with `--relay-via /ip4/<public ip>/tcp/<p2p port>/p2p/<this node's id>` reserves a slot here and
publishes its address through it; `/healthz` shows that address (with the listen IP).
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
from node.p2p.transport import P2PError
from node.signals import stop_on_signals
from p2pmarket.config import Config
from p2pmarket.datadir import DB_FILE
from p2pmarket.identity import Identity
from p2pmarket.keystore import Keystore
from p2pmarket.storage import Database

log = logging.getLogger(__name__)

DHT_KEY: web.AppKey[DhtNode] = web.AppKey("dht", DhtNode)
STARTED: web.AppKey[float] = web.AppKey("started", float)
RELAY_KEY: web.AppKey[Any] = web.AppKey("relay", object)  # a Libp2pHost, once started

# what a hobbyist's machine grants strangers: one reservation each, 128 at once, for an hour;
# a relayed connection lasts at most an hour and carries at most 16 MiB (market messages are
# small; images should travel only between reachable peers)
RELAY_LIMITS = {"max_reservations": 128, "reservation_ttl": 3600, "max_circuits_per_peer": 8,
                "circuit_duration": 3600, "circuit_data": 16 * 1024 * 1024}


async def healthz(request: web.Request) -> web.Response:
    dht = request.app[DHT_KEY]
    status = dht.status()
    healthy = status.listening is not None
    body: dict[str, Any] = {"status": "ok" if healthy else "down", "node_id": status.node_id,
            "contacts": status.contacts, "records": status.records_held,
            "bootstrapped": status.bootstrapped,
            "uptime_s": round(time.time() - request.app[STARTED], 1)}
    relay = request.app.get(RELAY_KEY)
    if relay is not None:
        body["relay"] = [f"{a}/p2p/{relay.peer_id}" for a in relay.listen_addrs()]
        body["relay_reservations"] = relay.relay_reservations()
    return web.json_response(body, status=200 if healthy else 503)


def render_metrics(dht: DhtNode, started: float, relay: Any = None) -> str:
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
    if relay is not None:
        lines += ["# HELP p2pmarket_relay_reservations Peers holding a relay reservation.",
                  "# TYPE p2pmarket_relay_reservations gauge",
                  f"p2pmarket_relay_reservations {relay.relay_reservations()}"]
    for name, value in sorted(status.stats.items()):
        metric = f"p2pmarket_dht_{name}_total"
        lines += [f"# HELP {metric} DHT protocol counter: {name.replace('_', ' ')}.",
                  f"# TYPE {metric} counter", f"{metric} {value}"]
    return "\n".join(lines) + "\n"


async def metrics(request: web.Request) -> web.Response:
    text = render_metrics(request.app[DHT_KEY], request.app[STARTED], request.app.get(RELAY_KEY))
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
        self.identity = identity
        self.dht = DhtNode(identity, RecordStore(db))
        self.datadir = datadir
        self._app = make_app(self.dht)
        self._runner = web.AppRunner(self._app, access_log=None)
        self.metrics_address: tuple[str, int] | None = None
        self.relay: Any = None  # node.p2p.libp2p_host.host.Libp2pHost serving as relay hop

    async def start(self, *, dht_host: str, dht_port: int, metrics_port: int,
                    relay: tuple[str, int] | None = None) -> None:
        """Bind the DHT, metrics and (given `relay` = (host, port)) the libp2p relay hop."""
        await self.dht.listen(dht_port, dht_host)
        if relay is not None:
            from node.p2p.libp2p_host.host import (  # libp2p loads only here
                Libp2pHost,
                RelayHopLimits,
            )
            hop = Libp2pHost(self.identity, relay[0], relay[1],
                             relay_hop=RelayHopLimits(**RELAY_LIMITS))
            await hop.start()
            self.relay = self._app[RELAY_KEY] = hop
            log.info("circuit relay on %s", " ".join(
                f"{a}/p2p/{hop.peer_id}" for a in hop.listen_addrs()))
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
        if self.relay is not None:
            await self.relay.stop()
        self.dht.stop()


def run_bootstrap(datadir: Path, config: Config, keystore: Keystore, metrics_port: int,
                  *, relay: bool = False) -> int:
    """`p2pmarket bootstrap`: run until SIGINT/SIGTERM; returns the exit code. With `relay`
    it also serves the circuit relay on `config.p2p_host`:`config.p2p_port`."""
    return asyncio.run(_serve(datadir, config, keystore, metrics_port, relay))


async def _serve(datadir: Path, config: Config, keystore: Keystore, metrics_port: int,
                 relay: bool) -> int:
    stop = asyncio.Event()
    db = Database.open(datadir / DB_FILE)
    try:
        with stop_on_signals(stop):
            node = BootstrapNode(keystore.identity, db, datadir)
            try:
                await node.start(dht_host=config.dht_host, dht_port=config.dht_port,
                                 metrics_port=metrics_port,
                                 relay=(config.p2p_host, config.p2p_port) if relay else None)
            except (OSError, P2PError) as exc:
                log.error("cannot start the bootstrap node: %s", exc)
                await node.close()
                return 1
            peers = config.bootstrap_addrs() + load_neighbours(datadir)
            await node.run(stop, list(dict.fromkeys(peers)))
    finally:
        db.close()
    log.info("stopped cleanly")
    return 0
