"""A DHT node: the kademlia package's `Server` storing signed records with verified contacts.

Reads always ask the network (no local short-circuit) and keep the highest valid seq; values are
unioned per slot for multi-value keys. `serve()` runs upkeep (republish, re-replication, bucket
refresh, expiry, bootstrap retries) and is meant to live in the node's TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from kademlia.network import Server
from kademlia.node import Node

from dht.handover import Handover
from dht.lookup import Answer, Lookup, LookupResult
from dht.protocol import MarketProtocol, Result
from dht.rtt import RttEstimator
from dht.storage import RecordStore
from dht.validate import valid_records, validate_for_key
from p2pmarket.identity import Identity
from p2pmarket.wire.dhtkeys import is_multi, record_key, record_slot, renews
from p2pmarket.wire.records import AnyRecord, RecordError

log = logging.getLogger(__name__)

REPUBLISH_EVERY = 3600.0
REFRESH_EVERY = 900.0
UPKEEP_EVERY = 30.0
MAX_BACKOFF = 300.0
STORE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
SOCKET_BUFFER = 4 * 1024 * 1024


class DhtError(Exception):
    """A DHT operation could not be done (not listening, nobody to talk to)."""


@dataclass(slots=True)
class PutReport:
    key: bytes
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    stored_locally: bool = False

    @property
    def ok(self) -> bool:
        """Some other node holds it now (our own copy alone does not keep a record alive)."""
        return self.accepted > 0


@dataclass(slots=True)
class GetReport:
    """The records found under a key, best first, plus what the lookup cost."""

    records: list[AnyRecord]
    rounds: int
    rpcs: int
    invalid_values: int


@dataclass(slots=True)
class DhtStatus:
    node_id: str
    listening: tuple[str, int] | None
    contacts: int
    records_held: int
    bootstrapped: bool
    bootstrap_addrs: int
    next_bootstrap_retry: float | None
    stats: dict[str, int]


class DhtNode(Server):
    protocol_class = MarketProtocol
    protocol: MarketProtocol | None
    transport: asyncio.DatagramTransport | None

    def __init__(self, identity: Identity, store: RecordStore, *, ksize: int = 20,
                 alpha: int = 3, quorum: int = 2, send_delay: float = 0.0,
                 rtt: RttEstimator | None = None, clock: Callable[[], float] = time.time,
                 republish_every: float = REPUBLISH_EVERY) -> None:
        super().__init__(ksize=ksize, alpha=alpha, node_id=identity.node_id, storage=store)
        self.identity = identity
        self.records = store
        self.quorum = quorum
        self.send_delay = send_delay
        self.rtt = rtt or RttEstimator()
        self.clock = clock
        self.republish_every = republish_every
        self.bootstrap_addrs: list[tuple[str, int]] = []
        self.bootstrapped = False
        self._next_bootstrap: float | None = None
        self._backoff = 1.0
        self.handover = Handover(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def _create_protocol(self) -> MarketProtocol:
        protocol = MarketProtocol(self.identity, self.records, self.ksize, rtt=self.rtt,
                                  send_delay=self.send_delay, clock=self.clock)
        protocol.on_new_contact = self.handover.offer
        return protocol

    async def listen(self, port: int, interface: str = "127.0.0.1") -> None:
        """Bind the UDP socket (port 0 picks a free one; see `address`)."""
        loop = asyncio.get_running_loop()
        self.transport, self.protocol = await loop.create_datagram_endpoint(
            self._create_protocol, local_addr=(interface, port))
        sock = self.transport.get_extra_info("socket")
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # bursts of answers (value pages) overflow the default ~200 KiB receive buffer and
            # the kernel drops them silently; the kernel caps this at net.core.rmem_max
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        log.info("DHT node %s listening on %s", self.identity.node_id.hex()[:12], self.address)

    @property
    def address(self) -> tuple[str, int]:
        if self.transport is None:
            raise DhtError("the DHT node is not listening")
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self.handover.cancel()
        if self.protocol is not None:
            self.protocol.close()
        self.transport = None

    def _proto(self) -> MarketProtocol:
        if self.protocol is None:
            raise DhtError("the DHT node is not listening")
        return self.protocol

    # -- joining -----------------------------------------------------------------------------

    async def bootstrap(self, addrs: Iterable[tuple[str, int]]) -> int:
        """Join through the given peers; returns how many contacts the table holds after."""
        proto = self._proto()
        self.bootstrap_addrs = list(dict.fromkeys(self.bootstrap_addrs + list(addrs)))
        resolved = await _resolve(self.bootstrap_addrs)
        pings = [proto.request(a, "ping", self.node.id) for a in resolved if a != self.address]
        seeds = []
        for addr, (ok, answer) in zip(resolved, await asyncio.gather(*pings), strict=False):
            if ok and isinstance(answer, bytes) and len(answer) == 20:
                node = Node(answer, addr[0], addr[1])
                proto.welcome_if_new(node)
                seeds.append(node)
        if seeds:
            await Lookup(proto, self.node.id, seeds, ksize=self.ksize, alpha=self.alpha).run()
        contacts = self.contact_count()
        self.bootstrapped = bool(seeds)
        if self.bootstrapped:
            self._backoff, self._next_bootstrap = 1.0, None
        elif self.bootstrap_addrs:
            self._next_bootstrap = self.clock() + self._backoff
            log.warning("no bootstrap peer answered; retrying in %.0f s", self._backoff)
            self._backoff = min(MAX_BACKOFF, self._backoff * 2)
        return contacts

    def contact_count(self) -> int:
        return sum(len(b) for b in self._proto().router.buckets)

    def neighbours(self) -> list[tuple[str, int]]:
        return [(n.ip, n.port) for n in self._proto().router.find_neighbors(self.node)]

    # -- writing -----------------------------------------------------------------------------

    async def put(self, record: AnyRecord, *, remember: bool = True) -> PutReport:
        """Store a signed record on the k nodes closest to its key (and here if we are one)."""
        proto = self._proto()
        key = record_key(record)
        validate_for_key(key, record.raw, now=self.clock())
        report = PutReport(key)
        nearest = proto.router.find_neighbors(Node(key), k=self.ksize)
        nodes: list[Node] = []
        if nearest:
            found = await Lookup(proto, key, nearest, ksize=self.ksize, alpha=self.alpha,
                                 patient=True).run()
            nodes = found.closest
        target = Node(key)
        if len(nodes) < self.ksize or self.node.distance_to(target) < max(
                n.distance_to(target) for n in nodes):
            report.stored_locally = self.records.put(key, record, now=self.clock()).value in (
                "stored", "refreshed")
        pending: list[Node] = nodes
        again: dict[bytes, str] = {}  # node id -> why it is asked again
        timed_out: set[bytes] = set()
        for delay in STORE_RETRY_DELAYS:
            answers = await asyncio.gather(
                *(proto.call_node(n, "store", self.node.id, key, record.raw) for n in pending))
            again, retry = {}, []
            for node, (ok, answer) in zip(pending, answers, strict=True):
                if ok and answer in ("stored", "refreshed"):
                    report.accepted += 1
                elif ok and isinstance(answer, dict) and answer.get("error") == "rate-limited":
                    again[node.id] = "rate-limited"  # the peer asked us to slow down
                    retry.append(node)
                elif not ok and node.id not in timed_out:  # a lost datagram: one more try
                    timed_out.add(node.id)
                    again[node.id] = "timeout"
                    retry.append(node)
                else:
                    reason = str(answer) if ok else "timeout"
                    report.refused[reason] = report.refused.get(reason, 0) + 1
            pending = retry
            if not pending:
                break
            await asyncio.sleep(delay)
        for reason in again.values() if pending else ():
            report.refused[reason] = report.refused.get(reason, 0) + 1
        if remember and record.publisher == self.identity.public:
            self.records.remember_published(key, record, now=self.clock())
        return report

    # -- reading -----------------------------------------------------------------------------

    async def lookup(self, key: bytes) -> LookupResult:
        proto = self._proto()
        nearest = proto.router.find_neighbors(Node(key), k=self.ksize)
        if not nearest:
            return LookupResult(closest=[])
        return await Lookup(proto, key, nearest, ksize=self.ksize, alpha=self.alpha,
                            want_values=True, quorum=self.quorum).run()

    async def get(self, key: bytes) -> AnyRecord | None:
        """The valid record with the highest seq under a single-value key, or None."""
        report = await self.get_report(key)
        return report.records[0] if report.records else None

    async def get_all(self, key: bytes, *, max_pages: int = 4) -> list[AnyRecord]:
        """Every live entry under a (multi-value) key, unioned across replicas."""
        return (await self.get_report(key, max_pages=max_pages)).records

    async def get_report(self, key: bytes, *, max_pages: int = 1) -> GetReport:
        result = await self.lookup(key)
        answers = list(result.answers)
        local = self._local_records(key)
        if local:
            answers.append(Answer(self.node, local, None))
        if max_pages > 1:
            answers += await self._more_pages(key, result.answers, max_pages)
        best = _best_per_slot(r for a in answers for r in a.records)
        records = sorted(best.values(), key=lambda r: (-r.seq, r.publisher))
        if records and not is_multi(records[0]):
            records = records[:1]
            self._repair(key, records[0], result)
        return GetReport(records, result.rounds, result.rpcs, result.invalid_values)

    def _local_records(self, key: bytes) -> list[AnyRecord]:
        return valid_records(key, list(self.records.values(key, now=self.clock())),
                             now=self.clock())[0]

    async def _more_pages(self, key: bytes, answers: list[Answer], max_pages: int,
                          replicas: int = 2) -> list[Answer]:
        """Follow the paging of the replicas that have the most to say (union of them)."""
        sources = [a for a in sorted(answers, key=lambda a: -len(a.records))
                   if a.next is not None][:replicas]
        pages = await asyncio.gather(*(self._pages_from(key, a, max_pages) for a in sources))
        return [answer for got in pages for answer in got]

    async def _pages_from(self, key: bytes, source: Answer, max_pages: int) -> list[Answer]:
        more: list[Answer] = []
        offset, pages = source.next, 1
        while offset is not None and pages < max_pages:
            ok, answer = await self._proto().call_node(
                source.node, "find_value", self.node.id, key, offset)
            if not ok or not isinstance(answer, dict):
                break
            records, _ = valid_records(key, answer.get("values"), now=self.clock())
            more.append(Answer(source.node, records, None))
            nxt = answer.get("next")
            offset, pages = (nxt if isinstance(nxt, int) and nxt > offset else None), pages + 1
        return more

    def _repair(self, key: bytes, best: AnyRecord, result: LookupResult) -> None:
        """Hand the best record to close nodes that answered without it (read repair)."""
        proto = self._proto()
        stale = [a.node for a in result.answers if a.records and a.records[0].seq < best.seq]
        for node in (stale + result.without_value)[:2]:
            proto.call_node(node, "store", self.node.id, key, best.raw)

    # -- upkeep ------------------------------------------------------------------------------

    async def republish(self) -> int:
        """Re-put this node's own records that were last published long enough ago."""
        due = self.records.due_for_republish(self.republish_every, now=self.clock())
        done = 0
        for key, raw in due:
            try:
                record = validate_for_key(key, raw, now=self.clock())
            except RecordError:
                continue
            if (await self.put(record, remember=False)).ok:
                self.records.mark_republished(key, raw, now=self.clock())
                done += 1
        return done

    async def refresh(self) -> None:
        proto = self._proto()
        for node_id in proto.get_refresh_ids():
            nearest = proto.router.find_neighbors(Node(node_id), self.alpha)
            if nearest:
                await Lookup(proto, node_id, nearest, ksize=self.ksize, alpha=self.alpha).run()

    async def upkeep(self) -> None:
        self.records.cull(now=self.clock())
        if self._next_bootstrap is not None and self.clock() >= self._next_bootstrap:
            await self.bootstrap([])
        await self.republish()

    async def serve(self, every: float = UPKEEP_EVERY) -> None:
        """Upkeep forever (cancel to stop): expiry, bootstrap retries, republish, refresh."""
        last_refresh = self.clock()
        while True:
            await asyncio.sleep(every * random.uniform(0.8, 1.2))
            await self.upkeep()
            if self.clock() - last_refresh >= REFRESH_EVERY:
                await self.refresh()
                last_refresh = self.clock()

    def status(self) -> DhtStatus:
        proto = self.protocol
        return DhtStatus(
            node_id=self.identity.node_id.hex(),
            listening=self.address if self.transport is not None else None,
            contacts=self.contact_count() if proto else 0,
            records_held=self.records.count(),
            bootstrapped=self.bootstrapped,
            bootstrap_addrs=len(self.bootstrap_addrs),
            next_bootstrap_retry=self._next_bootstrap,
            stats=asdict(proto.stats) if proto else {},
        )


def _best_per_slot(records: Iterable[AnyRecord]) -> dict[tuple[bytes, str], AnyRecord]:
    best: dict[tuple[bytes, str], AnyRecord] = {}
    for record in records:
        slot = record_slot(record)
        held = best.get(slot)
        if held is None or record.seq > held.seq or renews(record, held):
            best[slot] = record
    return best


async def _resolve(addrs: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    loop = asyncio.get_running_loop()
    out: list[tuple[str, int]] = []
    for host, port in addrs:
        try:
            infos = await loop.getaddrinfo(host, port, family=socket.AF_INET,
                                           type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("cannot resolve bootstrap peer %s:%d: %s", host, port, exc)
            continue
        out.extend((str(info[4][0]), int(info[4][1])) for info in infos[:1])
    return out


__all__ = ["DhtError", "DhtNode", "DhtStatus", "GetReport", "PutReport", "Result"]
