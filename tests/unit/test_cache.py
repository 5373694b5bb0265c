"""The local listing cache: filters, radius pages, distance order, category ranges."""

from __future__ import annotations

import random

from node.market.cache import Filters, ListingCache
from p2pmarket import geohash
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Location
from p2pmarket.wire.records import sign_record
from tests.support.records import make_listing

LYON = (45.764, 4.8357)


def filled(n: int = 300) -> tuple[ListingCache, dict[str, float]]:
    cache = ListingCache(Database.open(":memory:"))
    me = Identity.generate()
    rng = random.Random(5)
    distance: dict[str, float] = {}
    for i in range(n):
        lat, lon = LYON[0] + rng.uniform(-1, 1), LYON[1] + rng.uniform(-1, 1)
        gh = geohash.encode(lat, lon, 7)
        cat = rng.choice(["home", "home/furniture", "homework-not-a-category", "sports/bikes"])
        cat = "home/kitchen" if cat.startswith("homework") else cat
        body = make_listing(id=f"item-{i:05d}", title=f"sofa {i}", category=cat,
                            location=Location("FR", gh))
        cache.add(sign_record(me, body, seq=1))
        distance[body.id] = geohash.distance_km(LYON, geohash.decode(gh))
    return cache, distance


def test_radius_pages_are_complete_and_sorted_by_distance() -> None:
    cache, distance = filled()
    within = sorted((d, i) for i, d in distance.items() if d <= 20)
    assert len(within) > 5
    hits = cache.search(Filters(text="sofa", near=LYON, radius_km=20), sort="distance",
                        limit=5)
    assert [h.record.body.id for h in hits] == [i for _, i in within[:5]]
    everything = cache.search(Filters(near=LYON, radius_km=20), limit=1000)
    assert {h.record.body.id for h in everything} == {i for _, i in within}


def test_category_prefix_does_not_match_lookalikes() -> None:
    cache, _ = filled(60)
    cats = {h.record.body.category for h in cache.search(Filters(category="home"), limit=1000)}
    assert cats <= {"home", "home/furniture", "home/kitchen"} and "home" in cats
    sub = cache.search(Filters(category="home/furniture"), limit=1000)
    assert {h.record.body.category for h in sub} == {"home/furniture"}
