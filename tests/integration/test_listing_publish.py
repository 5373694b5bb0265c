"""A listing saved while no DHT peer could store it is not "published": it says so, and it goes
out once peers are there, also after the node stopped between the commit and the publish."""

from __future__ import annotations

from pathlib import Path

import pytest

from dht.testing import dht_network, make_node, start_node
from node.market.listings import ListingChange, Listings, build_listing
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.dhtkeys import single_key

pytestmark = pytest.mark.timeout(60)

FIELDS = {"id": "lonely-lamp-1", "title": "Oak desk lamp", "description": "works",
          "price": {"amount": 1250, "currency": "EUR"}, "category": "home",
          "condition": "good", "quantity": 1,
          "location": {"country": "DE", "geohash": "u33db"}, "tags": ["lamp"]}


async def test_saved_without_peers_then_published_after_a_restart(tmp_path: Path) -> None:
    seller = Identity.generate()
    path = tmp_path / "node.db"
    async with dht_network(8) as net:
        # first run: the node is alone (its bootstrap never answered); the API's create
        # returns the listing with published_at None
        db = Database.open(path)
        alone = await start_node(make_node(seller, db=db))
        listings = Listings(seller, db, alone)
        record = await listings.create(build_listing(FIELDS))
        assert listings.published_at(record.body.id) is None
        assert [r.body.id for r in listings.unpublished()] == [record.body.id]
        key = single_key("listing", seller.public, record.body.id)
        assert await net[5].get(key) is None
        alone.stop()
        db.close()

        # next run, same database, and this time the network answers
        db = Database.open(path)
        joined = await start_node(make_node(seller, db=db), [net[0].address])
        try:
            listings = Listings(seller, db, joined)
            assert await listings.publish_pending() == 1
            assert listings.published_at(record.body.id) is not None
            assert listings.unpublished() == []
            found = await net[5].get(key)
            assert found is not None and found.raw == record.raw
            assert await listings.publish_pending() == 0  # nothing left to do

            # an edit is a new version: not published until a node stores it
            edited = await listings.edit(record.body.id, ListingChange(quantity=3))
            assert listings.published_at(record.body.id) is not None
            assert edited.seq == record.seq + 1
        finally:
            joined.stop()
            db.close()

