"""`p2pmarket run`: the node process — one asyncio loop, one TaskGroup, clean stop on signals.

It runs the DHT and the libp2p host with reliable messaging and blobs, and the local HTTP API
(`node.api`), which starts first: it answers (and says what is still starting) while the p2p
stack loads, and writes `<datadir>/api.cookie` and `api.url` for clients.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path

from dht.bootstrap import default_bootstrap_file, load_bootstrap_file, load_neighbours
from node.api.server import ApiServer
from node.app import Node
from node.escrow.driver import EscrowConfig
from node.p2p.keepbook import MB, KeepPolicy
from node.p2p.transport import P2PError
from node.signals import stop_on_signals
from p2pmarket.config import Config
from p2pmarket.datadir import DB_FILE
from p2pmarket.keystore import Keystore
from p2pmarket.storage import Database

log = logging.getLogger(__name__)


def run_node(datadir: Path, config: Config, keystore: Keystore) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    return asyncio.run(serve_node(datadir, config, keystore))


DEFAULT_ESPLORA = {
    "signet": "https://mempool.space/signet/api",
    "testnet": "https://mempool.space/testnet/api",
}


def escrow_config(config: Config, keystore: Keystore) -> EscrowConfig | None:
    """The node's chain for the escrow driver: `esplora_url`, else the network's public
    default; None (escrow off) for regtest without a URL, and for mainnet in this version."""
    url = config.esplora_url or DEFAULT_ESPLORA.get(config.network, "")
    if config.network == "mainnet":
        log.error("escrow on mainnet is not enabled in this version; escrow is off")
        return None
    if not url:
        log.info("no esplora_url for %s: escrow is off", config.network)
        return None
    return EscrowConfig(esplora_url=url, mnemonic=keystore.mnemonic, network=config.network)


def keep_policy(config: Config) -> KeepPolicy | None:
    """The image keeper's budget (`keep_images_mb`), or None: keep nobody's images."""
    return KeepPolicy(budget=config.keep_images_mb * MB) if config.keep_images_mb else None


def bootstrap_addrs(datadir: Path, config: Config) -> list[tuple[str, int]]:
    """Configured peers first, then the shipped list, then last run's neighbours."""
    addrs = config.bootstrap_addrs() + load_bootstrap_file(default_bootstrap_file())
    return list(dict.fromkeys(addrs + load_neighbours(datadir)))


async def serve_node(datadir: Path, config: Config, keystore: Keystore,
                     stop: asyncio.Event | None = None) -> int:
    stop = stop or asyncio.Event()
    with stop_on_signals(stop):
        code = await _serve(datadir, config, keystore, stop)
    if code == 0:
        log.info("stopped cleanly")
    return code


async def _serve(datadir: Path, config: Config, keystore: Keystore,
                 stop: asyncio.Event) -> int:
    api = ApiServer(datadir, host=config.api_host, port=config.api_port, stop=stop,
                    peer_id=keystore.identity.peer_id, any_port_if_busy=True)
    db: Database | None = None
    try:
        try:
            await api.start()
        except OSError as exc:
            log.error("cannot start the HTTP API on %s:%d: %s", config.api_host,
                      config.api_port, exc)
            return 1
        db = Database.open(datadir / DB_FILE)
        # libp2p takes most of a second to import: off the loop, so the API answers meanwhile
        host_module = await asyncio.to_thread(importlib.import_module, "node.p2p.libp2p_host.host")
        try:
            host = host_module.Libp2pHost(keystore.identity, config.p2p_host, config.p2p_port,
                                          relay_via=config.relay_via)
        except ValueError as exc:  # a relay_via entry libp2p cannot use
            log.error("bad relay_via: %s", exc)
            return 1
        node = Node(keystore.identity, db, host, datadir=datadir,
                    escrow=escrow_config(config, keystore), keep=keep_policy(config))
        try:
            await node.start(dht_host=config.dht_host, dht_port=config.dht_port)
        except (OSError, P2PError) as exc:
            log.error("cannot start the node: %s", exc)
            await node.close()
            return 1
        api.attach(node)
        await node.run(stop, bootstrap_addrs(datadir, config))
    finally:
        await api.stop()
        if db is not None:
            db.close()
    return 0
