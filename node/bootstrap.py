"""`p2pmarket bootstrap`: a lightweight node for hobbyists — DHT entry point, health and metrics.

It joins (or starts) the DHT, stores and serves records like any node, and exposes `/healthz`
and Prometheus `/metrics` on loopback. No wallet, no market services. Given `--p2p-port`, it
is also a circuit relay v2 hop there (`RELAY_LIMITS`) so peers behind NAT stay reachable: a node
run with `--relay-via /ip4/<public ip>/tcp/<p2p port>/p2p/<this node's id>` reserves a slot here and
publishes its address through it; `/healthz` shows that address (with the listen IP). Given
`--keep-images MB` as well, it is an image keeper (`ImageKeeping`): it holds sellers' listing
images within that disk budget and serves them over its libp2p host while the sellers are away.
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
from node.p2p.blobs import BlobService, BlobStore
from node.p2p.holders import Holders
from node.p2p.keepbook import MB, KeepPolicy
from node.p2p.keeper import Keeper
from node.p2p.peers import PeerDirectory
from node.p2p.transport import Host, P2PError
from node.signals import stop_on_signals
from p2pmarket.config import Config
from p2pmarket.datadir import DB_FILE
from p2pmarket.identity import Identity
from p2pmarket.keystore import Keystore
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Keeper as KeeperAdvert

log = logging.getLogger(__name__)

DHT_KEY: web.AppKey[DhtNode] = web.AppKey("dht", DhtNode)
STARTED: web.AppKey[float] = web.AppKey("started", float)
RELAY_KEY: web.AppKey[Any] = web.AppKey("relay", object)  # a Libp2pHost, once started
KEEPING_KEY: web.AppKey[Any] = web.AppKey("keeping", object)  # ImageKeeping, when keeping
PEER_RECORD_EVERY = 30.0

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
    keeping = request.app.get(KEEPING_KEY)
    if keeping is not None:
        body["images_kept"], body["images_kept_bytes"] = keeping.usage()
    return web.json_response(body, status=200 if healthy else 503)


def render_metrics(dht: DhtNode, started: float, relay: Any = None,
                   keeping: ImageKeeping | None = None) -> str:
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
    if keeping is not None:
        count, size = keeping.usage()
        lines += ["# HELP p2pmarket_images_kept Listing images kept for sellers.",
                  "# TYPE p2pmarket_images_kept gauge", f"p2pmarket_images_kept {count}",
                  "# HELP p2pmarket_images_kept_bytes Disk used by images kept for sellers.",
                  "# TYPE p2pmarket_images_kept_bytes gauge",
                  f"p2pmarket_images_kept_bytes {size}"]
    for name, value in sorted(status.stats.items()):
        metric = f"p2pmarket_dht_{name}_total"
        lines += [f"# HELP {metric} DHT protocol counter: {name.replace('_', ' ')}.",
                  f"# TYPE {metric} counter", f"{metric} {value}"]
    return "\n".join(lines) + "\n"


async def metrics(request: web.Request) -> web.Response:
    text = render_metrics(request.app[DHT_KEY], request.app[STARTED], request.app.get(RELAY_KEY),
                          request.app.get(KEEPING_KEY))
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


def make_app(dht: DhtNode) -> web.Application:
    app = web.Application()
    app[DHT_KEY] = dht
    app[STARTED] = time.time()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


class ImageKeeping:
    """A bootstrap node's keeper role on its libp2p host: the blob and keep protocols, its
    `peer` record (so sellers and buyers can dial it), its keeper advert and holder records."""

    def __init__(self, identity: Identity, db: Database, host: Host, dht: DhtNode,
                 datadir: Path, policy: KeepPolicy) -> None:
        self.dht = dht
        self.blobs = BlobService(host, BlobStore(datadir / "blobs"))
        self.peers = PeerDirectory(identity, host, dht)
        self.keeper = Keeper(db, self.blobs, policy)
        self.holders = Holders(identity, dht, held=self.keeper.held,
                               ready=lambda: self.peers.published,
                               advert=KeeperAdvert(budget=policy.budget,
                                                   per_publisher=policy.per_publisher))
        self.keeper.on_kept = self.holders.kick

    def usage(self) -> tuple[int, int]:
        """(images kept, bytes they take)."""
        book = self.keeper.book
        return (len(book), book.used_bytes) if book is not None else (0, 0)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.holders.run())
            tg.create_task(self.keeper.run())
            while True:  # our peer record: who we are and where to dial us
                published = self.dht.contact_count() > 0 and await self.peers.publish()
                await asyncio.sleep(PEER_RECORD_EVERY if published else 2.0)


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
        self.keeping: ImageKeeping | None = None
        self.db = db

    async def start(self, *, dht_host: str, dht_port: int, metrics_port: int,
                    relay: tuple[str, int] | None = None, keep: KeepPolicy | None = None
                    ) -> None:
        """Bind the DHT, metrics and (given `relay` = (host, port)) the libp2p relay hop, on
        which it keeps images (given `keep`)."""
        if keep is not None and relay is None:
            raise ValueError("keeping images needs the libp2p host (relay)")
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
            if keep is not None:
                self.keeping = self._app[KEEPING_KEY] = ImageKeeping(
                    self.identity, self.db, hop, self.dht, self.datadir, keep)
                log.info("keeping sellers' images: %d MB budget, %d MB per seller",
                         keep.budget // MB, keep.per_publisher // MB)
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
                if self.keeping is not None:
                    tasks.append(tg.create_task(self.keeping.run()))
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
    it also serves the circuit relay on `config.p2p_host`:`config.p2p_port`, and keeps images
    when `config.keep_images_mb` is set."""
    return asyncio.run(_serve(datadir, config, keystore, metrics_port, relay))


async def _serve(datadir: Path, config: Config, keystore: Keystore, metrics_port: int,
                 relay: bool) -> int:
    stop = asyncio.Event()
    db = Database.open(datadir / DB_FILE)
    try:
        with stop_on_signals(stop):
            node = BootstrapNode(keystore.identity, db, datadir)
            try:
                keep = (KeepPolicy(budget=config.keep_images_mb * MB)
                        if relay and config.keep_images_mb else None)
                await node.start(dht_host=config.dht_host, dht_port=config.dht_port,
                                 metrics_port=metrics_port,
                                 relay=(config.p2p_host, config.p2p_port) if relay else None,
                                 keep=keep)
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
