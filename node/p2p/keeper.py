"""The keeper role: hold other publishers' listing images, within quotas and a disk budget.

`/p2pmarket/keep/1.0.0` request: msgpack [listing record bytes, sha256]. The listing must be a
valid, live listing signed by the peer asking, and name that image; the keeper then pulls the
bytes from the asker over the blob protocol (checked against the hash and the listing's size)
and keeps them until the listing expires. Answer: ["kept"] or ["refused", reason] (`Refusal`).
What to take and what to evict is `KeepBook`'s decision; this shell does the IO. A node that
keeps nothing answers "not-keeper".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from node.p2p.blobs import BlobError, BlobService
from node.p2p.ids import public_of
from node.p2p.keepbook import Admitted, KeepBook, KeepPolicy, Kept, Refusal
from node.p2p.transport import KEEP_PROTOCOL, P2PError
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Listing
from p2pmarket.wire.records import RecordError, decode_record

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE kept_blobs (
        digest BLOB PRIMARY KEY,
        publisher BLOB NOT NULL,
        size INTEGER NOT NULL,
        until INTEGER NOT NULL,   -- the listing's expiry
        used REAL NOT NULL        -- last stored, offered or served (least recently used goes)
    ) WITHOUT ROWID;
    """,
]
MAX_FETCHES = 4  # pulls at once, from anyone
FETCH_TIMEOUT = 30.0
UPKEEP_EVERY = 600.0


def answer(reason: Refusal | None) -> bytes:
    return msgspec.msgpack.encode(["kept"] if reason is None else ["refused", str(reason)])


class Keeper:
    """Serves the keep protocol on the blob service's host; `policy` None: keeps nothing."""

    def __init__(self, db: Database, blobs: BlobService, policy: KeepPolicy | None, *,
                 protect: Callable[[bytes], bool] = lambda digest: False,
                 on_kept: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db, self.blobs, self.policy, self.clock = db, blobs, policy, clock
        self.protect, self.on_kept = protect, on_kept  # protect: our own images, never deleted
        db.migrate("keeper", MIGRATIONS)
        rows = db.query("SELECT digest, publisher, size, until, used FROM kept_blobs")
        entries = [Kept(r["digest"], r["publisher"], r["size"], r["until"], r["used"])
                   for r in rows]
        self.book = KeepBook(policy, entries) if policy is not None else None
        self._fetching = 0
        blobs.host.set_request_handler(KEEP_PROTOCOL, self._serve)
        if self.book is not None:
            blobs.on_served = self._served

    def held(self) -> list[bytes]:
        """Digests kept for others (announced as holder records)."""
        return [] if self.book is None else [e.digest for e in self.book.entries()
                                             if not e.pending]

    async def _serve(self, peer_id: str, payload: bytes) -> bytes:
        return answer(await self.take(peer_id, payload))

    async def take(self, peer_id: str, payload: bytes) -> Refusal | None:
        """Judge one offer and, if taken, pull the bytes; None means kept."""
        book = self.book
        if book is None:
            return Refusal.NOT_KEEPER
        now = self.clock()
        try:
            raw, digest = msgspec.msgpack.decode(payload, type=tuple[bytes, bytes])
            record = decode_record(raw, now=now)
            publisher = public_of(peer_id)
        except (msgspec.MsgspecError, RecordError, ValueError):
            return Refusal.BAD_OFFER
        body = record.body
        ref = next((i for i in body.images if i.sha256 == digest), None) if isinstance(
            body, Listing) else None
        if ref is None or record.publisher != publisher:
            return Refusal.BAD_OFFER
        if digest not in book and self.protect(digest):
            return None  # one of our own images: held anyway, nobody is charged
        if digest not in book and self._fetching >= MAX_FETCHES:
            return Refusal.BUSY
        decision = book.admit(publisher, digest, ref.size, record.expires, now)
        if not isinstance(decision, Admitted):
            return decision.reason
        self._forget(decision.evict)
        if decision.already:
            self._save(decision.entry)
            return None
        if not self.blobs.store.has(digest):
            if not await self._pull(peer_id, digest, ref.size):
                book.drop(digest)
                return Refusal.FETCH_FAILED
        elif len(self.blobs.store.get(digest) or b"") != ref.size:
            book.drop(digest)  # we hold other bytes under that hash: impossible; or damaged
            return Refusal.FETCH_FAILED
        entry = book.settle(digest)
        if entry is None:  # dropped meanwhile (expired by upkeep): nothing to keep
            return Refusal.FETCH_FAILED
        self._save(entry)
        log.info("keeping image %s (%d bytes) for %s", digest.hex()[:16], ref.size, peer_id)
        self.on_kept()
        return None

    async def _pull(self, peer_id: str, digest: bytes, size: int) -> bool:
        self._fetching += 1
        try:
            data = await self.blobs.fetch(peer_id, digest, timeout=FETCH_TIMEOUT)
        except (BlobError, P2PError) as exc:
            log.info("could not pull image %s from %s: %s", digest.hex()[:16], peer_id, exc)
            return False
        finally:
            self._fetching -= 1
        if len(data) != size:  # the listing lied about the size: do not keep it
            self.blobs.store.remove(digest)
            return False
        return True

    def _save(self, entry: Kept) -> None:
        self.db.execute("INSERT OR REPLACE INTO kept_blobs VALUES (?,?,?,?,?)",
                        (entry.digest, entry.publisher, entry.size, entry.until, entry.used))

    def _forget(self, entries: tuple[Kept, ...] | list[Kept]) -> None:
        for entry in entries:
            self.db.execute("DELETE FROM kept_blobs WHERE digest=?", (entry.digest,))
            if not self.protect(entry.digest):
                self.blobs.store.remove(entry.digest)

    def _served(self, digest: bytes) -> None:
        if self.book is not None and (entry := self.book.touch(digest, self.clock())):
            self.db.execute("UPDATE kept_blobs SET used=? WHERE digest=?",
                            (entry.used, digest))

    def upkeep(self) -> int:
        """Drop images whose listing expired (and whose bytes went missing); returns how many."""
        if self.book is None:
            return 0
        gone = self.book.expired(self.clock())
        lost = [e for e in self.book.entries()
                if not e.pending and not self.blobs.store.has(e.digest)]
        for entry in lost:
            self.book.drop(entry.digest)
        self._forget(gone + lost)
        return len(gone) + len(lost)

    async def run(self) -> None:
        """Upkeep forever; cancel to stop."""
        while True:
            self.upkeep()
            await asyncio.sleep(UPKEEP_EVERY)
