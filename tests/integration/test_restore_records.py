"""A node restored from its 24 words (a lost disk) takes its own listings, profile and arbiter
advert back from the DHT; one restored from an old backup takes the newer versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from dht.server import DhtNode
from dht.testing import dht_network, make_node, start_node
from node.escrow.adverts import ArbiterAdverts
from node.market.listings import ListingChange, Listings, build_listing
from node.market.profiles import Profiles
from node.market.recovery import EMPTY_ROUNDS, Recovery
from p2pmarket.backup import snapshot_db
from p2pmarket.datadir import RESTORE_FILE
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Profile
from p2pmarket.wire.dhtkeys import record_key
from p2pmarket.words import identity_from_words, new_words

pytestmark = pytest.mark.timeout(90)


def fields(n: int) -> dict[str, object]:
    return {"id": f"restored-item-{n}", "title": f"Walnut shelf {n}", "description": "solid",
            "price": {"amount": 4000 + n, "currency": "EUR"}, "category": "home",
            "condition": "good", "quantity": 1,
            "location": {"country": "DE", "geohash": "u33db"}, "tags": ["shelf"]}


class Parts:
    def __init__(self, words: str, db: Database, dht: DhtNode, datadir: Path) -> None:
        identity = identity_from_words(words)
        self.listings = Listings(identity, db, dht)
        self.profiles = Profiles(identity, dht, db)
        self.adverts = ArbiterAdverts(identity, db, dht)
        self.recovery = Recovery(identity, dht, datadir, listings=self.listings,
                                 profiles=self.profiles, adverts=self.adverts)


async def test_words_bring_back_listings_profile_and_advert(tmp_path: Path) -> None:
    words = new_words()
    async with dht_network(8) as net:
        old_db = Database.open(tmp_path / "lost.db")
        old = await start_node(make_node(identity_from_words(words), db=old_db),
                               [net[0].address])
        before = Parts(words, old_db, old, tmp_path / "lost")
        made = [await before.listings.create(build_listing(fields(n))) for n in range(4)]
        await before.listings.edit(made[1].body.id, ListingChange(quantity=5))
        await before.listings.delete(made[3].body.id)
        await before.profiles.publish(Profile(name="Ada", bio="Shelves"))
        await before.adverts.publish("Ada arbitrates", fee_percent_bp=100)
        mine = {r.body.id: r.raw for r in before.listings.mine()}
        assert len(mine) == 3
        old.stop()  # the disk dies: nothing of old_db is used again
        old_db.close()

        datadir = tmp_path / "restored"
        datadir.mkdir()
        (datadir / RESTORE_FILE).write_text("words\n")
        db = Database.open(datadir / "node.db")
        dht = await start_node(make_node(identity_from_words(words), db=db), [net[2].address])
        try:
            after = Parts(words, db, dht, datadir)
            assert after.listings.mine() == [] and after.profiles.mine is None
            found = await after.recovery.step()
            assert found is not None
            assert (found.listings, found.profile, found.advert) == (3, True, True)
            assert {r.body.id: r.raw for r in after.listings.mine()} == mine
            assert all(after.listings.published_times().values())
            assert after.listings.unpublished() == []
            assert after.profiles.mine is not None and after.profiles.mine.body.name == "Ada"
            advert = after.adverts.advert()
            assert advert is not None and advert.body.fee_percent_bp == 100
            assert after.profiles.published_at() and after.adverts.published_at()
            assert not (datadir / RESTORE_FILE).exists()
            assert await after.recovery.step() is None  # done: no more lookups

            # and it carries on as the same seller: the next edit is the next version
            edited = await after.listings.edit(made[1].body.id, ListingChange(quantity=2))
            assert edited.seq == 3
            got = await net[6].get(record_key(edited))
            assert got is not None and got.seq == 3
        finally:
            dht.stop()
            db.close()


async def test_an_old_backup_takes_the_newer_versions(tmp_path: Path) -> None:
    words = new_words()
    async with dht_network(8) as net:
        db = Database.open(tmp_path / "node.db")
        dht = await start_node(make_node(identity_from_words(words), db=db), [net[0].address])
        parts = Parts(words, db, dht, tmp_path)
        record = await parts.listings.create(build_listing(fields(1)))
        # the backup is taken here: a copy of the database with version 1
        snapshot_db(tmp_path / "node.db", tmp_path / "backup.db")  # as `p2pmarket backup`
        await parts.listings.edit(record.body.id, ListingChange(title="Walnut shelf, oiled"))
        dht.stop()
        db.close()

        (tmp_path / RESTORE_FILE).write_text("backup\n")
        backup = Database.open(tmp_path / "backup.db")
        dht = await start_node(make_node(identity_from_words(words), db=backup),
                               [net[3].address])
        try:
            restored = Parts(words, backup, dht, tmp_path)
            assert restored.listings.get(record.body.id).seq == 1
            found = await restored.recovery.step()
            assert found is not None and found.listings == 1
            assert restored.listings.get(record.body.id).body.title == "Walnut shelf, oiled"
        finally:
            dht.stop()
            backup.close()


async def test_a_node_that_never_published_stops_looking(tmp_path: Path) -> None:
    words = new_words()
    async with dht_network(6) as net:
        (tmp_path / RESTORE_FILE).write_text("words\n")
        db = Database.open(":memory:")
        dht = await start_node(make_node(identity_from_words(words), db=db), [net[0].address])
        try:
            parts = Parts(words, db, dht, tmp_path)
            for _ in range(EMPTY_ROUNDS):
                assert (tmp_path / RESTORE_FILE).exists()
                found = await parts.recovery.step()
                assert found is not None and not found.anything
            assert not (tmp_path / RESTORE_FILE).exists()
        finally:
            dht.stop()
