"""The running node: DHT, peer-to-peer host, messaging, blobs and market services, wired.

`Node` owns its parts and runs their loops in one TaskGroup; `run()` returns when `stop` is set
and everything has been shut down in order (channels, then DHT, then the database).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from dht.bootstrap import save_neighbours
from dht.server import DhtNode
from dht.storage import RecordStore
from node.escrow.adverts import ArbiterAdverts
from node.escrow.arbiters import ArbiterService
from node.escrow.driver import EscrowConfig, EscrowDriver
from node.market.cache import ListingCache
from node.market.images import ImageFinder, ImageReplicator
from node.market.listings import Listings
from node.market.moderation import Blocklist
from node.market.profiles import Profiles
from node.market.recovery import Recovery
from node.market.search import Search
from node.p2p.blobs import BlobService, BlobStore
from node.p2p.holders import Holders
from node.p2p.keepbook import KeepPolicy
from node.p2p.keeper import Keeper
from node.p2p.messenger import Messenger, RetryPolicy
from node.p2p.outbox import Outbox
from node.p2p.peers import PeerDirectory
from node.p2p.transport import Host
from node.trade.service import Trade
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Keeper as KeeperAdvert

log = logging.getLogger(__name__)

# how often to check our addresses (a relay reservation won or lost changes them); publish()
# sends the peer record only when they changed or it is getting old
PEER_RECORD_EVERY = 30.0
RENEW_CHECK_EVERY = 600.0  # how often to look for own listings close to their expiry


class Node:
    def __init__(self, identity: Identity, db: Database, host: Host, *, datadir: Path,
                 dht: DhtNode | None = None, policy: RetryPolicy | None = None,
                 escrow: EscrowConfig | None = None, keep: KeepPolicy | None = None) -> None:
        self.identity, self.db, self.host, self.datadir = identity, db, host, datadir
        self.dht = dht or DhtNode(identity, RecordStore(db))
        self.outbox = Outbox(db)
        self.peers = PeerDirectory(identity, host, self.dht)
        self.messenger = Messenger(identity, host, self.outbox, self.peers, self.dht,
                                   policy=policy)
        self.blobs = BlobService(host, BlobStore(datadir / "blobs"))
        self.blocklist = Blocklist(db)
        self.messenger.is_blocked = self.blocklist.is_blocked_peer
        self.listings = Listings(identity, db, self.dht)
        # images: ours go to keepers and we announce them; with `keep`, we keep others' too
        self.keeper = Keeper(db, self.blobs, keep, protect=self._own_image)
        self.holders = Holders(
            identity, self.dht, held=self._held_images, ready=lambda: self.peers.published,
            advert=KeeperAdvert(budget=keep.budget, per_publisher=keep.per_publisher)
            if keep else None)
        self.keeper.on_kept = self.holders.kick
        self.images = ImageFinder(identity, self.blobs, self.holders, self.peers)
        self.replicator = ImageReplicator(identity, self.listings, self.blobs, self.holders,
                                          self.peers)
        self.listings.on_published.append(self.replicator.kick)
        self.listings.on_published.append(lambda _record: self.holders.kick())
        self.search = Search(self.dht, ListingCache(db), self.blocklist)
        self.profiles = Profiles(identity, self.dht, db)
        self.trade = Trade(self, own_listing=self.listings.find, on_sold=self.listings.sold,
                           on_unsold=self.listings.unsold)
        self.owned = self.trade.owned  # the reviews and reports I wrote, kept and renewed
        self.adverts = ArbiterAdverts(identity, db, self.dht)
        self.recovery = Recovery(identity, self.dht, datadir, listings=self.listings,
                                 profiles=self.profiles, adverts=self.adverts)
        # the escrow needs a chain: only a node given one (Esplora URL, network) has a driver
        self.escrow = EscrowDriver(self, escrow, datadir=datadir,
                                   accepts_arbitration=self.adverts.serving) if escrow else None
        self.arbiters = ArbiterService(self.escrow)
        self.ready = asyncio.Event()

    async def start(self, *, dht_host: str, dht_port: int) -> None:
        """Bind the DHT socket and start the p2p host (no network traffic yet)."""
        await self.dht.listen(dht_port, dht_host)
        await self.host.start()
        if self.escrow is not None:
            await self.escrow.open()
        host, port = self.dht.address
        log.info("node %s: DHT on %s:%d, p2p on %s", self.identity.peer_id, host, port,
                 " ".join(self.host.listen_addrs()))
        if self.host.advertised_addrs() != self.host.listen_addrs():
            log.info("reachable at %s", " ".join(self.host.advertised_addrs()) or
                     "no address yet (no relay reservation): messages come by mailbox")

    async def run(self, stop: asyncio.Event, bootstrap: list[tuple[str, int]]) -> None:
        """Join, serve and keep records alive until `stop` is set; then shut down cleanly."""
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._join(bootstrap)),
                         tg.create_task(self.dht.serve()),
                         tg.create_task(self.messenger.run()),
                         tg.create_task(self.trade.run()),
                         tg.create_task(self.holders.run()),
                         tg.create_task(self.replicator.run()),
                         tg.create_task(self.keeper.run())]
                if self.escrow is not None:
                    tasks.append(tg.create_task(self.escrow.run()))
                await stop.wait()
                log.info("stopping")
                for task in tasks:
                    task.cancel()
        finally:
            await self.close()

    def _own_image(self, digest: bytes) -> bool:
        return digest in self.replicator.own_images()

    def _held_images(self) -> set[bytes]:
        return self.replicator.own_images() | set(self.keeper.held())

    async def _join(self, bootstrap: list[tuple[str, int]]) -> None:
        if not bootstrap:
            log.warning("no bootstrap peers known: waiting for others to contact this node "
                        "(add some with --bootstrap host:port)")
        else:
            contacts = await self.dht.bootstrap(bootstrap)
            if self.dht.bootstrapped:
                log.info("joined the DHT: %d contacts", contacts)
            else:
                log.warning("no bootstrap peer answered (%d tried); retrying with backoff",
                            len(bootstrap))
        self.ready.set()
        renewed_at = float("-inf")
        while True:  # keep our peer record (addresses, encryption key) fresh
            published = self.dht.contact_count() > 0 and await self.peers.publish()
            if published:  # and put out what was saved while no peer could store it
                found = await self.recovery.step()  # after a restore: take back our records
                if found is not None and found.anything:
                    renewed_at = float("-inf")
                await self.listings.publish_pending()
                if time.monotonic() - renewed_at >= RENEW_CHECK_EVERY:
                    renewed_at = time.monotonic()
                    await self.listings.renew()  # and re-sign what would expire soon
                    await self.adverts.renew()
                    await self.profiles.renew()
                    await self.owned.renew()  # reviews (with their rating keys) and reports
            await asyncio.sleep(PEER_RECORD_EVERY if published else 5.0)

    async def close(self) -> None:
        """Stop channels, then the DHT (saving neighbours); safe after a failed start."""
        if self.dht.transport is not None:
            neighbours = self.dht.neighbours()
            if neighbours:
                try:
                    save_neighbours(self.datadir, neighbours)
                except OSError as exc:
                    log.warning("could not save neighbours: %s", exc)
        await self.host.stop()
        self.dht.stop()
