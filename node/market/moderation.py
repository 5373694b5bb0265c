"""Local blocklist (peers and listings) and signed listing reports in the DHT.

Blocking is local: blocked sellers' listings never show in search and their messages are
dropped. A report is a signed record under the listing's report key; readers show the count.
"""

from __future__ import annotations

import time

from dht.server import DhtNode
from node.market.owned import OwnRecords
from p2pmarket.identity import peer_id_from_public
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Report, ReportReason
from p2pmarket.wire.dhtkeys import reports_key
from p2pmarket.wire.records import Record, sign_record

MIGRATIONS = [
    """
    CREATE TABLE blocked_peers (
        publisher BLOB PRIMARY KEY,
        reason TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE blocked_listings (
        publisher BLOB NOT NULL,
        id TEXT NOT NULL,
        reason TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (publisher, id)
    );
    """,
]


class Blocklist:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("moderation", MIGRATIONS)
        self._peers: set[bytes] = {r["publisher"] for r in
                                   db.query("SELECT publisher FROM blocked_peers")}

    def block_peer(self, publisher: bytes, reason: str = "") -> None:
        self.db.execute("INSERT OR REPLACE INTO blocked_peers VALUES (?,?,?)",
                        (publisher, reason, time.time()))
        self._peers.add(publisher)

    def unblock_peer(self, publisher: bytes) -> None:
        self.db.execute("DELETE FROM blocked_peers WHERE publisher=?", (publisher,))
        self._peers.discard(publisher)

    def block_listing(self, publisher: bytes, listing_id: str, reason: str = "") -> None:
        self.db.execute("INSERT OR REPLACE INTO blocked_listings VALUES (?,?,?,?)",
                        (publisher, listing_id, reason, time.time()))

    def unblock_listing(self, publisher: bytes, listing_id: str) -> None:
        self.db.execute("DELETE FROM blocked_listings WHERE publisher=? AND id=?",
                        (publisher, listing_id))

    def is_blocked_peer(self, publisher: bytes) -> bool:
        return publisher in self._peers

    def blocked_peers(self) -> list[bytes]:
        return sorted(self._peers)

    def blocked_listing_ids(self) -> list[str]:
        return [r["id"] for r in self.db.query("SELECT id FROM blocked_listings")]

    def is_blocked_listing(self, publisher: bytes, listing_id: str) -> bool:
        return publisher in self._peers or self.db.query_one(
            "SELECT 1 FROM blocked_listings WHERE publisher=? AND id=?",
            (publisher, listing_id)) is not None


def report_ref(publisher: bytes, listing_id: str) -> str:
    """How my report of a listing is named among my records: PEER_ID/LISTING_ID."""
    return f"{peer_id_from_public(publisher)}/{listing_id}"


async def report_listing(owned: OwnRecords, publisher: bytes, listing_id: str,
                         reason: ReportReason, text: str = "") -> Record[Report]:
    """Sign and publish my report (reporting again replaces it); it is kept among my records
    and renewed while the node runs, so it counts as long as I stand by it."""
    now, ref = owned.clock(), report_ref(publisher, listing_id)
    record = sign_record(owned.identity, Report(listing_publisher=publisher,
                                                listing_id=listing_id, reason=reason, text=text),
                         seq=max(int(now * 1000), owned.last_seq("report", ref) + 1),
                         created=int(now))
    await owned.publish(record, ref)
    return record


async def report_count(dht: DhtNode, publisher: bytes, listing_id: str) -> int:
    records = await dht.get_all(reports_key(publisher, listing_id), max_pages=4)
    return len({r.publisher for r in records if isinstance(r.body, Report)})
