"""`p2pmarket run`: the node process — one asyncio loop, one TaskGroup, clean stop on signals.

It runs the DHT and the libp2p host with reliable messaging and blobs; the HTTP API joins the
same TaskGroup in a later issue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from dht.bootstrap import default_bootstrap_file, load_bootstrap_file, load_neighbours
from node.app import Node
from node.p2p.host import Libp2pHost
from node.p2p.transport import P2PError
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
    try:
        host = Libp2pHost(keystore.identity, config.p2p_host, config.p2p_port)
        node = Node(keystore.identity, db, host, datadir=datadir)
        try:
            await node.start(dht_host=config.dht_host, dht_port=config.dht_port)
        except (OSError, P2PError) as exc:
            log.error("cannot start the node: %s", exc)
            await node.close()
            return 1
        await node.run(stop, bootstrap_addrs(datadir, config))
    finally:
        db.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    log.info("stopped cleanly")
    return 0
