"""Signed records held by a DHT node, in the node's SQLite database.

One row per (key, publisher, member) slot; the highest seq wins, with caps per key and per
publisher. Expiry is wall-clock, taken from the signed record, so it survives restarts.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from dataclasses import dataclass

from p2pmarket.storage import Database
from p2pmarket.wire.dhtkeys import record_slot, renews
from p2pmarket.wire.records import AnyRecord, decode_record

MIGRATIONS = [
    """
    CREATE TABLE dht_records (
        key BLOB NOT NULL,
        publisher BLOB NOT NULL,
        member TEXT NOT NULL,
        kind TEXT NOT NULL,
        seq INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        stored_at INTEGER NOT NULL,
        raw BLOB NOT NULL,
        PRIMARY KEY (key, publisher, member)
    ) WITHOUT ROWID;
    CREATE INDEX dht_records_expires ON dht_records (expires);
    CREATE INDEX dht_records_publisher ON dht_records (publisher);
    CREATE TABLE dht_published (
        key BLOB NOT NULL,
        publisher BLOB NOT NULL,
        member TEXT NOT NULL,
        expires INTEGER NOT NULL,
        published_at INTEGER NOT NULL,
        raw BLOB NOT NULL,
        PRIMARY KEY (key, publisher, member)
    ) WITHOUT ROWID;
    """,
]

MAX_SLOTS_PER_KEY = 2048
MAX_SLOTS_PER_PUBLISHER_KEY = 256
MAX_SLOTS_PER_PUBLISHER = 20_000
PAGE_BYTES = 7500  # one find_value page fits one 8 KiB datagram with its framing


class PutResult(enum.Enum):
    STORED = "stored"
    REFRESHED = "refreshed"  # the same bytes again
    STALE = "stale"  # a higher seq is held
    CONFLICT = "conflict"  # same seq, different bytes: first one kept
    FULL = "full"  # a cap was reached


@dataclass(frozen=True, slots=True)
class Page:
    values: list[bytes]
    next: int | None  # offset of the next page, None at the end


class RecordStore:
    """The DHT's view of the database: slots, caps, pages, expiry, own records."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("dht", MIGRATIONS)

    def put(self, key: bytes, record: AnyRecord, now: float | None = None) -> PutResult:
        """Store a record that `dht.validate` accepted for `key`."""
        now_i = int(time.time() if now is None else now)
        publisher, member = record_slot(record)
        with self.db.transaction():
            row = self.db.query_one(
                "SELECT seq, raw FROM dht_records WHERE key=? AND publisher=? AND member=?",
                (key, publisher, member),
            )
            if row is not None:
                if record.seq < row["seq"]:
                    return PutResult.STALE
                if record.seq == row["seq"]:
                    if row["raw"] != record.raw and not renews(record, decode_record(
                            row["raw"], now=now_i, allow_expired=True, verified=True)):
                        return PutResult.CONFLICT
                    if row["raw"] != record.raw:  # the same content, re-signed to live longer
                        self.db.execute(
                            "UPDATE dht_records SET raw=?, expires=?, stored_at=? WHERE key=? "
                            "AND publisher=? AND member=?",
                            (record.raw, record.expires, now_i, key, publisher, member))
                        return PutResult.STORED
                    self.db.execute(
                        "UPDATE dht_records SET stored_at=? WHERE key=? AND publisher=? "
                        "AND member=?", (now_i, key, publisher, member))
                    return PutResult.REFRESHED
            elif not self._has_room(key, publisher, now_i):
                return PutResult.FULL
            self.db.execute(
                "INSERT OR REPLACE INTO dht_records VALUES (?,?,?,?,?,?,?,?)",
                (key, publisher, member, record.kind, record.seq, record.expires, now_i,
                 record.raw),
            )
        return PutResult.STORED

    def _has_room(self, key: bytes, publisher: bytes, now: int) -> bool:
        # index-only counts (expired rows are culled by upkeep, so counting them is harmless)
        (per_key,) = self.db.query_one(
            "SELECT count(*) FROM dht_records WHERE key=?", (key,)) or (0,)
        if per_key >= MAX_SLOTS_PER_KEY:
            return False
        (per_pub_key,) = self.db.query_one(
            "SELECT count(*) FROM dht_records WHERE key=? AND publisher=?",
            (key, publisher)) or (0,)
        if per_pub_key >= MAX_SLOTS_PER_PUBLISHER_KEY:
            return False
        (per_pub,) = self.db.query_one(
            "SELECT count(*) FROM dht_records WHERE publisher=?", (publisher,)) or (0,)
        return bool(per_pub < MAX_SLOTS_PER_PUBLISHER)

    def page(self, key: bytes, offset: int = 0, now: float | None = None,
             max_bytes: int = PAGE_BYTES) -> Page:
        """Live values under `key` from `offset`, as many as fit in `max_bytes` (at least one)."""
        now_i = int(time.time() if now is None else now)
        rows = self.db.query(
            "SELECT raw FROM dht_records WHERE key=? AND expires>? "
            "ORDER BY publisher, member LIMIT -1 OFFSET ?", (key, now_i, max(0, offset)))
        values: list[bytes] = []
        used = 0
        for row in rows:
            raw: bytes = row["raw"]
            if values and used + len(raw) > max_bytes:
                return Page(values, offset + len(values))
            values.append(raw)
            used += len(raw)
        return Page(values, None)

    def has(self, key: bytes, now: float | None = None) -> bool:
        now_i = int(time.time() if now is None else now)
        return self.db.query_one(
            "SELECT 1 FROM dht_records WHERE key=? AND expires>? LIMIT 1", (key, now_i)
        ) is not None

    def keys(self, now: float | None = None) -> list[bytes]:
        now_i = int(time.time() if now is None else now)
        return [r["key"] for r in self.db.query(
            "SELECT DISTINCT key FROM dht_records WHERE expires>?", (now_i,))]

    def values(self, key: bytes, now: float | None = None) -> Iterator[bytes]:
        now_i = int(time.time() if now is None else now)
        for row in self.db.query(
                "SELECT raw FROM dht_records WHERE key=? AND expires>?", (key, now_i)):
            yield row["raw"]

    def cull(self, now: float | None = None) -> int:
        """Drop expired records; returns how many."""
        now_i = int(time.time() if now is None else now)
        return self.db.execute("DELETE FROM dht_records WHERE expires<=?", (now_i,))

    def count(self) -> int:
        row = self.db.query_one("SELECT count(*) FROM dht_records")
        return int(row[0]) if row else 0

    # -- records this node published and keeps alive ---------------------------------------

    def remember_published(self, key: bytes, record: AnyRecord, now: float | None = None) -> None:
        publisher, member = record_slot(record)
        self.db.execute(
            "INSERT OR REPLACE INTO dht_published VALUES (?,?,?,?,?,?)",
            (key, publisher, member, record.expires, int(time.time() if now is None else now),
             record.raw))

    def forget_published(self, key: bytes, publisher: bytes, member: str) -> None:
        self.db.execute("DELETE FROM dht_published WHERE key=? AND publisher=? AND member=?",
                        (key, publisher, member))

    def due_for_republish(self, older_than: float, now: float | None = None
                          ) -> list[tuple[bytes, bytes]]:
        """(key, raw) of own live records last published more than `older_than` seconds ago."""
        now_i = int(time.time() if now is None else now)
        self.db.execute("DELETE FROM dht_published WHERE expires<=?", (now_i,))
        rows = self.db.query(
            "SELECT key, raw FROM dht_published WHERE published_at<=?",
            (now_i - int(older_than),))
        return [(r["key"], r["raw"]) for r in rows]

    def mark_republished(self, key: bytes, raw: bytes, now: float | None = None) -> None:
        self.db.execute("UPDATE dht_published SET published_at=? WHERE key=? AND raw=?",
                        (int(time.time() if now is None else now), key, raw))
