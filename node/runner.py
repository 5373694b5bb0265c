"""`p2pmarket run`: the node process — one asyncio loop, one TaskGroup, clean stop on signals.

Today it runs the DHT (join, serve, upkeep); channels and the HTTP API join the same TaskGroup
in later issues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from dht.bootstrap import (
    default_bootstrap_file,
    load_bootstrap_file,
    load_neighbours,
    save_neighbours,
)
from dht.server import DhtNode
from dht.storage import RecordStore
from p2pmarket.config import Config
from p2pmarket.datadir import DB_FILE
from p2pmarket.keystore import Keystore
from p2pmarket.storage import Database

log = logging.getLogger(__name__)


def run_node(datadir: Path, config: Config, keystore: Keystore) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    return asyncio.run(serve_node(datadir, config, keystore))


def bootstrap_addrs(datadir: Path, config: Config) -> list[tuple[str, int]]:
    """Configured peers first, then the shipped list, then last run's neighbours."""
    addrs = config.bootstrap_addrs() + load_bootstrap_file(default_bootstrap_file())
    return list(dict.fromkeys(addrs + load_neighbours(datadir)))


async def serve_node(datadir: Path, config: Config, keystore: Keystore,
                     stop: asyncio.Event | None = None) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    db = Database.open(datadir / DB_FILE)
    dht = DhtNode(keystore.identity, RecordStore(db))
    try:
        await dht.listen(config.dht_port, config.dht_host)
        host, port = dht.address
        log.info("node %s: DHT on %s:%d", keystore.identity.peer_id, host, port)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_join(dht, bootstrap_addrs(datadir, config))),
                     tg.create_task(dht.serve())]
            await stop.wait()
            log.info("stopping")
            for task in tasks:
                task.cancel()
        neighbours = dht.neighbours()
        if neighbours:
            save_neighbours(datadir, neighbours)
    finally:
        dht.stop()
        db.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    log.info("stopped cleanly")
    return 0


async def _join(dht: DhtNode, addrs: list[tuple[str, int]]) -> None:
    if not addrs:
        log.warning("no bootstrap peers known: waiting for others to contact this node "
                    "(add some with --bootstrap host:port)")
        return
    contacts = await dht.bootstrap(addrs)
    if dht.bootstrapped:
        log.info("joined the DHT: %d contacts", contacts)
    else:
        log.warning("no bootstrap peer answered (%d tried); retrying with backoff", len(addrs))
