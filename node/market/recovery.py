"""After `p2pmarket restore`: find this node's own records in the DHT and take them back.

A node restored from its 24 words has an empty database; one restored from a backup file may
be behind what it published later. While `<datadir>/restore.pending` exists, each round of the
node's upkeep loop (once it has DHT contacts) reads its profile, its seller index (every
listing it published names the seller key) and its arbiter advert, and keeps what is newer
than the database. The file goes when a round found something, or after a few rounds with
peers that found nothing (a node that never published anything).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from dht.server import DhtNode
from node.escrow.adverts import ArbiterAdverts, find_advert
from node.market.listings import Listings
from node.market.profiles import Profiles
from p2pmarket.datadir import RESTORE_FILE
from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import IndexEntry, Listing, Profile, Tombstone
from p2pmarket.wire.dhtkeys import index_key, single_key

log = logging.getLogger(__name__)

EMPTY_ROUNDS = 3  # rounds with DHT contacts that found nothing before we give up looking


@dataclass(frozen=True, slots=True)
class Recovered:
    listings: int
    profile: bool
    advert: bool

    @property
    def anything(self) -> bool:
        return bool(self.listings or self.profile or self.advert)


class Recovery:
    def __init__(self, identity: Identity, dht: DhtNode, datadir: Path, *, listings: Listings,
                 profiles: Profiles, adverts: ArbiterAdverts) -> None:
        self.identity, self.dht, self.marker = identity, dht, datadir / RESTORE_FILE
        self.listings, self.profiles, self.adverts = listings, profiles, adverts
        self._empty_rounds = 0

    @property
    def pending(self) -> bool:
        return self.marker.exists()

    async def step(self) -> Recovered | None:
        """One look, when a restore asked for it and the DHT has contacts; None otherwise."""
        if not self.pending or self.dht.contact_count() == 0:
            return None
        found = await self.look()
        if found.anything:
            log.info("restore: took back %d listings%s%s from the DHT", found.listings,
                     ", the profile" if found.profile else "",
                     ", the arbiter advert" if found.advert else "")
        self._empty_rounds = 0 if found.anything else self._empty_rounds + 1
        if found.anything or self._empty_rounds >= EMPTY_ROUNDS:
            self.marker.unlink(missing_ok=True)
        return found

    async def look(self) -> Recovered:
        me = self.identity.public
        listings = 0
        entries = await self.dht.get_all(index_key("seller", me.hex()), max_pages=8)
        ids = sorted({r.body.listing_id for r in entries
                      if r.publisher == me and isinstance(r.body, IndexEntry)})
        for listing_id in ids:
            record = await self.dht.get(single_key("listing", me, listing_id))
            if record is not None and isinstance(record.body, Listing | Tombstone):
                listings += self.listings.adopt(record)  # type: ignore[arg-type]
        profile = await self.dht.get(single_key("profile", me))
        got_profile = (profile is not None and isinstance(profile.body, Profile)
                       and self.profiles.adopt(profile))  # type: ignore[arg-type]
        advert = await find_advert(self.dht, me)
        got_advert = advert is not None and self.adverts.adopt(advert)
        return Recovered(listings, got_profile, got_advert)
