"""Handing held records over to a new close contact (Kademlia paper 2.5), paced by timers.

One contact at a time, HANDOVER_BATCH stores and HANDOVER_SCAN examined keys per step, a pause
between steps: a burst of hundreds of STOREs would overflow the newcomer's socket and our own,
and scanning every held key at once would stall the event loop.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from kademlia.node import Node

from dht.storage import RecordStore

if TYPE_CHECKING:
    from dht.protocol import MarketProtocol

HANDOVER_BATCH = 10
HANDOVER_PAUSE = 0.1
HANDOVER_SCAN = 200
MAX_HANDOVER_QUEUE = 64


class Holder(Protocol):
    """What the handover needs of the DHT server (`dht.server.DhtNode` is one): typed here so
    this module does not import the server that owns it."""

    node: Node
    ksize: int
    records: RecordStore
    protocol: MarketProtocol | None
    transport: Any
    clock: Callable[[], float]


class Handover:
    def __init__(self, server: Holder) -> None:
        self.server = server
        self._queue: collections.deque[Node] = collections.deque()
        self._keys: Iterator[bytes] | None = None
        self._timer: asyncio.Handle | None = None

    def offer(self, node: Node) -> None:
        """A new contact entered a bucket: queue the records it should hold."""
        server = self.server
        proto = server.protocol
        if proto is None:
            return
        close = {n.id for n in proto.router.find_neighbors(server.node, k=server.ksize)}
        if node.id not in close:
            return  # only a newcomer among our k closest can be a closer home for our records
        if len(self._queue) >= MAX_HANDOVER_QUEUE:
            return  # republishing covers the rest
        self._queue.append(node)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_soon(self._step)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._keys = None

    def _step(self) -> None:
        self._timer = None
        server = self.server
        proto = server.protocol
        if proto is None or server.transport is None:
            self.cancel()
            return
        sent = scanned = 0
        while self._queue and sent < HANDOVER_BATCH and scanned < HANDOVER_SCAN:
            node = self._queue[0]
            if self._keys is None:
                self._keys = iter(server.records.keys(now=server.clock()))
            key = next(self._keys, None)
            if key is None:
                self._queue.popleft()
                self._keys = None
                continue
            scanned += 1
            if self._should_hold(proto, node, key):
                for raw in server.records.values(key, now=server.clock()):
                    proto.call_node(node, "store", server.node.id, key, raw)
                    sent += 1
        if self._queue:
            self._timer = asyncio.get_running_loop().call_later(HANDOVER_PAUSE, self._step)

    def _should_hold(self, proto: MarketProtocol, node: Node, key: bytes) -> bool:
        """The newcomer is closer than our k-th neighbour for the key and we are the closest
        holder we know, so one node hands each record over."""
        target = Node(key)
        neighbours = proto.router.find_neighbors(target, k=self.server.ksize)
        if not neighbours:
            return True
        newcomer_close = node.distance_to(target) < neighbours[-1].distance_to(target)
        we_closest = self.server.node.distance_to(target) < neighbours[0].distance_to(target)
        return bool(newcomer_close and we_closest)
