"""Listings, a profile and an arbiter advert live as long as their owner: renewed before they
expire, over months of a simulated clock, without a new version (offers bound to a listing
version survive); an offline owner's expired records come back with the first renewal round
after it starts."""

from __future__ import annotations

import time

import pytest

from dht.testing import join_all, make_node
from node.escrow.adverts import ArbiterAdverts, find_advert
from node.market.listings import Listings, build_listing
from node.market.profiles import Profiles
from node.market.terms import listing_terms
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Profile
from p2pmarket.wire.dhtkeys import RENEW_BEFORE, index_key, single_key
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
        db = Database.open(":memory:")
        listings = Listings(seller, db, nodes[1], clock=clock)
        first = await listings.create(build_listing(FIELDS))
        # the same node also serves as an arbiter: escrows name it by its advert
        adverts = ArbiterAdverts(seller, db, nodes[1], clock=clock)
        advert = await adverts.publish("Ada Arbiter", "English. Rules in 3 days.", 200, 1000)
        profiles = Profiles(seller, nodes[1], db, clock=clock)
        profile = await profiles.publish(Profile(name="Ada", bio="Lamps and bikes"))
        profile_key = single_key("profile", seller.public)
        key = single_key("listing", seller.public, first.body.id)
        scope, term = listing_terms(first.body)[0]
        index = index_key(scope, term)
        reader = nodes[8]

        renewals = 0
        for _day in range(120):  # the seller's node runs; it checks once a day here
            clock.now += DAY
            renewals += await listings.renew()
            await adverts.renew()
            await profiles.renew()
            found = await reader.get(key)
            assert found is not None, f"listing gone on day {_day + 1}"
            assert found.seq == first.seq and found.expires > clock.now
            assert listing_hash(found) == listing_hash(first)  # offers on it stay valid
            entries = await reader.get_all(index)
            assert [e.body.listing_id for e in entries] == [first.body.id]
            listed = await find_advert(reader, seller.public)
            assert listed is not None and listed.body == advert.body, f"advert gone, day {_day}"
            shown = await reader.get(profile_key)
            assert shown is not None and shown.body == profile.body, f"profile gone, day {_day}"
        # renewed about once per (lifetime - RENEW_BEFORE), not every day
        lifetime = first.expires - first.created
        assert 120 * DAY // (lifetime - RENEW_BEFORE) <= renewals <= 120 * DAY // (
            lifetime - RENEW_BEFORE) + 1

        # the seller's node is off for 40 days: everything it published expires
        clock.now += 40 * DAY
        assert await reader.get(key) is None and await reader.get_all(index) == []
        assert await find_advert(reader, seller.public) is None
        assert await reader.get(profile_key) is None
        # the restarted node knows its own profile from its database
        profiles = Profiles(seller, nodes[1], db, clock=clock)
        assert profiles.mine is not None and profiles.mine.body == profile.body
        # its first renewal round after starting brings it back, still the same version
        assert await listings.renew() == 1
        back = await reader.get(key)
        assert back is not None and listing_hash(back) == listing_hash(first)
        assert [e.body.listing_id for e in await reader.get_all(index)] == [first.body.id]
        assert listings.published_at(first.body.id) == clock.now
        assert await adverts.renew()
        assert (await find_advert(reader, seller.public)) is not None
        assert await profiles.renew()
        back_profile = await reader.get(profile_key)
        assert back_profile is not None and back_profile.seq == profile.seq
    finally:
        for node in nodes:
            node.stop()
