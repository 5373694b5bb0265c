"""Listing images that outlive the seller's node: readers fetch from any holder, sellers hand
their images to keepers.

`ImageFinder.get` tries this node's store, then the peer the caller names (the seller), then the
holders announced in the DHT, checking each answer against the hash; a holder that sent wrong
bytes is skipped for a while. `ImageReplicator` offers each image of our live listings to a few
keepers (the closest to the image's key among those in the keepers directory) when a listing is
published, and checks again every few hours, since keepers evict and come and go.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable

import msgspec

from dht.server import DhtError
from node.market.listings import Listings
from node.p2p.blobs import BlobError, BlobMismatch, BlobService, BlobUnavailable
from node.p2p.holders import Holders
from node.p2p.ids import peer_id_of
from node.p2p.peers import PeerDirectory
from node.p2p.transport import KEEP_PROTOCOL, P2PError
from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import Listing
from p2pmarket.wire.dhtkeys import blob_key
from p2pmarket.wire.records import Record

log = logging.getLogger(__name__)

MAX_HOLDERS_TRIED = 6  # holders asked for one image before giving up
FETCH_TIMEOUT = 20.0
BAD_HOLDER_FOR = 3600.0  # a holder that sent wrong bytes is not asked again for this long
REPLICAS = 3  # keepers that should hold each image of ours
MAX_OFFERS = 8  # keepers asked per image and round
OFFER_TIMEOUT = 60.0  # the keeper pulls the bytes before it answers
RECHECK_EVERY = 6 * 3600.0
RETRY_EVERY = 600.0  # some image found too few keepers: look again this soon


def closest_keepers(digest: bytes, keepers: Iterable[bytes]) -> list[bytes]:
    """Keepers' public keys by XOR distance of their DHT node id to the image's key, so every
    publisher of one image picks the same few."""
    target = int.from_bytes(blob_key(digest), "big")
    return sorted(keepers, key=lambda k: int.from_bytes(hashlib.sha1(k).digest(), "big") ^ target)


class ImageFinder:
    def __init__(self, identity: Identity, blobs: BlobService, holders: Holders,
                 peers: PeerDirectory, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.identity, self.blobs, self.holders, self.peers = identity, blobs, holders, peers
        self.clock = clock
        self._bad: dict[bytes, float] = {}  # holder -> until when it is skipped

    async def get(self, digest: bytes, hint: bytes | None = None) -> bytes:
        """The image's bytes, from here or any holder; `BlobUnavailable` when nobody gave them."""
        cached = self.blobs.store.get(digest)
        if cached is not None:
            return cached
        failures: list[str] = []
        tried: set[bytes] = {self.identity.public}
        if hint is not None and hint not in tried:
            tried.add(hint)
            data = await self._try(hint, digest, failures)
            if data is not None:
                return data
        try:
            holders = await self.holders.find(digest)
        except DhtError as exc:
            failures.append(f"DHT: {exc}")
            holders = []
        now = self.clock()
        fresh = [h for h in holders if h not in tried and self._bad.get(h, 0.0) <= now]
        for holder in fresh[:MAX_HOLDERS_TRIED]:
            data = await self._try(holder, digest, failures)
            if data is not None:
                return data
        what = "; ".join(failures) or "no holder is known"
        raise BlobUnavailable(f"image {digest.hex()} is unavailable ({what})", failures)

    async def _try(self, public: bytes, digest: bytes, failures: list[str]) -> bytes | None:
        peer_id = peer_id_of(public)
        try:
            if await self.peers.resolve(public) is None:
                failures.append(f"{peer_id}: no address known")
                return None
            return await self.blobs.fetch(peer_id, digest, timeout=FETCH_TIMEOUT)
        except BlobMismatch as exc:
            self._bad[public] = self.clock() + BAD_HOLDER_FOR
            log.warning("%s", exc)
            failures.append(f"{peer_id}: sent wrong bytes")
        except (BlobError, P2PError, DhtError, ValueError) as exc:
            # BlobMissing, unreachable, an address libp2p refuses: ask the next holder
            failures.append(f"{peer_id}: {exc}")
        return None


class ImageReplicator:
    """Seller side: hand our listings' images to keepers; announce ourselves as a holder."""

    def __init__(self, identity: Identity, listings: Listings, blobs: BlobService,
                 holders: Holders, peers: PeerDirectory, *, replicas: int = REPLICAS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.identity, self.listings, self.blobs = identity, listings, blobs
        self.holders, self.peers, self.replicas, self.clock = holders, peers, replicas, clock
        self._placed: dict[tuple[bytes, bytes], float] = {}  # (listing raw hash, digest) -> when
        self.unplaced = 0  # images the last round could not give to enough keepers
        self._wake = asyncio.Event()

    def kick(self, _record: Record[Listing] | None = None) -> None:
        """A listing of ours was published: place its images now."""
        self._wake.set()

    def own_images(self) -> set[bytes]:
        """Digests of our live listings' images that we have (announced as holder records)."""
        return {i.sha256 for r in self.listings.mine() for i in r.body.images
                if self.blobs.store.has(i.sha256)}

    async def run(self) -> None:
        """Place images when kicked, and re-check every few hours; cancel to stop."""
        while True:
            self._wake.clear()
            if self.peers.published:
                try:
                    await self.replicate()
                except DhtError as exc:
                    log.info("could not place listing images: %s", exc)
            wait = (5.0 if not self.peers.published
                    else RETRY_EVERY if self.unplaced else RECHECK_EVERY)
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def replicate(self) -> int:
        """Offer each image of our live listings not placed lately; returns how many images
        are held by `replicas` keepers now."""
        now = self.clock()
        due: list[tuple[Record[Listing], bytes]] = []
        for record in self.listings.mine():
            version = hashlib.sha256(record.raw).digest()
            for image in record.body.images:
                placed = self._placed.get((version, image.sha256))
                if (placed is None or now - placed >= RECHECK_EVERY) and self.blobs.store.has(
                        image.sha256):
                    due.append((record, image.sha256))
        self.unplaced = len(due)
        if not due:
            return 0
        keepers = [r.publisher for r in await self.holders.keepers()]
        if not keepers:
            log.info("no image keepers known: %d images stay on this node only", len(due))
            return 0
        done = 0
        for record, digest in due:
            if await self.place(record, digest, keepers) >= min(self.replicas, len(keepers)):
                self._placed[(hashlib.sha256(record.raw).digest(), digest)] = now
                done += 1
        self.unplaced = len(due) - done
        return done

    async def place(self, record: Record[Listing], digest: bytes, keepers: list[bytes]) -> int:
        """Offer one image to the closest keepers until `replicas` keep it; returns how many."""
        offer = msgspec.msgpack.encode([record.raw, digest])
        kept = 0
        for keeper in closest_keepers(digest, keepers)[:MAX_OFFERS]:
            if kept >= self.replicas:
                break
            reply = await self._offer(keeper, offer)
            if reply == "kept":
                kept += 1
            else:
                log.info("keeper %s did not keep image %s: %s", peer_id_of(keeper),
                         digest.hex()[:16], reply)
        return kept

    async def _offer(self, keeper: bytes, offer: bytes) -> str:
        peer_id = peer_id_of(keeper)
        try:
            if await self.peers.resolve(keeper) is None:
                return "no address known"
            answer = await self.blobs.host.request(peer_id, KEEP_PROTOCOL, offer,
                                                   timeout=OFFER_TIMEOUT, max_response=256)
            reply = msgspec.msgpack.decode(answer, type=list[str])
        except (P2PError, DhtError, ValueError, msgspec.MsgspecError) as exc:
            return str(exc)
        return reply[0] if reply[:1] == ["kept"] else " ".join(reply) or "empty answer"

