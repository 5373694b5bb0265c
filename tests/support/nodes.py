"""`make_node()`: a whole `Node` (not started) over `<datadir>/node.db`, as the tests build one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from node.app import Node
from node.escrow.driver import EscrowConfig
from node.p2p.messenger import RetryPolicy
from node.p2p.transport import Host
from p2pmarket.identity import Identity
from p2pmarket.storage import Database


def libp2p_host(identity: Identity) -> Host:
    from node.p2p.libp2p_host.host import Libp2pHost  # trio and libp2p only for tests using them

    return Libp2pHost(identity)


def make_node(datadir: Path, *, policy: RetryPolicy, identity: Identity | None = None,
              host: Callable[[Identity], Host] = libp2p_host,
              escrow: EscrowConfig | None = None) -> Node:
    """The node's caller starts it and, at the end, closes `node.db`."""
    identity = identity or Identity.generate()
    datadir.mkdir(parents=True, exist_ok=True)
    db = Database.open(datadir / "node.db")
    return Node(identity, db, host(identity), datadir=datadir, policy=policy, escrow=escrow)
