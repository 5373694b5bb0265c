"""Image bytes by sha256: a content-addressed store on disk and `/p2pmarket/blob/1.0.0`.

A node serves its own blobs, ones it keeps for others (`node.p2p.keeper`) and ones it cached; a
fetched blob is used only if its hash matches, on every hop.
Request: msgpack [sha256]. Answer: msgpack ["ok", bytes] or ["missing"].
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec

from node.p2p.transport import BLOB_PROTOCOL, Host, RemoteError
from p2pmarket.wire.bodies import MAX_IMAGE_BYTES

log = logging.getLogger(__name__)

MAX_ANSWER = MAX_IMAGE_BYTES + 64


class BlobError(Exception):
    """Base of blob errors: a blob that is missing, too large, or not what its hash says."""


class BlobTooLarge(BlobError):
    """Ours: bytes over MAX_IMAGE_BYTES offered to the store."""


class BlobMissing(BlobError):
    """The peer asked does not have the blob (an honest answer)."""


class BlobMismatch(BlobError):
    """The peer's fault: it sent bytes that do not hash to the digest asked for."""


class BlobUnavailable(BlobError):
    """No peer that should have the blob gave it (see `failures`)."""

    def __init__(self, message: str, failures: list[str] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or []


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: bytes) -> Path:
        name = digest.hex()
        return self.root / name[:2] / name

    def put(self, data: bytes) -> bytes:
        """Store bytes; returns their sha256."""
        if len(data) > MAX_IMAGE_BYTES:
            raise BlobTooLarge(f"blob is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
        digest = hashlib.sha256(data).digest()
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".blob.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: bytes) -> bytes | None:
        if len(digest) != 32:
            return None
        try:
            data = self._path(digest).read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).digest() != digest:  # damaged on disk: drop it
            log.warning("blob %s is damaged; removing it", digest.hex())
            self._path(digest).unlink(missing_ok=True)
            return None
        return data

    def has(self, digest: bytes) -> bool:
        return len(digest) == 32 and self._path(digest).exists()

    def remove(self, digest: bytes) -> None:
        if len(digest) == 32:
            self._path(digest).unlink(missing_ok=True)


class BlobService:
    def __init__(self, host: Host, store: BlobStore) -> None:
        self.host, self.store = host, store
        self.on_served: Callable[[bytes], None] | None = None  # a keeper's LRU clock
        host.set_request_handler(BLOB_PROTOCOL, self._serve)

    async def _serve(self, peer_id: str, payload: bytes) -> bytes:
        try:
            (digest,) = msgspec.msgpack.decode(payload, type=tuple[bytes])
        except (msgspec.MsgspecError, ValueError, TypeError):
            return msgspec.msgpack.encode(["bad-request"])
        data = self.store.get(digest)
        if data is not None and self.on_served is not None:
            self.on_served(digest)
        return msgspec.msgpack.encode(["missing"] if data is None else ["ok", data])

    async def fetch(self, peer_id: str, digest: bytes, *, timeout: float = 20.0) -> bytes:
        """The blob from our store, else from `peer_id` (checked against its hash, then cached)."""
        cached = self.store.get(digest)
        if cached is not None:
            return cached
        answer = await self.host.request(peer_id, BLOB_PROTOCOL,
                                         msgspec.msgpack.encode([digest]), timeout=timeout,
                                         max_response=MAX_ANSWER)
        try:
            reply = msgspec.msgpack.decode(answer, type=list[object])
        except (msgspec.MsgspecError, ValueError, TypeError) as exc:
            raise RemoteError(f"{peer_id} sent a malformed blob answer") from exc
        if reply[:1] != ["ok"] or len(reply) != 2 or not isinstance(reply[1], bytes):
            raise BlobMissing(f"{peer_id} does not have blob {digest.hex()}")
        data = reply[1]
        if hashlib.sha256(data).digest() != digest:
            raise BlobMismatch(f"{peer_id} sent bytes that do not match {digest.hex()}")
        self.store.put(data)
        return data
