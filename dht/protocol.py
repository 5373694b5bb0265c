"""The DHT wire protocol: the kademlia package's protocol with verified node ids and signed values.

Compared with the stock `KademliaProtocol`: hostile datagrams are dropped, not raised; every call
has an RTT-based timeout; a contact enters the routing table only after proving the Ed25519 key
its id is derived from; STORE accepts only records bound to their key; FIND_VALUE answers a page
of values plus the closest nodes; per-source rate limits; no fire-and-forget tasks (outbound calls
are futures settled by a response or a timer, all cancelled on close).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable

from dht.ratelimit import RateLimiter
from dht.rtt import RttEstimator
from dht.storage import PutResult, RecordStore
from dht.validate import validate_for_key
from p2pmarket.identity import Identity, node_id_from_public, verify
from p2pmarket.storage import StorageError
from p2pmarket.wire.dhtkeys import KEY_SIZE
from p2pmarket.wire.records import RecordError

log = logging.getLogger(__name__)

REQUEST, RESPONSE = b"\x00", b"\x01"
MAX_REQUEST = 8192
MAX_DATAGRAM = 65_507
IDENTIFY_DOMAIN = b"p2pmarket/v1/dht-identify\x00"
FAILURES_BEFORE_EVICTION = 2
DEAD_FOR = 60.0  # seconds a failed contact is skipped by lookups
MAX_VERIFYING = 256

Addr = tuple[str, int]
Result = tuple[bool, Any]


class BadRequest(ValueError):
    """A request whose arguments do not have the expected shape."""


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Result]
    timer: asyncio.TimerHandle
    addr: Addr
    started: float


@dataclass(slots=True)
class Stats:
    rpcs_sent: int = 0
    timeouts: int = 0
    bad_datagrams: int = 0
    rate_limited: int = 0
    refused_stores: int = 0
    rejected_ids: int = 0


def _bytes20(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != KEY_SIZE:
        raise BadRequest("expected a 20-byte id")
    return value


def parse_nodes(value: object, limit: int) -> list[Node]:
    """Node triples from a peer's answer; malformed entries are skipped."""
    nodes: list[Node] = []
    if not isinstance(value, list):
        return nodes
    for item in value[:limit]:
        if (isinstance(item, list) and len(item) == 3 and isinstance(item[0], bytes)
                and len(item[0]) == KEY_SIZE and isinstance(item[1], str)
                and isinstance(item[2], int) and 0 < item[2] < 65536):
            nodes.append(Node(item[0], item[1], item[2]))
    return nodes


class Router(RoutingTable):
    """Routing table whose full-bucket ping goes through the protocol's tracked calls, with an
    exact nearest-neighbour search (the stock traversal stops early at the table's edge and
    misses buckets, so puts and gets started from it can miss the true k closest)."""

    protocol: MarketProtocol

    def add_contact(self, node: Node) -> bool:
        """Add or refresh a contact; True when it is in a bucket (not a replacement cache)."""
        index = self.get_bucket_for(node)
        bucket = self.buckets[index]
        if bucket.add_node(node):
            return True
        if bucket.has_in_range(self.node) or bucket.depth() % 5 != 0:
            self.split_bucket(index)
            return self.add_contact(node)
        # full: ping the least recently seen; if it fails it is evicted, node replaces it
        self.protocol.call_node(bucket.head(), "ping", self.node.id)
        return False

    def find_neighbors(self, node: Node, k: int | None = None,
                       exclude: Node | None = None) -> list[Node]:
        want = k or self.ksize
        target = node.long_id
        contacts = [n for bucket in self.buckets for n in bucket.nodes.values()]
        if exclude is not None:
            contacts = [n for n in contacts if not n.same_home_as(exclude)]
        best = heapq.nsmallest(want + 1, contacts, key=lambda n: n.long_id ^ target)
        return [n for n in best if n.id != node.id][:want]


class MarketProtocol(KademliaProtocol):
    def __init__(self, identity: Identity, store: RecordStore, ksize: int, *,
                 rtt: RttEstimator | None = None, send_delay: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        source = Node(identity.node_id)
        super().__init__(source, store, ksize)
        self.router = Router(self, ksize, source)
        self.identity = identity
        self.records = store
        self.rtt = rtt or RttEstimator()
        self.send_delay = send_delay
        self.clock = clock
        self.stats = Stats()
        # generous enough for a seller (re)publishing hundreds of listings, not for a flood
        self.store_limit = RateLimiter(rate=200, burst=1000)
        self.find_limit = RateLimiter(rate=500, burst=1000)
        self._pending: dict[bytes, _Pending] = {}
        self._verified: dict[bytes, Addr] = {}
        self._welcomed: set[bytes] = set()
        self._verifying: set[tuple[bytes, Addr]] = set()
        self._failures: dict[bytes, int] = {}
        self._dead_until: dict[bytes, float] = {}
        self._handlers: dict[str, Callable[..., Any]] = {
            "ping": self.rpc_ping, "identify": self.rpc_identify, "store": self.rpc_store,
            "find_node": self.rpc_find_node, "find_value": self.rpc_find_value,
        }
        self.on_new_contact: Callable[[Node], None] | None = None

    # -- datagrams ---------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if not 22 <= len(data) <= MAX_DATAGRAM:
            self.stats.bad_datagrams += 1
            return
        kind, msg_id = data[:1], data[1:21]
        try:
            payload = msgpack.unpackb(data[21:], raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError):
            self.stats.bad_datagrams += 1
            return
        if kind == REQUEST:
            self._handle_request(msg_id, payload, addr)
        elif kind == RESPONSE:
            self._handle_response(msg_id, payload, addr)
        else:
            self.stats.bad_datagrams += 1

    def _send(self, data: bytes, addr: Addr) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.send_delay > 0:
            asyncio.get_running_loop().call_later(self.send_delay, self._send_now, data, addr)
        else:
            self.transport.sendto(data, addr)

    def _send_now(self, data: bytes, addr: Addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def _handle_request(self, msg_id: bytes, payload: object, addr: Addr) -> None:
        if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], str)
                and isinstance(payload[1], list)):
            self.stats.bad_datagrams += 1
            return
        name, args = payload
        handler = self._handlers.get(name)
        if handler is None:
            self.stats.bad_datagrams += 1
            return
        limiter = self.store_limit if name == "store" else self.find_limit
        if not limiter.allow(addr):
            self.stats.rate_limited += 1
            response: object = {"error": "rate-limited"}
        else:
            try:
                response = handler(addr, *args)
            except (BadRequest, TypeError) as exc:
                self.stats.bad_datagrams += 1
                log.debug("bad %s request from %s: %s", name, addr, exc)
                return
        self._send(RESPONSE + msg_id + msgpack.packb(response, use_bin_type=True), addr)

    def _handle_response(self, msg_id: bytes, payload: object, addr: Addr) -> None:
        pending = self._pending.get(msg_id)
        if pending is None or pending.addr != addr:
            return
        del self._pending[msg_id]
        pending.timer.cancel()
        self.rtt.observe(asyncio.get_running_loop().time() - pending.started)
        if not pending.future.done():
            pending.future.set_result((True, payload))

    # -- outbound calls ----------------------------------------------------------------------

    def request(self, addr: Addr, name: str, *args: object,
                timeout: float | None = None) -> asyncio.Future[Result]:
        """Send one RPC; the future gives (True, answer) or (False, None) after the timeout."""
        loop = asyncio.get_running_loop()
        data = msgpack.packb([name, list(args)], use_bin_type=True)
        if len(data) > MAX_REQUEST:
            raise ValueError(f"{name} request is {len(data)} bytes; the limit is {MAX_REQUEST}")
        msg_id = os.urandom(20)
        future: asyncio.Future[Result] = loop.create_future()
        wait = self.rtt.hard_timeout() if timeout is None else timeout
        timer = loop.call_later(wait, self._expire, msg_id)
        self._pending[msg_id] = _Pending(future, timer, addr, loop.time())
        self.stats.rpcs_sent += 1
        self._send(REQUEST + msg_id + data, addr)
        return future

    def _expire(self, msg_id: bytes) -> None:
        pending = self._pending.pop(msg_id, None)
        if pending is not None and not pending.future.done():
            self.stats.timeouts += 1
            self.rtt.timed_out()
            pending.future.set_result((False, None))

    def call_node(self, node: Node, name: str, *args: object) -> asyncio.Future[Result]:
        """An RPC to a contact whose outcome feeds its health (eviction after failures)."""
        future = self.request((node.ip, node.port), name, *args)
        future.add_done_callback(lambda f: self._note_outcome(node, f))
        return future

    def _note_outcome(self, node: Node, future: asyncio.Future[Result]) -> None:
        if future.cancelled():
            return
        ok, _ = future.result()
        if ok:
            self._failures.pop(node.id, None)
            self._dead_until.pop(node.id, None)
            self.welcome_if_new(node)
            return
        count = self._failures.get(node.id, 0) + 1
        self._failures[node.id] = count
        if count >= FAILURES_BEFORE_EVICTION:  # one lost datagram is not a dead node
            self._dead_until[node.id] = self.clock() + DEAD_FOR
            self._evict(node)

    def _evict(self, node: Node) -> None:
        """Drop a failing contact, but only for a replacement: a node whose own loop is stalled
        sees everyone time out and must not empty its table (it would lose the network)."""
        bucket = self.router.buckets[self.router.get_bucket_for(node)]
        if node.id in bucket.nodes and bucket.replacement_nodes:
            log.debug("evicting %s after %d failed calls", node, self._failures[node.id])
            self.router.remove_contact(node)
            self._verified.pop(node.id, None)
            self._welcomed.discard(node.id)

    def is_dead(self, node: Node) -> bool:
        until = self._dead_until.get(node.id)
        return until is not None and until > self.clock()

    def close(self) -> None:
        for pending in self._pending.values():
            pending.timer.cancel()
            if not pending.future.done():
                pending.future.cancel()
        self._pending.clear()
        if self.transport is not None:
            self.transport.close()

    # -- contacts: admitted only after proving their key --------------------------------------

    def welcome_if_new(self, node: Node) -> None:
        if node.id == self.source_node.id or node.ip is None:
            return
        addr = (node.ip, node.port)
        if self._verified.get(node.id) == addr:
            in_bucket = self.router.add_contact(node)
            # hand records over once per contact that made it into a bucket (not each time a
            # replacement-cache node speaks: that would re-send every record on every message)
            if in_bucket and node.id not in self._welcomed:
                self._welcomed.add(node.id)
                if self.on_new_contact is not None:
                    self.on_new_contact(node)
            return
        key = (node.id, addr)
        if key in self._verifying or len(self._verifying) >= MAX_VERIFYING:
            return
        self._verifying.add(key)
        nonce = os.urandom(16)
        future = self.request(addr, "identify", nonce)
        future.add_done_callback(lambda f: self._identified(node, nonce, f))

    def _identified(self, node: Node, nonce: bytes, future: asyncio.Future[Result]) -> None:
        addr = (node.ip, node.port)
        self._verifying.discard((node.id, addr))
        if future.cancelled():
            return
        ok, answer = future.result()
        if not ok:
            return
        if (isinstance(answer, list) and len(answer) == 2 and isinstance(answer[0], bytes)
                and isinstance(answer[1], bytes) and node_id_from_public(answer[0]) == node.id
                and verify(answer[0], answer[1], IDENTIFY_DOMAIN + nonce)):
            self._verified[node.id] = addr
            self.welcome_if_new(node)
        else:
            self.stats.rejected_ids += 1
            log.info("refused contact %s: it did not prove its node id", addr)

    def is_verified(self, node_id: bytes) -> bool:
        return node_id in self._verified

    # -- handlers ----------------------------------------------------------------------------

    def _sender(self, addr: Addr, nodeid: object) -> Node:
        node = Node(_bytes20(nodeid), addr[0], addr[1])
        self.welcome_if_new(node)
        return node

    def rpc_ping(self, addr: Addr, nodeid: object) -> bytes:
        self._sender(addr, nodeid)
        return bytes(self.source_node.id)

    def rpc_identify(self, addr: Addr, nonce: object) -> list[bytes]:
        if not isinstance(nonce, bytes) or not 8 <= len(nonce) <= 64:
            raise BadRequest("identify needs an 8-64 byte nonce")
        return [self.identity.public, self.identity.sign(IDENTIFY_DOMAIN + nonce)]

    def rpc_store(self, addr: Addr, nodeid: object, key: object, value: object) -> str:
        self._sender(addr, nodeid)
        try:
            record = validate_for_key(_bytes20(key), value, now=self.clock())
        except RecordError as exc:
            self.stats.refused_stores += 1
            log.debug("refused STORE from %s: %s", addr, exc)
            return f"invalid: {type(exc).__name__}"
        try:
            result = self.records.put(_bytes20(key), record, now=self.clock())
        except StorageError as exc:
            log.warning("cannot store a record from %s: %s", addr, exc)
            return "error: storage"
        if result not in (PutResult.STORED, PutResult.REFRESHED):
            self.stats.refused_stores += 1
        return result.value

    def rpc_find_node(self, addr: Addr, nodeid: object, key: object) -> list[list[object]]:
        source = self._sender(addr, nodeid)
        neighbours = self.router.find_neighbors(Node(_bytes20(key)), exclude=source)
        return [[n.id, n.ip, n.port] for n in neighbours]

    def rpc_find_value(self, addr: Addr, nodeid: object, key: object,
                       offset: object = 0) -> dict[str, object] | list[list[object]]:
        dkey = _bytes20(key)
        if not isinstance(offset, int) or offset < 0:
            raise BadRequest("offset must be a non-negative int")
        nodes = self.rpc_find_node(addr, nodeid, dkey)
        page = self.records.page(dkey, offset, now=self.clock())
        if not page.values:
            return nodes
        return {"values": page.values, "next": page.next, "nodes": nodes}
