"""My listings: create, edit (seq + 1), delete (tombstone), publish with their index entries.

Every publish writes the listing record and one signed index entry per search term (keyword,
category prefix, geohash prefix). The DHT node republishes them before they expire; terms a new
version no longer has are forgotten so they fade out.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from dht.server import DhtNode
from node.market.cache import stored_listing
from node.market.terms import listing_terms
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import (
    MAX_TTL,
    Condition,
    EscrowTerms,
    ImageRef,
    IndexEntry,
    IndexScope,
    Listing,
    Location,
    Price,
    ShippingOption,
    Tombstone,
)
from p2pmarket.wire.dhtkeys import index_key, renewal
from p2pmarket.wire.records import AnyRecord, Record, RecordError, sign_record

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE my_listings (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        raw BLOB NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        updated REAL NOT NULL
    );
    """,
    # when a DHT node last stored the current version; NULL: not stored anywhere yet (no peers,
    # or the node stopped between the commit and the publish), so it goes out when it can
    """
    ALTER TABLE my_listings ADD COLUMN published REAL;
    UPDATE my_listings SET published = updated;
    """,
]
PUBLISH_CONCURRENCY = 8
GONE_TTL = 86_400


class ListingError(Exception):
    """A listing operation a person can fix: the message says what is wrong."""


class ListingInvalid(ListingError):
    pass


class ListingNotFound(ListingError):
    pass


def new_listing_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(12)).decode()


class ListingChange(msgspec.Struct, frozen=True, kw_only=True):
    """Changes to one of my listings, in the listing's own types (arbiters are keys, image
    hashes bytes); fields left UNSET stay as they are. The limits are checked when the changed
    listing is built, so they live in one place (`Listing`)."""

    title: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    price: Price | msgspec.UnsetType = msgspec.UNSET
    category: str | msgspec.UnsetType = msgspec.UNSET
    condition: Condition | msgspec.UnsetType = msgspec.UNSET
    quantity: int | msgspec.UnsetType = msgspec.UNSET
    location: Location | msgspec.UnsetType = msgspec.UNSET
    shipping: tuple[ShippingOption, ...] | msgspec.UnsetType = msgspec.UNSET
    images: tuple[ImageRef, ...] | msgspec.UnsetType = msgspec.UNSET
    tags: tuple[str, ...] | msgspec.UnsetType = msgspec.UNSET
    arbiters: tuple[bytes, ...] | msgspec.UnsetType = msgspec.UNSET
    escrow: EscrowTerms | msgspec.UnsetType = msgspec.UNSET


def build_listing(fields: dict[str, Any]) -> Listing:
    """A listing from JSON-like fields (a parser for outside input: the API's conversion, seed
    data, benchmarks), validated by the schema; errors name the field."""
    try:
        return msgspec.convert(fields, type=Listing, strict=False)
    except msgspec.ValidationError as exc:
        raise ListingInvalid(str(exc)) from exc
    except ValueError as exc:  # __post_init__ checks (category, blank title)
        raise ListingInvalid(str(exc)) from exc


class Listings:
    def __init__(self, identity: Identity, db: Database, dht: DhtNode, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.identity, self.db, self.dht, self.clock = identity, db, dht, clock
        db.migrate("listings", MIGRATIONS)
        self._limit = asyncio.Semaphore(PUBLISH_CONCURRENCY)
        # told of each version of mine a DHT node stored (the image replicator listens)
        self.on_published: list[Callable[[Record[Listing]], None]] = []

    # -- queries -------------------------------------------------------------------------------

    def get(self, listing_id: str) -> Record[Listing]:
        row = self.db.query_one("SELECT raw FROM my_listings WHERE id=? AND deleted=0",
                                (listing_id,))
        if row is None:
            raise ListingNotFound(f"no listing {listing_id!r} of yours")
        return stored_listing(row["raw"], self.clock())

    def mine(self) -> list[Record[Listing]]:
        rows = self.db.query("SELECT raw FROM my_listings WHERE deleted=0 ORDER BY updated DESC")
        return [stored_listing(r["raw"], self.clock()) for r in rows]

    # -- changes -------------------------------------------------------------------------------

    async def create(self, listing: Listing) -> Record[Listing]:
        """Sign and publish a new listing (`new_listing_id()` makes an id)."""
        if self.db.query_one("SELECT 1 FROM my_listings WHERE id=?", (listing.id,)):
            raise ListingInvalid(f"listing id {listing.id!r} is already used")
        return await self._save(listing, seq=1)

    async def edit(self, listing_id: str, change: ListingChange) -> Record[Listing]:
        """Republish with the changed fields and seq + 1."""
        current = self.get(listing_id)
        changed = {name: value for name in change.__struct_fields__
                   if (value := getattr(change, name)) is not msgspec.UNSET}
        merged = {**msgspec.to_builtins(current.body), **msgspec.to_builtins(changed),
                  "id": listing_id}
        return await self._save(build_listing(merged), seq=current.seq + 1, old=current.body)

    async def sold(self, listing_id: str, quantity: int) -> Record[Listing] | None:
        """Decrement the quantity after a sale; a listing at 0 is marked sold out in the DHT."""
        try:
            current = self.get(listing_id)
        except ListingNotFound:
            return None
        left = max(0, current.body.quantity - quantity)
        return await self.edit(listing_id, ListingChange(quantity=left))

    async def unsold(self, listing_id: str, quantity: int) -> Record[Listing] | None:
        """A cancelled order gives its quantity back."""
        try:
            current = self.get(listing_id)
        except ListingNotFound:
            return None
        return await self.edit(listing_id,
                               ListingChange(quantity=current.body.quantity + quantity))

    def published_at(self, listing_id: str) -> float | None:
        """When a DHT node last stored this listing's current version (None: not yet)."""
        return self.published_times().get(listing_id)

    def published_times(self) -> dict[str, float | None]:
        """`published_at` of all my listings, in one query."""
        return {r["id"]: r["published"] for r in
                self.db.query("SELECT id, published FROM my_listings WHERE deleted=0")}

    def unpublished(self) -> list[Record[Listing]]:
        rows = self.db.query(
            "SELECT raw FROM my_listings WHERE deleted=0 AND published IS NULL ORDER BY updated")
        return [stored_listing(r["raw"], self.clock()) for r in rows]

    async def publish_pending(self) -> int:
        """Publish what was saved but never stored anywhere; returns how many went out."""
        done = 0
        for record in self.unpublished():
            done += await self._publish_mine(record)
        return done

    async def renew(self) -> int:
        """Re-sign and publish my listings (and their index entries) that expire within
        RENEW_BEFORE, or already did while the node was off: same seq and content, a new
        lifetime, so they stay findable as long as the node runs. Returns how many."""
        now = self.clock()
        renewed = 0
        for current in self.mine():
            record = renewal(self.identity, current, now)
            if record is None:
                continue
            self.db.execute("UPDATE my_listings SET raw=?, published=NULL WHERE id=? AND seq=?",
                            (record.raw, current.body.id, current.seq))
            await self._publish_mine(record)
            renewed += 1
        return renewed

    def adopt(self, record: Record[Listing] | Record[Tombstone]) -> bool:
        """Take one of my own records found in the DHT (after a restore) when it is newer than
        what the database holds: a listing becomes mine again, a tombstone deletes. It was
        found there, so it counts as published. True when something changed."""
        if record.publisher != self.identity.public:
            return False
        body = record.body
        listing_id = body.id if isinstance(body, Listing) else body.target_id
        row = self.db.query_one("SELECT seq FROM my_listings WHERE id=?", (listing_id,))
        if row is not None and row["seq"] >= record.seq:
            return False
        now = self.clock()
        if isinstance(body, Listing):
            self.db.execute(
                "INSERT INTO my_listings (id, seq, raw, updated, published) VALUES (?,?,?,?,?) "
                "ON CONFLICT (id) DO UPDATE SET seq=excluded.seq, raw=excluded.raw, "
                "updated=excluded.updated, deleted=0, published=excluded.published",
                (listing_id, record.seq, record.raw, now, now))
        elif row is not None:
            self.db.execute("UPDATE my_listings SET deleted=1, seq=?, updated=? WHERE id=?",
                            (record.seq, now, listing_id))
        else:
            return False
        return True

    def find(self, listing_id: str) -> Record[Listing] | None:
        try:
            return self.get(listing_id)
        except ListingNotFound:
            return None

    async def delete(self, listing_id: str) -> None:
        current = self.get(listing_id)
        tomb = sign_record(self.identity, Tombstone(target_kind="listing", target_id=listing_id),
                           seq=current.seq + 1, created=int(self.clock()))
        with self.db.transaction():
            self.db.execute("UPDATE my_listings SET deleted=1, seq=?, updated=? WHERE id=?",
                            (tomb.seq, self.clock(), listing_id))
        self._forget_terms(current.body, keep=[])
        await self.dht.put(tomb)
        # index entries now point at the tombstone, so readers drop their cached copy; they
        # live one day and are not republished
        gone = [sign_record(self.identity, IndexEntry(
            scope=scope, term=term, listing_id=listing_id, listing_seq=tomb.seq,
            title=current.body.title, price=current.body.price, category=current.body.category),
            seq=tomb.seq, created=tomb.created, ttl=GONE_TTL)
            for scope, term in self.terms(current.body)]
        await self._put_all(gone, remember=False)

    async def _save(self, listing: Listing, *, seq: int, old: Listing | None = None
                    ) -> Record[Listing]:
        try:
            record = sign_record(self.identity, listing, seq=seq, created=int(self.clock()))
        except RecordError as exc:
            raise ListingInvalid(str(exc)) from exc
        self.db.execute(
            "INSERT INTO my_listings (id, seq, raw, updated, published) VALUES (?,?,?,?,NULL) "
            "ON CONFLICT (id) DO UPDATE SET seq=excluded.seq, raw=excluded.raw, "
            "updated=excluded.updated, deleted=0, published=NULL",
            (listing.id, seq, record.raw, self.clock()))
        if old is not None:
            self._forget_terms(old, keep=self.terms(listing))
        await self._publish_mine(record)
        return record

    async def _publish_mine(self, record: Record[Listing]) -> bool:
        """Publish one of mine and note when it was stored (only if still the current version)."""
        if not await self.publish(record):
            return False
        self.db.execute("UPDATE my_listings SET published=? WHERE id=? AND seq=? AND raw=?",
                        (self.clock(), record.body.id, record.seq, record.raw))
        for listener in self.on_published:
            listener(record)
        return True

    # -- publishing ------------------------------------------------------------------------------

    def terms(self, listing: Listing) -> list[tuple[IndexScope, str]]:
        """The search terms of `listing` and its entry in my seller index."""
        return [*listing_terms(listing), ("seller", self.identity.public.hex())]

    def index_entries(self, record: Record[Listing]) -> list[AnyRecord]:
        listing = record.body
        ttl = min(MAX_TTL["index"], record.expires - record.created)
        return [sign_record(self.identity, IndexEntry(
            scope=scope, term=term, listing_id=listing.id, listing_seq=record.seq,
            title=listing.title, price=listing.price, category=listing.category),
            seq=record.seq, created=record.created, ttl=ttl)
            for scope, term in self.terms(listing)]

    async def publish(self, record: Record[Listing]) -> bool:
        """Put the listing and its index entries; True when the listing itself was stored."""
        results = await self._put_all([record, *self.index_entries(record)])
        if not results[0]:
            log.warning("listing %s was not stored anywhere (no DHT peers?); it goes out when "
                        "the node has peers", record.body.id)
        return results[0]

    async def _put_all(self, records: Sequence[AnyRecord], remember: bool = True) -> list[bool]:
        async def put(rec: AnyRecord) -> bool:
            async with self._limit:
                return (await self.dht.put(rec, remember=remember)).ok

        return list(await asyncio.gather(*map(put, records)))

    def _forget_terms(self, listing: Listing, keep: list[tuple[IndexScope, str]]) -> None:
        for scope, term in self.terms(listing):
            if (scope, term) not in keep:
                self.dht.records.forget_published(index_key(scope, term), self.identity.public,
                                                  listing.id)
