"""This node's arbiter advert in the DHT directory (`ARBITERS_KEY`): publish, change, withdraw
it; and the adverts found there (`list_arbiters`, `find_advert`).

The advert's `description` carries the arbiter's languages and terms text (the record has no
separate fields for them). Our latest advert (or the tombstone that withdrew it) is kept in
SQLite (component "arbiters"), so its seq only grows and a restart knows whether we serve.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec

from dht.server import DhtNode
from escrow.terms import LocalEscrowError
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Arbiter, Tombstone
from p2pmarket.wire.dhtkeys import ARBITERS_KEY, renewal
from p2pmarket.wire.records import Record, decode_record, sign_record

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE arbiter_advert (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        raw BLOB NOT NULL,            -- our signed advert, or the tombstone that withdrew it
        live INTEGER NOT NULL
    );
    """,
    # when a DHT node last stored it; NULL: not stored anywhere (yet), so renew() puts it out
    "ALTER TABLE arbiter_advert ADD COLUMN published REAL;",
]


async def list_arbiters(dht: DhtNode) -> list[Record[Arbiter]]:
    """The live adverts in the directory (a withdrawn one is a tombstone in its slot)."""
    found: list[Record[Arbiter]] = [
        r for r in await dht.get_all(ARBITERS_KEY, max_pages=8)  # type: ignore[misc]
        if isinstance(r.body, Arbiter)]
    return sorted(found, key=lambda r: (r.body.name, r.publisher))


async def find_advert(dht: DhtNode, arbiter: bytes) -> Record[Arbiter] | None:
    return next((r for r in await list_arbiters(dht) if r.publisher == arbiter), None)


class ArbiterAdverts:
    """Our arbiter advert (works on any node; serving as an arbiter needs the escrow)."""

    def __init__(self, identity: Identity, db: Database, dht: DhtNode, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.identity, self.db, self.dht, self.clock = identity, db, dht, clock
        db.migrate("arbiters", MIGRATIONS)

    def advert(self) -> Record[Arbiter] | None:
        """Our live advert, if we serve as an arbiter."""
        row = self.db.query_one("SELECT raw, live FROM arbiter_advert WHERE id=1")
        if row is None or not row["live"]:
            return None
        record = decode_record(row["raw"], allow_expired=True, verified=True, now=self.clock())
        return record if isinstance(record.body, Arbiter) else None  # type: ignore[return-value]

    def serving(self) -> bool:
        """Whether this node serves as an arbiter (it has a live advert)."""
        return self.advert() is not None

    def _seq(self) -> int:
        row = self.db.query_one("SELECT raw FROM arbiter_advert WHERE id=1")
        last = decode_record(row["raw"], allow_expired=True, verified=True,
                             now=self.clock()).seq if row else 0
        return max(last + 1, int(self.clock() * 1000))

    async def publish(self, name: str, description: str = "", fee_percent_bp: int = 0,
                      fee_fixed_sat: int = 0) -> Record[Arbiter]:
        """Offer to arbitrate (or change the terms): sign the advert and put it in the DHT."""
        try:
            body = msgspec.convert(dict(name=name, description=description,
                                        fee_percent_bp=fee_percent_bp,
                                        fee_fixed_sat=fee_fixed_sat), Arbiter)
        except msgspec.ValidationError as exc:
            raise LocalEscrowError(f"bad advert: {exc}") from exc
        record = sign_record(self.identity, body, seq=self._seq(), created=int(self.clock()))
        self._save(record.raw, live=True)
        if not await self._put(record):
            log.warning("arbiter advert not stored by any DHT node yet; the node keeps trying")
        return record

    async def withdraw(self) -> None:
        """Stop serving as an arbiter: a tombstone replaces the advert in the directory."""
        tomb = sign_record(self.identity, Tombstone(target_kind="arbiter"), seq=self._seq(),
                           created=int(self.clock()))
        self._save(tomb.raw, live=False)
        await self._put(tomb)

    async def renew(self) -> bool:
        """Re-sign our live advert (same seq and terms, a new lifetime) when it expires within
        RENEW_BEFORE or already did while the node was off, or put it out again when no DHT
        node stored it yet; True when a DHT node stored it.
        Without this every escrow naming us fails 30 days after we advertised."""
        advert = self.advert()
        if advert is None:
            return False
        record = renewal(self.identity, advert, self.clock())
        if record is not None:
            self._save(record.raw, live=True)
        elif self.published_at() is not None:
            return False
        return await self._put(record or advert)

    def published_at(self) -> float | None:
        """When a DHT node last stored our current advert (or tombstone); None: not yet."""
        row = self.db.query_one("SELECT published FROM arbiter_advert WHERE id=1")
        return None if row is None else row["published"]

    async def _put(self, record: Record[Arbiter] | Record[Tombstone]) -> bool:
        ok = (await self.dht.put(record)).ok
        if ok:
            self.db.execute("UPDATE arbiter_advert SET published=? WHERE raw=?",
                            (self.clock(), record.raw))
        return ok

    def adopt(self, record: Record[Arbiter]) -> bool:
        """Take my own advert found in the directory (after a restore) when it is newer than
        what the database holds; True when it did."""
        if record.publisher != self.identity.public:
            return False
        row = self.db.query_one("SELECT raw FROM arbiter_advert WHERE id=1")
        if row is not None and decode_record(row["raw"], allow_expired=True, verified=True,
                                             now=self.clock()).seq >= record.seq:
            return False
        self._save(record.raw, live=True)
        self.db.execute("UPDATE arbiter_advert SET published=? WHERE id=1", (self.clock(),))
        return True

    def _save(self, raw: bytes, *, live: bool) -> None:
        self.db.execute("INSERT INTO arbiter_advert (id, raw, live, published) "
                        "VALUES (1, ?, ?, NULL) ON CONFLICT (id) DO UPDATE SET "
                        "raw=excluded.raw, live=excluded.live, published=NULL", (raw, int(live)))

    async def directory(self) -> list[Record[Arbiter]]:
        return await list_arbiters(self.dht)
