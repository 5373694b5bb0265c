"""Start N DHT nodes in one process on 127.0.0.1, for tests and benchmarks.

Each node gets a fresh identity and an in-memory database (or one made by `db_factory`); an
optional one-way latency is added to every datagram a node sends.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from dht.rtt import RttEstimator
from dht.server import DhtNode
from dht.storage import RecordStore
from p2pmarket.identity import Identity
from p2pmarket.storage import Database


def make_node(identity: Identity | None = None, *, db: Database | None = None,
              latency_ms: float = 0.0, ksize: int = 20, alpha: int = 3,
              rtt_floor: float = 0.25) -> DhtNode:
    """A DHT node (not yet listening) with its own in-memory database unless one is given."""
    return DhtNode(identity or Identity.generate(), RecordStore(db or Database.open(":memory:")),
                   ksize=ksize, alpha=alpha, send_delay=latency_ms / 1000,
                   rtt=RttEstimator(floor=rtt_floor))


async def start_node(node: DhtNode, bootstrap: list[tuple[str, int]] | None = None) -> DhtNode:
    await node.listen(0, "127.0.0.1")
    if bootstrap:
        await node.bootstrap(bootstrap)
    return node


async def join_all(nodes: list[DhtNode], batch: int = 25) -> None:
    """Bootstrap every node after the first through a random already-joined node."""
    for node in nodes:
        if node.transport is None:
            await node.listen(0, "127.0.0.1")
    joined = [nodes[0]]
    for start in range(1, len(nodes), batch):
        group = nodes[start:start + batch]
        await asyncio.gather(*(n.bootstrap([random.choice(joined).address]) for n in group))
        joined.extend(group)


@asynccontextmanager
async def dht_network(n: int, *, latency_ms: float = 0.0, ksize: int = 20, alpha: int = 3,
                      db_factory: Callable[[int], Database] | None = None
                      ) -> AsyncIterator[list[DhtNode]]:
    """N joined nodes; all are stopped when the block ends."""
    nodes = [make_node(db=db_factory(i) if db_factory else None, latency_ms=latency_ms,
                       ksize=ksize, alpha=alpha) for i in range(n)]
    try:
        await join_all(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        await asyncio.sleep(0)
        for node in nodes:
            node.records.db.close()
