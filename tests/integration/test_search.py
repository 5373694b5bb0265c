"""Listings published by a seller who then goes offline stay findable, with every filter."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dht.server import DhtNode
from dht.testing import dht_network
from node.market.cache import Filters, ListingCache
from node.market.listings import ListingChange, Listings, build_listing
from node.market.moderation import Blocklist
from node.market.search import Search
from node.market.terms import tokens
from p2pmarket import geohash
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Listing, Price
from p2pmarket.wire.records import Record

pytestmark = pytest.mark.timeout(180)

WORDS = ["bike", "lamp", "guitar", "camera", "sofa", "jacket", "drill", "lego", "vinyl",
         "kettle", "tent", "phone"]
ADJ = ["red", "vintage", "compact", "wooden", "electric", "retro"]
CATS = ["sports/bikes", "home/furniture", "music/instruments", "electronics/cameras",
        "fashion/men", "home/tools", "toys/games", "electronics/phones"]
CITIES = {"berlin": (52.52, 13.405), "paris": (48.8566, 2.3522), "lyon": (45.764, 4.8357)}


def listing_fields(rng: random.Random, i: int) -> dict[str, object]:
    city = rng.choice(list(CITIES.values()))
    lat = city[0] + rng.uniform(-0.3, 0.3)
    lon = city[1] + rng.uniform(-0.3, 0.3)
    return {
        "id": f"item-{i:05d}",
        "title": f"{rng.choice(ADJ)} {rng.choice(WORDS)} {i}",
        "description": "in working order, pick up or post",
        "price": {"amount": rng.randrange(500, 100_000), "currency": "EUR"},
        "category": rng.choice(CATS),
        "condition": rng.choice(["new", "like-new", "good", "fair", "for-parts"]),
        "quantity": 1,
        "location": {"country": "DE", "geohash": geohash.encode(lat, lon, 6)},
        "tags": [rng.choice(WORDS)],
    }


@dataclass
class World:
    net: list[DhtNode]
    seller: Identity
    published: dict[str, Record[Listing]]


def buyer(node: DhtNode) -> Search:
    db = node.records.db
    return Search(node, ListingCache(db), Blocklist(db))


def truth(world: World, f: Filters) -> set[str]:
    out = set()
    for rec in world.published.values():
        body = rec.body
        words = set(tokens(" ".join((body.title, *body.tags))))
        if f.text and not set(tokens(f.text)) <= words:
            continue
        if f.category and not (body.category == f.category
                               or body.category.startswith(f.category + "/")):
            continue
        if f.price_min is not None and body.price.amount < f.price_min:
            continue
        if f.price_max is not None and body.price.amount > f.price_max:
            continue
        if f.conditions and body.condition not in f.conditions:
            continue
        if f.near is not None and f.radius_km is not None and geohash.distance_km(
                f.near, geohash.decode(body.location.geohash)) > f.radius_km:
            continue
        out.add(body.id)
    return out


QUERIES = [
    Filters(text="bike"),
    Filters(text="vintage camera"),
    Filters(category="home"),
    Filters(category="sports/bikes", price_max=50_000),
    Filters(text="lamp", conditions=("new", "like-new")),
    Filters(category="electronics", price_min=20_000, price_max=80_000),
    Filters(text="guitar", near=CITIES["berlin"], radius_km=40),
    Filters(category="toys", near=CITIES["paris"], radius_km=60, conditions=("good",)),
]


def queries() -> Iterator[Filters]:
    yield from QUERIES


async def test_offline_seller_listings_found_with_filters() -> None:
    # k=10 on 24 nodes keeps the 2,400 puts quick; every record still has 10 replicas
    async with dht_network(24, ksize=10) as net:
        seller = Identity.generate()
        seller_node = net[5]
        seller_node.identity = seller  # publish as the seller (own records are remembered)
        listings = Listings(seller, Database.open(":memory:"), seller_node)
        rng = random.Random(2026)
        published = {}
        for i in range(200):
            rec = await listings.create(build_listing(listing_fields(rng, i)))
            published[rec.body.id] = rec
        seller_node.stop()  # the seller goes offline
        world = World(net, seller, published)

        search = buyer(net[17])
        found_total = expected_total = 0
        for f in queries():
            page = await search.search(f, page_size=500)
            ids = {h.record.body.id for h in page.hits}
            expected = truth(world, f)
            assert expected, f
            expected_total += len(expected)
            found_total += len(expected & ids)
            for hit in page.hits:  # nothing that breaks the filters
                assert hit.record.body.id in truth(world, Filters(
                    category=f.category, price_min=f.price_min, price_max=f.price_max,
                    conditions=f.conditions, near=f.near, radius_km=f.radius_km))
        assert found_total / expected_total >= 0.99

        # a cold node that never searched: the local cache is empty, the network answers
        other = buyer(net[20])
        assert other.local(Filters(text="bike")).hits == []
        page = await other.search(Filters(text="bike"), page_size=500)
        assert {h.record.body.id for h in page.hits} >= truth(world, Filters(text="bike"))


async def test_edit_propagates_delete_hides_block_filters() -> None:
    async with dht_network(20) as net:
        seller = Identity.generate()
        seller_node = net[3]
        seller_node.identity = seller
        listings = Listings(seller, Database.open(":memory:"), seller_node)
        rng = random.Random(7)
        first = await listings.create(
            build_listing({**listing_fields(rng, 1), "title": "orange kayak"}))
        second = await listings.create(
            build_listing({**listing_fields(rng, 2), "title": "orange canoe"}))

        a, b = buyer(net[10]), buyer(net[12])
        ids = {h.record.body.id for h in (await a.search(Filters(text="orange"))).hits}
        assert ids == {first.body.id, second.body.id}

        edited = await listings.edit(first.body.id,
                                     ListingChange(price=Price(amount=99, currency="EUR")))
        assert edited.seq == 2
        hits = (await a.search(Filters(text="kayak"))).hits
        assert [h.record.seq for h in hits] == [2] and hits[0].record.body.price.amount == 99

        await listings.delete(second.body.id)
        for s in (a, b):
            assert {h.record.body.id for h in (await s.search(Filters(text="orange"))).hits} \
                == {first.body.id}

        b.blocklist.block_peer(seller.public, "spam")
        assert (await b.search(Filters(text="orange"))).hits == []
        assert b.local(Filters(text="kayak")).hits == []


async def test_reports_are_signed_and_counted_once_per_reporter() -> None:
    from node.market.moderation import report_count, report_listing
    from node.market.owned import OwnRecords
    from p2pmarket.wire.dhtkeys import reports_key

    async with dht_network(12) as net:
        seller = Identity.generate()
        reporters = [Identity.generate() for _ in range(3)]
        mine = [OwnRecords(who, Database.open(":memory:"), net[i])
                for i, who in enumerate(reporters)]
        for owned in mine:
            await report_listing(owned, seller.public, "item-00001", "scam", "fake")
        await report_listing(mine[0], seller.public, "item-00001", "spam")  # again
        # the second report replaced the first among the reporter's own records
        [kept] = mine[0].states()
        assert kept.kind == "report" and kept.ref == f"{seller.peer_id}/item-00001"
        assert kept.published is not None and kept.error is None
        assert await report_count(net[9], seller.public, "item-00001") == 3
        assert await report_count(net[9], seller.public, "item-00002") == 0
        records = await net[8].get_all(reports_key(seller.public, "item-00001"))
        assert {r.publisher for r in records} == {r.public for r in reporters}


async def test_browsing_without_terms_finds_every_listing() -> None:
    async with dht_network(12) as net:
        seller = Identity.generate()
        net[2].identity = seller
        listings = Listings(seller, Database.open(":memory:"), net[2])
        rng = random.Random(3)
        ids = {(await listings.create(build_listing(listing_fields(rng, i)))).body.id
               for i in range(12)}
        page = await buyer(net[9]).search(Filters(), page_size=50)
        assert {h.record.body.id for h in page.hits} == ids
