"""Who holds an image, and who keeps images for others: signed records in the DHT.

A `holder` record (one slot per holder under `blob_key(sha256)`) says "ask me for these bytes";
it lives a day and is re-announced every 12 hours while held, so a holder that went away fades
out. A `keeper` record in the keepers directory (`KEEPERS_KEY`) advertises a node that takes
listing images from publishers (`node.p2p.keeper`). Readers verify every record like any other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import cast

from dht.server import DhtError, DhtNode
from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import Holder, Keeper
from p2pmarket.wire.dhtkeys import KEEPERS_KEY, blob_key
from p2pmarket.wire.records import Record, sign_record

log = logging.getLogger(__name__)

HOLDER_TTL = 86_400
REANNOUNCE_AFTER = 12 * 3600
CHECK_EVERY = 60.0  # how often the announce loop looks for held blobs without a fresh record
NOT_READY_RETRY = 2.0
KEEPERS_CACHE = 300.0
ANNOUNCE_CONCURRENCY = 4
MAX_KEEPERS = 256  # the most adverts a reader considers (the directory holds up to 2048)


class Holders:
    """Announce what this node holds (`held()`, re-read on each check) and find other holders."""

    def __init__(self, identity: Identity, dht: DhtNode, *,
                 held: Callable[[], Iterable[bytes]], ready: Callable[[], bool] = lambda: True,
                 advert: Keeper | None = None, clock: Callable[[], float] = time.time) -> None:
        self.identity, self.dht, self.held, self.ready = identity, dht, held, ready
        self.advert, self.clock = advert, clock
        self._announced: dict[bytes, float] = {}  # digest -> when its record went out
        self._advertised = float("-inf")
        self._keepers: tuple[float, list[Record[Keeper]]] | None = None
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(ANNOUNCE_CONCURRENCY)

    def kick(self) -> None:
        """Something new is held: announce it now rather than at the next check."""
        self._wake.set()

    # -- announcing ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep our holder records (and keeper advert) alive; cancel to stop."""
        while True:
            self._wake.clear()
            ready = self.ready() and self.dht.contact_count() > 0
            if ready:
                try:
                    await self.announce_due()
                except DhtError as exc:
                    log.info("could not announce held images: %s", exc)
            try:  # not ready: no peer record yet (nobody could dial us), or no DHT contacts
                async with asyncio.timeout(CHECK_EVERY if ready else NOT_READY_RETRY):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def announce_due(self) -> int:
        """Put a fresh holder record for each held blob whose record is missing or getting old;
        returns how many went out."""
        now = self.clock()
        if self.advert is not None and now - self._advertised >= REANNOUNCE_AFTER:
            record = sign_record(self.identity, self.advert, seq=int(now * 1000),
                                 created=int(now), ttl=HOLDER_TTL)
            if (await self.dht.put(record, remember=False)).ok:
                self._advertised = now
        held = set(self.held())
        for gone in set(self._announced) - held:
            del self._announced[gone]  # its record expires by itself
        due = [d for d in held if now - self._announced.get(d, float("-inf")) >= REANNOUNCE_AFTER]
        done = await asyncio.gather(*(self._announce(d, now) for d in due))
        return sum(done)

    async def _announce(self, digest: bytes, now: float) -> bool:
        async with self._limit:
            record = sign_record(self.identity, Holder(sha256=digest), seq=int(now * 1000),
                                 created=int(now), ttl=HOLDER_TTL)
            try:
                ok = (await self.dht.put(record, remember=False)).ok
            except DhtError as exc:
                log.debug("could not announce blob %s: %s", digest.hex(), exc)
                return False
        if ok:
            self._announced[digest] = now
        return ok

    # -- finding -------------------------------------------------------------------------------

    async def find(self, digest: bytes) -> list[bytes]:
        """Public keys of the nodes that announced `digest`, freshest first, not us."""
        records = await self.dht.get_all(blob_key(digest), max_pages=1)
        found = sorted((r for r in records if isinstance(r.body, Holder)
                        and r.body.sha256 == digest and r.publisher != self.identity.public),
                       key=lambda r: -r.created)
        return [r.publisher for r in found]

    async def keepers(self) -> list[Record[Keeper]]:
        """The keepers' adverts (cached for a few minutes), not ours."""
        now = self.clock()
        if self._keepers is not None and now - self._keepers[0] < KEEPERS_CACHE:
            return self._keepers[1]
        records = await self.dht.get_all(KEEPERS_KEY, max_pages=8)
        found = cast(list[Record[Keeper]], [
            r for r in records
            if isinstance(r.body, Keeper) and r.publisher != self.identity.public][:MAX_KEEPERS])
        self._keepers = (now, found)
        return found
