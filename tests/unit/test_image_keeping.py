"""The keep protocol and the image finder over the in-memory host: a keeper takes a seller's
listing image within its quotas, refuses with a typed answer, and readers skip a lying holder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import msgspec
import pytest

from node.market.images import ImageFinder, ImageReplicator
from node.market.listings import Listings
from node.p2p.blobs import BlobService, BlobStore, BlobUnavailable
from node.p2p.holders import Holders
from node.p2p.keepbook import KeepPolicy, Refusal
from node.p2p.keeper import Keeper
from node.p2p.memory import MemoryHost, MemoryNetwork
from node.p2p.peers import PeerDirectory
from node.p2p.transport import BLOB_PROTOCOL, KEEP_PROTOCOL
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import ImageRef, Listing
from p2pmarket.wire.records import AnyRecord, Record, sign_record
from tests.support.records import make_listing

PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Peer:
    identity: Identity
    host: MemoryHost
    blobs: BlobService
    peers: PeerDirectory


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[MemoryNetwork, list[Peer], list[Database]]]:
    dbs: list[Database] = []
    yield MemoryNetwork(), [], dbs
    for db in dbs:
        db.close()


async def peer(world: tuple[MemoryNetwork, list[Peer], list[Database]], tmp: Path) -> Peer:
    net, peers, _ = world
    identity = Identity.generate()
    host = net.host(identity)
    await host.start()
    p = Peer(identity, host, BlobService(host, BlobStore(tmp / identity.peer_id)),
             PeerDirectory(identity, host, None))
    for other in peers:  # everyone knows everyone's address
        p.peers.remember(other.identity.public, tuple(other.host.listen_addrs()), bytes(32))
        other.peers.remember(identity.public, tuple(host.listen_addrs()), bytes(32))
    peers.append(p)
    return p


def keeper_on(world: tuple[MemoryNetwork, list[Peer], list[Database]], p: Peer,
              policy: KeepPolicy | None) -> Keeper:
    db = Database.open(":memory:")
    world[2].append(db)
    return Keeper(db, p.blobs, policy)


def listing_with(seller: Peer, *images: bytes, lie_size: int | None = None) -> AnyRecord:
    refs = tuple(ImageRef(seller.blobs.store.put(data), "image/png", lie_size or len(data))
                 for data in images)
    return sign_record(seller.identity, make_listing(images=refs), seq=1)


async def offer(seller: Peer, keeper: Peer, record: AnyRecord | bytes, digest: bytes
                ) -> list[str]:
    raw = record if isinstance(record, bytes) else record.raw
    answer = await seller.host.request(keeper.host.peer_id, KEEP_PROTOCOL,
                                       msgspec.msgpack.encode([raw, digest]))
    return msgspec.msgpack.decode(answer, type=list[str])


async def test_keeper_pulls_checks_and_keeps(world: tuple[MemoryNetwork, list[Peer],
                                                          list[Database]], tmp_path: Path) -> None:
    seller, keeping = await peer(world, tmp_path), await peer(world, tmp_path)
    keeper = keeper_on(world, keeping, KeepPolicy(budget=10_000, per_publisher=10_000))
    image = PNG + os.urandom(3000)
    record = listing_with(seller, image)
    digest = record.body.images[0].sha256  # type: ignore[attr-defined]
    assert await offer(seller, keeping, record, digest) == ["kept"]
    assert keeping.blobs.store.get(digest) == image and keeper.held() == [digest]
    assert await offer(seller, keeping, record, digest) == ["kept"]  # again: nothing to pull
    # a restart reads the book back from the database
    again = Keeper(keeper.db, keeping.blobs, keeper.policy)
    assert again.held() == [digest] and again.book is not None and again.book.used_bytes == 3008


async def test_refusals_are_typed(world: tuple[MemoryNetwork, list[Peer], list[Database]],
                                  tmp_path: Path) -> None:
    seller, keeping, other = (await peer(world, tmp_path), await peer(world, tmp_path),
                              await peer(world, tmp_path))
    keeper = keeper_on(world, keeping, KeepPolicy(budget=100_000, per_publisher=5_000))
    first, second = PNG + os.urandom(4000), PNG + os.urandom(2000)
    record = listing_with(seller, first, second)
    a, b = (i.sha256 for i in record.body.images)  # type: ignore[attr-defined]
    assert await offer(seller, keeping, record, a) == ["kept"]
    # over the seller's share: refused, and not even fetched
    assert await offer(seller, keeping, record, b) == ["refused", str(Refusal.QUOTA)]
    assert not keeping.blobs.store.has(b)
    # someone else's listing, or an image the listing does not name
    assert await offer(other, keeping, record, b) == ["refused", str(Refusal.BAD_OFFER)]
    assert await offer(seller, keeping, record, os.urandom(32)) == [
        "refused", str(Refusal.BAD_OFFER)]
    assert await offer(seller, keeping, b"garbage", a) == ["refused", str(Refusal.BAD_OFFER)]
    # a listing that lies about the image's size: the bytes are pulled, then thrown away
    liar = listing_with(other, PNG + os.urandom(500), lie_size=400)
    c = liar.body.images[0].sha256  # type: ignore[attr-defined]
    assert await offer(other, keeping, liar, c) == ["refused", str(Refusal.FETCH_FAILED)]
    assert not keeping.blobs.store.has(c) and c not in keeper.held()
    # a pusher that sends other bytes than the hash names
    honest = listing_with(other, PNG + os.urandom(600))
    d = honest.body.images[0].sha256  # type: ignore[attr-defined]

    async def wrong(peer_id: str, payload: bytes) -> bytes:
        return msgspec.msgpack.encode(["ok", b"not the image"])

    other.host.set_request_handler(BLOB_PROTOCOL, wrong)
    assert await offer(other, keeping, honest, d) == ["refused", str(Refusal.FETCH_FAILED)]
    assert keeper.held() == [a]
    # a node without the role
    plain = await peer(world, tmp_path)
    keeper_on(world, plain, None)
    assert await offer(seller, plain, record, a) == ["refused", str(Refusal.NOT_KEEPER)]


class FixedHolders:
    """`Holders.find` answering from a list (the DHT part is tested with real nodes)."""

    def __init__(self, holders: list[bytes]) -> None:
        self.holders = holders

    async def find(self, digest: bytes) -> list[bytes]:
        return list(self.holders)


async def test_reader_skips_a_lying_holder(world: tuple[MemoryNetwork, list[Peer],
                                                        list[Database]], tmp_path: Path) -> None:
    reader, liar, good, gone = (await peer(world, tmp_path), await peer(world, tmp_path),
                                await peer(world, tmp_path), await peer(world, tmp_path))
    image = PNG + os.urandom(5000)
    digest = good.blobs.store.put(image)

    async def lie(peer_id: str, payload: bytes) -> bytes:
        return msgspec.msgpack.encode(["ok", PNG + os.urandom(5000)])

    liar.host.set_request_handler(BLOB_PROTOCOL, lie)
    await gone.host.stop()  # the seller, offline
    holders = FixedHolders([liar.identity.public, good.identity.public])
    finder = ImageFinder(reader.identity, reader.blobs, cast(Holders, holders), reader.peers)
    assert await finder.get(digest, hint=gone.identity.public) == image
    assert reader.blobs.store.get(digest) == image  # cached, so served from here next time
    # the liar is not asked again for a while; with nobody else, the image is unavailable
    other = good.blobs.store.put(PNG + b"other")
    holders.holders = [liar.identity.public]
    with pytest.raises(BlobUnavailable) as err:
        await finder.get(other)
    assert err.value.failures == []  # the liar was not asked


async def test_seller_places_each_image_with_keepers(world: tuple[MemoryNetwork, list[Peer],
                                                                  list[Database]],
                                                     tmp_path: Path) -> None:
    seller, k1, k2, k3 = (await peer(world, tmp_path), await peer(world, tmp_path),
                          await peer(world, tmp_path), await peer(world, tmp_path))
    keeper_on(world, k1, KeepPolicy(budget=100_000))
    keeper_on(world, k2, None)  # advertised once, no longer keeping: refuses
    keeper_on(world, k3, KeepPolicy(budget=100_000))
    record = listing_with(seller, PNG + os.urandom(1000))
    digest = record.body.images[0].sha256  # type: ignore[attr-defined]
    # place() needs neither the listings nor the DHT: the keepers are given
    replicator = ImageReplicator(seller.identity, cast(Listings, None), seller.blobs,
                                 cast(Holders, None), seller.peers, replicas=2)
    keepers = [k.identity.public for k in (k1, k2, k3)]
    assert await replicator.place(cast(Record[Listing], record), digest, keepers) == 2
    assert k1.blobs.store.has(digest) and k3.blobs.store.has(digest)
    assert not k2.blobs.store.has(digest)
