"""Listings live as long as their seller: renewed before they expire, over months of a simulated
clock, without a new version (offers bound to the version survive); an offline seller's expired
listings come back with the first renewal round after it starts."""

from __future__ import annotations

import time

import pytest

from dht.testing import join_all, make_node
from node.market.listings import RENEW_BEFORE, Listings, build_listing
from node.market.terms import listing_terms
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.dhtkeys import index_key, single_key
from p2pmarket.wire.market import listing_hash

pytestmark = pytest.mark.timeout(120)

DAY = 86_400
FIELDS = {"id": "renewed-lamp-1", "title": "Oak desk lamp", "description": "works",
          "price": {"amount": 1250, "currency": "EUR"}, "category": "home",
          "condition": "good", "quantity": 1,
          "location": {"country": "DE", "geohash": "u33db"}, "tags": ["lamp"]}


class Clock:
    """The one clock of every node in the test; moved by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_listing_and_index_stay_findable_for_120_days_then_come_back() -> None:
    clock = Clock()
    nodes = [make_node() for _ in range(10)]
    for node in nodes:
        node.clock = clock
    await join_all(nodes)
    try:
        seller = Identity.generate()
        nodes[1].identity = seller
        listings = Listings(seller, Database.open(":memory:"), nodes[1], clock=clock)
        first = await listings.create(build_listing(FIELDS))
        key = single_key("listing", seller.public, first.body.id)
        scope, term = listing_terms(first.body)[0]
        index = index_key(scope, term)
        reader = nodes[8]

        renewals = 0
        for _day in range(120):  # the seller's node runs; it checks once a day here
            clock.now += DAY
            renewals += await listings.renew()
            found = await reader.get(key)
            assert found is not None, f"listing gone on day {_day + 1}"
            assert found.seq == first.seq and found.expires > clock.now
            assert listing_hash(found) == listing_hash(first)  # offers on it stay valid
            entries = await reader.get_all(index)
            assert [e.body.listing_id for e in entries] == [first.body.id]
        # renewed about once per (lifetime - RENEW_BEFORE), not every day
        lifetime = first.expires - first.created
        assert 120 * DAY // (lifetime - RENEW_BEFORE) <= renewals <= 120 * DAY // (
            lifetime - RENEW_BEFORE) + 1

        # the seller's node is off for 40 days: everything it published expires
        clock.now += 40 * DAY
        assert await reader.get(key) is None and await reader.get_all(index) == []
        # its first renewal round after starting brings it back, still the same version
        assert await listings.renew() == 1
        back = await reader.get(key)
        assert back is not None and listing_hash(back) == listing_hash(first)
        assert [e.body.listing_id for e in await reader.get_all(index)] == [first.body.id]
        assert listings.published_at(first.body.id) == clock.now
    finally:
        for node in nodes:
            node.stop()
