"""Peer addresses through the DHT: publish this node's signed `peer` record, resolve others'.

A `peer` record carries the addresses the node is reachable at (direct, or through relays) and
its X25519 key for sealed mail; it is re-published before it expires and whenever the
addresses change.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from dht.server import DhtNode
from node.p2p.ids import peer_id_of
from node.p2p.seal import encryption_public
from node.p2p.transport import Host
from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import Peer
from p2pmarket.wire.dhtkeys import single_key
from p2pmarket.wire.records import Record, sign_record

log = logging.getLogger(__name__)

PEER_TTL = 2 * 86_400
REPUBLISH_AFTER = 12 * 3600
CACHE_FOR = 300.0


@dataclass(frozen=True, slots=True)
class PeerInfo:
    public: bytes
    addrs: tuple[str, ...]
    enc_key: bytes
    fetched: float


class PeerDirectory:
    def __init__(self, identity: Identity, host: Host, dht: DhtNode | None) -> None:
        self.identity, self.host, self.dht = identity, host, dht
        self._cache: dict[bytes, PeerInfo] = {}
        self._published: tuple[tuple[str, ...], float] | None = None
        # our latest peer record and when a DHT node stored it (None: not stored), for the owner
        self.mine: Record[Peer] | None = None
        self.published_at: float | None = None

    async def publish(self, *, force: bool = False) -> bool:
        """(Re)publish our peer record if the addresses changed or it is getting old."""
        if self.dht is None:
            return False
        addrs = tuple(self.host.advertised_addrs()[:8])
        now = time.time()
        if (not force and self._published is not None and self._published[0] == addrs
                and now - self._published[1] < REPUBLISH_AFTER):
            return True
        body = Peer(addrs=addrs, enc_key=encryption_public(self.identity))
        record = sign_record(self.identity, body, seq=int(now * 1000), ttl=PEER_TTL)
        report = await self.dht.put(record)
        self.mine, self.published_at = record, now if report.ok else None
        if report.ok:
            self._published = (addrs, now)
        else:
            log.warning("could not publish our peer record (%s)", report.refused)
        return report.ok

    @property
    def published(self) -> bool:
        """Our peer record went out at least once (others can resolve our address)."""
        return self._published is not None

    def remember(self, public: bytes, addrs: tuple[str, ...], enc_key: bytes) -> PeerInfo:
        info = PeerInfo(public, addrs, enc_key, time.time())
        self._cache[public] = info
        self.host.add_peer(peer_id_of(public), list(addrs))
        return info

    def resolved_now(self, public: bytes) -> bool:
        """True when `resolve(public)` would answer without asking the network."""
        cached = self._cache.get(public)
        return self.dht is None or (cached is not None and time.time() - cached.fetched < CACHE_FOR)

    async def resolve(self, public: bytes, *, fresh: bool = False) -> PeerInfo | None:
        """The peer's addresses and encryption key, from cache or the DHT."""
        cached = self._cache.get(public)
        if cached is not None and not fresh and time.time() - cached.fetched < CACHE_FOR:
            return cached
        if self.dht is None:
            return cached
        record = await self.dht.get(single_key("peer", public))
        if record is None or not isinstance(record.body, Peer):
            return cached
        return self.remember(public, record.body.addrs, record.body.enc_key)
