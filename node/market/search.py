"""Search: query the DHT indexes, intersect, fetch and verify listings, keep them in the cache.

`local()` answers from the cache at once; `refresh()` asks the network and fills the cache;
`search()` does both. Index entries carry title, price and category, so most filters apply before
any listing is fetched. Listings stay findable while their seller is offline (k replicas).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, replace

from dht.server import DhtNode
from node.market.cache import Filters, Hit, ListingCache
from node.market.moderation import Blocklist
from node.market.terms import tokens
from p2pmarket import geohash
from p2pmarket.taxonomy import TAXONOMY
from p2pmarket.wire.bodies import IndexEntry, Listing, Tombstone
from p2pmarket.wire.dhtkeys import index_key, single_key

log = logging.getLogger(__name__)

FETCH_CONCURRENCY = 8
INDEX_PAGES = 64  # ~28 entries a page: keys of up to ~1,800 entries are read whole


@dataclass(frozen=True, slots=True)
class Page:
    hits: list[Hit]
    next_token: str | None
    total: int


def geo_terms(near: tuple[float, float], radius_km: float) -> list[str]:
    """Geohash cells (at a precision matched to the radius) that cover the circle."""
    if radius_km > 600:
        return []
    precision = 5 if radius_km <= 2.4 else 4 if radius_km <= 19 else 3 if radius_km <= 78 else 2
    lat, lon = near
    dlat = radius_km / 111.0
    dlon = radius_km / max(1.0, 111.0 * abs(math.cos(math.radians(lat))))
    cells = set()
    for a in (-dlat, 0.0, dlat):
        for b in (-dlon, 0.0, dlon):
            cells.add(geohash.encode(max(-90.0, min(90.0, lat + a)),
                                     ((lon + b + 180.0) % 360.0) - 180.0, precision))
    return sorted(cells)


class Search:
    def __init__(self, dht: DhtNode, cache: ListingCache, blocklist: Blocklist) -> None:
        self.dht, self.cache, self.blocklist = dht, cache, blocklist
        self._limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    def _filters(self, f: Filters) -> Filters:
        return replace(f, exclude_sellers=tuple(self.blocklist.blocked_peers()),
                       exclude_ids=tuple(self.blocklist.blocked_listing_ids()))

    def local(self, f: Filters, *, sort: str = "relevance", page_size: int = 20,
              page_token: str | None = None) -> Page:
        offset = int(page_token) if page_token and page_token.isdigit() else 0
        hits = self.cache.search(self._filters(f), sort=sort, limit=offset + page_size + 1)
        page = hits[offset:offset + page_size]
        more = len(hits) > offset + page_size
        return Page(page, str(offset + page_size) if more else None, len(hits))

    async def search(self, f: Filters, *, sort: str = "relevance", page_size: int = 20,
                     page_token: str | None = None) -> Page:
        await self.refresh(f)
        return self.local(f, sort=sort, page_size=page_size, page_token=page_token)

    async def refresh(self, f: Filters) -> int:
        """Ask the network; returns how many listings were added or updated in the cache."""
        groups: list[list[bytes]] = [[index_key("kw", w)] for w in tokens(f.text)]
        if f.category:
            groups.append([index_key("cat", f.category)])
        if f.near is not None and f.radius_km is not None:
            cells = geo_terms(f.near, f.radius_km)
            if cells:
                groups.append([index_key("geo", c) for c in cells])
        if not groups:  # plain browsing: every top-level category (union), newest first
            groups.append([index_key("cat", top) for top in TAXONOMY])
        candidates: dict[tuple[bytes, str], IndexEntry] | None = None
        # smallest group first would need sizes; the order does not change the result
        for group in groups:
            found: dict[tuple[bytes, str], IndexEntry] = {}
            for records in await asyncio.gather(
                    *(self.dht.get_all(k, max_pages=INDEX_PAGES) for k in group)):
                for rec in records:
                    if isinstance(rec.body, IndexEntry):
                        found[(rec.publisher, rec.body.listing_id)] = rec.body
            candidates = found if candidates is None else {
                k: v for k, v in candidates.items() if k in found}
            if not candidates:
                return 0
        assert candidates is not None
        wanted = [(pub, entry) for (pub, _), entry in candidates.items()
                  if self._may_match(pub, entry, f)]
        results = await asyncio.gather(*(self._fetch(pub, e) for pub, e in wanted))
        return sum(results)

    def _may_match(self, publisher: bytes, entry: IndexEntry, f: Filters) -> bool:
        if self.blocklist.is_blocked_listing(publisher, entry.listing_id):
            return False
        if f.seller is not None and publisher != f.seller:
            return False
        if f.currency and entry.price.currency != f.currency:
            return False
        if f.price_min is not None and entry.price.amount < f.price_min:
            return False
        if f.price_max is not None and entry.price.amount > f.price_max:
            return False
        return self.cache.known_seq(publisher, entry.listing_id) < entry.listing_seq

    async def _fetch(self, publisher: bytes, entry: IndexEntry) -> bool:
        async with self._limit:
            record = await self.dht.get(single_key("listing", publisher, entry.listing_id))
        if record is None or not isinstance(record.body, Listing | Tombstone):
            return False
        return self.cache.add(record)
