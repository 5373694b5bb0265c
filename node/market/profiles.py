"""Profiles: this node's signed profile record, and anyone's profile with a reputation summary.

A profile is one single-value record (`profile` kind) under H("profile" | publisher); editing
republishes it with a higher seq (milliseconds since the epoch, so it survives restarts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dht.server import DhtNode
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Profile
from p2pmarket.wire.dhtkeys import renewal, single_key
from p2pmarket.wire.records import Record, RecordError, decode_record, sign_record


class ProfileInvalid(ValueError):
    """Profile fields a person must fix; the message names the field."""


@dataclass(frozen=True, slots=True)
class ProfileView:
    publisher: bytes
    profile: Profile | None
    reviews: int
    rating: float | None


MIGRATIONS = [
    """
    CREATE TABLE my_profile (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        raw BLOB NOT NULL              -- my signed profile record, as last published
    );
    """,
    # when a DHT node last stored it; NULL: not stored anywhere (yet), so renew() puts it out
    "ALTER TABLE my_profile ADD COLUMN published REAL;",
]


class Profiles:
    """My profile (kept in the database when one is given, so it is renewed across restarts)
    and anyone's, from the DHT."""

    def __init__(self, identity: Identity, dht: DhtNode, db: Database | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.identity, self.dht, self.db, self.clock = identity, dht, db, clock
        self.mine: Record[Profile] | None = None
        self._published: float | None = None  # when a DHT node last stored `mine`
        if db is not None:
            db.migrate("profile", MIGRATIONS)
            row = db.query_one("SELECT raw, published FROM my_profile WHERE id=1")
            if row is not None:
                record = decode_record(row["raw"], allow_expired=True, verified=True,
                                       now=clock())
                if isinstance(record.body, Profile):
                    self.mine = record  # type: ignore[assignment]
                    self._published = row["published"]

    async def publish(self, profile: Profile) -> Record[Profile]:
        """Sign and publish my profile (it replaces the whole previous one)."""
        now = self.clock()
        last = self.mine.seq if self.mine is not None else 0
        try:
            record = sign_record(self.identity, profile, seq=max(last + 1, int(now * 1000)),
                                 created=int(now))
        except RecordError as exc:
            raise ProfileInvalid(str(exc)) from exc
        self._keep(record)
        await self._put(record)
        return record

    async def renew(self) -> bool:
        """Re-sign my profile (same seq and content, a new lifetime) when it expires within
        RENEW_BEFORE or lapsed while the node was off, or put it out again when no DHT node
        stored it yet; True when a DHT node stored it."""
        if self.mine is None:
            return False
        record = renewal(self.identity, self.mine, self.clock())
        if record is not None:
            self._keep(record)
        elif self.published_at() is not None:
            return False
        return await self._put(record or self.mine)

    def published_at(self) -> float | None:
        """When a DHT node last stored my current profile (None: not yet)."""
        return self._published

    async def _put(self, record: Record[Profile]) -> bool:
        ok = (await self.dht.put(record)).ok
        if ok and record is self.mine:
            self._published = self.clock()
            if self.db is not None:
                self.db.execute("UPDATE my_profile SET published=? WHERE raw=?",
                                (self._published, record.raw))
        return ok

    def adopt(self, record: Record[Profile]) -> bool:
        """Take my own profile found in the DHT (after a restore) when it is newer than mine."""
        if record.publisher != self.identity.public:
            return False
        if self.mine is not None and self.mine.seq >= record.seq:
            return False
        self._keep(record)
        self._published = self.clock()  # found in the DHT: stored there
        if self.db is not None:
            self.db.execute("UPDATE my_profile SET published=? WHERE id=1", (self._published,))
        return True

    def _keep(self, record: Record[Profile]) -> None:
        if self.db is not None:
            self.db.execute("INSERT INTO my_profile (id, raw, published) VALUES (1, ?, NULL) "
                            "ON CONFLICT (id) DO UPDATE SET raw=excluded.raw, published=NULL",
                            (record.raw,))
        self.mine, self._published = record, None

    async def get(self, publisher: bytes) -> Record[Profile] | None:
        if publisher == self.identity.public and self.mine is not None:
            return self.mine
        record = await self.dht.get(single_key("profile", publisher))
        if record is None or not isinstance(record.body, Profile):
            return None  # absent, or deleted with a tombstone
        return record  # type: ignore[return-value]
