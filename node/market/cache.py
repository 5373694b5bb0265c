"""Every verified listing this node has seen, in SQLite with an FTS5 index: instant local search.

Rows are replaced only by a higher seq; a tombstone removes the row. Queries filter in SQL and
rank by FTS5 bm25 (relevance), price, newest or distance.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from node.market.terms import tokens
from p2pmarket import geohash
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Listing
from p2pmarket.wire.records import AnyRecord, Record, decode_record

MIGRATIONS = [
    """
    CREATE TABLE listing_cache (
        rowid INTEGER PRIMARY KEY,
        publisher BLOB NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        raw BLOB NOT NULL,
        title TEXT NOT NULL,
        description TEXT NOT NULL,
        tags TEXT NOT NULL,
        category TEXT NOT NULL,
        condition TEXT NOT NULL,
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        seen REAL NOT NULL,
        UNIQUE (publisher, id)
    );
    CREATE INDEX listing_cache_category ON listing_cache (category);
    CREATE INDEX listing_cache_price ON listing_cache (currency, amount);
    CREATE VIRTUAL TABLE listing_fts USING fts5(
        title, description, tags, content='listing_cache', content_rowid='rowid');
    CREATE TABLE listing_gone (
        publisher BLOB NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        PRIMARY KEY (publisher, id)
    );
    CREATE TRIGGER listing_cache_ai AFTER INSERT ON listing_cache BEGIN
        INSERT INTO listing_fts (rowid, title, description, tags)
        VALUES (new.rowid, new.title, new.description, new.tags);
    END;
    CREATE TRIGGER listing_cache_ad AFTER DELETE ON listing_cache BEGIN
        INSERT INTO listing_fts (listing_fts, rowid, title, description, tags)
        VALUES ('delete', old.rowid, old.title, old.description, old.tags);
    END;
    CREATE TRIGGER listing_cache_au AFTER UPDATE ON listing_cache BEGIN
        INSERT INTO listing_fts (listing_fts, rowid, title, description, tags)
        VALUES ('delete', old.rowid, old.title, old.description, old.tags);
        INSERT INTO listing_fts (rowid, title, description, tags)
        VALUES (new.rowid, new.title, new.description, new.tags);
    END;
    """,
]


RADIUS_SCAN = 20_000  # rows a radius query reads from its bounding box at most


def bounding_box(near: tuple[float, float], radius_km: float
                 ) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lon_min, lon_max) around a point; whole longitudes near the poles."""
    lat, lon = near
    dlat = radius_km / 110.574
    cos = math.cos(math.radians(lat))
    dlon = 180.0 if cos < 1e-6 else min(180.0, radius_km / (111.320 * cos))
    lon_min, lon_max = lon - dlon, lon + dlon
    if lon_min < -180.0 or lon_max > 180.0:  # crosses the antimeridian: take every longitude
        lon_min, lon_max = -180.0, 180.0
    return lat - dlat, lat + dlat, lon_min, lon_max


@dataclass(frozen=True, slots=True)
class Filters:
    text: str = ""
    category: str | None = None
    price_min: int | None = None
    price_max: int | None = None
    currency: str | None = None
    conditions: tuple[str, ...] = ()
    near: tuple[float, float] | None = None
    radius_km: float | None = None
    seller: bytes | None = None
    exclude_sellers: tuple[bytes, ...] = ()
    exclude_ids: tuple[str, ...] = ()
    include_sold_out: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    record: Record[Listing]
    distance_km: float | None
    rank: float


class ListingCache:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("listing_cache", MIGRATIONS)

    def add(self, record: AnyRecord, now: float | None = None) -> bool:
        """Keep a verified listing (or apply a tombstone); False when we already had newer."""
        body = record.body
        listing_id = body.id if isinstance(body, Listing) else getattr(body, "target_id", "")
        if self.known_seq(record.publisher, listing_id) >= record.seq:
            return False
        if not isinstance(body, Listing):  # a tombstone: forget the listing, remember it is gone
            with self.db.transaction():
                self.db.execute("DELETE FROM listing_cache WHERE publisher=? AND id=?",
                                (record.publisher, listing_id))
                self.db.execute("INSERT OR REPLACE INTO listing_gone VALUES (?,?,?,?)",
                                (record.publisher, listing_id, record.seq, record.expires))
            return True
        lat, lon = geohash.decode(body.location.geohash)
        values = (record.publisher, body.id, record.seq, record.raw, body.title,
                  body.description, " ".join(body.tags), body.category, body.condition,
                  body.price.amount, body.price.currency, body.quantity, lat, lon,
                  record.created, record.expires, time.time() if now is None else now)
        self.db.execute(
            "INSERT INTO listing_cache (publisher, id, seq, raw, title, description, tags, "
            "category, condition, amount, currency, quantity, lat, lon, created, expires, seen) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (publisher, id) DO UPDATE SET "
            "seq=excluded.seq, raw=excluded.raw, title=excluded.title, "
            "description=excluded.description, tags=excluded.tags, category=excluded.category, "
            "condition=excluded.condition, amount=excluded.amount, currency=excluded.currency, "
            "quantity=excluded.quantity, lat=excluded.lat, lon=excluded.lon, "
            "created=excluded.created, expires=excluded.expires, seen=excluded.seen", values)
        return True

    def known_seq(self, publisher: bytes, listing_id: str) -> int:
        """The highest seq seen for this listing (a listing or its tombstone); -1 if none."""
        row = self.db.query_one(
            "SELECT max(seq) FROM (SELECT seq FROM listing_cache WHERE publisher=? AND id=? "
            "UNION ALL SELECT seq FROM listing_gone WHERE publisher=? AND id=?)",
            (publisher, listing_id, publisher, listing_id))
        return -1 if row is None or row[0] is None else int(row[0])

    def get(self, publisher: bytes, listing_id: str) -> Record[Listing] | None:
        row = self.db.query_one("SELECT raw FROM listing_cache WHERE publisher=? AND id=?",
                                (publisher, listing_id))
        return stored_listing(row["raw"]) if row else None

    def count(self) -> int:
        row = self.db.query_one("SELECT count(*) FROM listing_cache")
        return int(row[0]) if row else 0

    def cull(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        self.db.execute("DELETE FROM listing_gone WHERE expires <= ?", (now,))
        return self.db.execute("DELETE FROM listing_cache WHERE expires <= ?", (now,))

    def search(self, f: Filters, *, sort: str = "relevance", limit: int = 1000,
               now: float | None = None) -> list[Hit]:
        """Matching live listings, best first (at most `limit`)."""
        sql = ["SELECT c.raw, c.lat, c.lon, c.amount, c.created"]
        args: list[object] = []
        words = tokens(f.text)
        if words:
            sql.append(", bm25(listing_fts) AS score FROM listing_fts "
                       "JOIN listing_cache c ON c.rowid = listing_fts.rowid "
                       "WHERE listing_fts MATCH ?")
            args.append(" AND ".join('"' + w.replace('"', '""') + '"*' for w in words))
        else:
            sql.append(", 0.0 AS score FROM listing_cache c WHERE 1")
        sql.append("AND c.expires > ?")
        args.append(time.time() if now is None else now)
        if f.category:  # a range, not LIKE, so the category index is used ("/" < "0")
            sql.append("AND (c.category = ? OR (c.category >= ? AND c.category < ?))")
            args += [f.category, f.category + "/", f.category + "0"]
        if f.currency:
            sql.append("AND c.currency = ?")
            args.append(f.currency)
        if f.price_min is not None:
            sql.append("AND c.amount >= ?")
            args.append(f.price_min)
        if f.price_max is not None:
            sql.append("AND c.amount <= ?")
            args.append(f.price_max)
        if f.conditions:
            sql.append(f"AND c.condition IN ({','.join('?' * len(f.conditions))})")
            args += list(f.conditions)
        if f.seller is not None:
            sql.append("AND c.publisher = ?")
            args.append(f.seller)
        if f.exclude_sellers:
            sql.append(f"AND c.publisher NOT IN ({','.join('?' * len(f.exclude_sellers))})")
            args += list(f.exclude_sellers)
        if f.exclude_ids:
            sql.append(f"AND c.id NOT IN ({','.join('?' * len(f.exclude_ids))})")
            args += list(f.exclude_ids)
        if not f.include_sold_out:
            sql.append("AND c.quantity > 0")
        box = None
        if f.near is not None and f.radius_km is not None:
            # a bounding box in SQL, the exact distance below: pages are complete and the
            # distance sort sees every match
            box = bounding_box(f.near, f.radius_km)
            sql.append("AND c.lat BETWEEN ? AND ? AND c.lon BETWEEN ? AND ?")
            args += list(box)
        sql.append("ORDER BY " + {"price": "c.amount, score", "newest": "c.created DESC, score"}
                   .get(sort, "score, c.created DESC"))
        sql.append("LIMIT ?")
        args.append(limit if f.near is None else (RADIUS_SCAN if box else limit * 20))
        hits: list[Hit] = []
        for row in self.db.query(" ".join(sql), args):
            distance = None
            if f.near is not None:
                distance = geohash.distance_km(f.near, (row["lat"], row["lon"]))
                if f.radius_km is not None and distance > f.radius_km:
                    continue
            hits.append(Hit(stored_listing(row["raw"]), distance, float(row["score"])))
        if sort == "distance" and f.near is not None:
            hits.sort(key=lambda h: h.distance_km or 0.0)
        return hits[:limit]


def stored_listing(raw: bytes, now: float | None = None) -> Record[Listing]:
    """A listing record this node verified before and kept in its own database (`now`: the
    owner's clock, which judges "created in the future")."""
    record = decode_record(raw, allow_expired=True, verified=True, now=now)
    assert isinstance(record.body, Listing)
    return record  # type: ignore[return-value]
