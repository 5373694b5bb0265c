"""Blob store and the blob protocol over the in-memory host."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from node.p2p.blobs import MAX_IMAGE_BYTES, BlobError, BlobService, BlobStore
from node.p2p.memory import MemoryNetwork
from node.p2p.transport import BLOB_PROTOCOL, RemoteError
from p2pmarket.identity import Identity


def test_store_round_trip_and_damage(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(1000)
    digest = store.put(data)
    assert digest == hashlib.sha256(data).digest() and store.get(digest) == data
    path = tmp_path / digest.hex()[:2] / digest.hex()
    path.write_bytes(b"rotten")
    assert store.get(digest) is None and not path.exists()
    with pytest.raises(BlobError):
        store.put(b"x" * (MAX_IMAGE_BYTES + 1))


async def test_fetch_checks_hash_and_caches(tmp_path: Path) -> None:
    net = MemoryNetwork()
    seller_id, buyer_id = Identity.generate(), Identity.generate()
    seller, buyer = net.host(seller_id), net.host(buyer_id)
    await seller.start()
    await buyer.start()
    buyer.add_peer(seller.peer_id, seller.listen_addrs())
    seller_blobs = BlobService(seller, BlobStore(tmp_path / "s"))
    buyer_blobs = BlobService(buyer, BlobStore(tmp_path / "b"))
    image = os.urandom(1_500_000)
    digest = seller_blobs.store.put(image)
    assert await buyer_blobs.fetch(seller.peer_id, digest) == image
    assert buyer_blobs.store.has(digest)
    with pytest.raises(BlobError):
        await buyer_blobs.fetch(seller.peer_id, os.urandom(32))

    async def liar(peer: str, payload: bytes) -> bytes:
        import msgspec

        return msgspec.msgpack.encode(["ok", b"not the image"])

    seller.set_request_handler(BLOB_PROTOCOL, liar)
    with pytest.raises(BlobError, match="do not match"):
        await buyer_blobs.fetch(seller.peer_id, hashlib.sha256(b"other").digest())

    async def garbage(peer: str, payload: bytes) -> bytes:
        return b"\xc1\xc1"

    seller.set_request_handler(BLOB_PROTOCOL, garbage)
    with pytest.raises(RemoteError):
        await buyer_blobs.fetch(seller.peer_id, hashlib.sha256(b"other2").digest())
