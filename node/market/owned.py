"""Records this node signed that have no table of their own (reviews it wrote, listing reports):
kept with their bytes and last publication, renewed before they expire, shown to the owner.

A review is signed by a per-order rating key, not the node's identity; the key is derived again
from the identity and the negotiation id (`signer`), so no secret is stored. `RecordState` is the
owner's view of any own record (listings, profile, advert and peer record too; see `record_state`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dht.server import DhtError, DhtNode, PutReport
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Body
from p2pmarket.wire.dhtkeys import record_key, renewal
from p2pmarket.wire.records import AnyRecord, Record, RecordError, decode_record

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE own_records (
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,         -- what it is about: the order id (review), PEER/LISTING (report)
        seq INTEGER NOT NULL,
        raw BLOB NOT NULL,         -- the signed record, as last published
        signer TEXT,               -- NULL: signed by the node's identity; else what its key
                                   -- derives from (a review's negotiation id)
        published REAL,            -- when a DHT node last stored it; NULL: not stored yet
        error TEXT,                -- why the last attempt stored it nowhere
        PRIMARY KEY (kind, ref)
    );
    """,
]

NOT_STORED = "not stored by any DHT node yet; the node keeps trying"


@dataclass(frozen=True, slots=True)
class RecordState:
    """One of my records as its owner sees it: where it lives, until when, whether it is out."""

    kind: str
    ref: str  # listing id, order id, PEER/LISTING, or "" for one-per-node records
    key: bytes  # the DHT key it is stored under
    seq: int
    expires: int
    published: float | None  # when a DHT node last stored this version; None: not yet
    error: str | None  # set when no DHT node stored it


def record_state(record: AnyRecord, ref: str, published: float | None,
                 error: str | None = None) -> RecordState:
    """The state of an own record; one never stored anywhere is an error, not 'published'."""
    if published is None and error is None:
        error = NOT_STORED
    return RecordState(record.kind, ref, record_key(record), record.seq, record.expires,
                       published, None if published is not None else error)


def put_error(report: PutReport) -> str:
    refused = ", ".join(f"{why} x{n}" for why, n in sorted(report.refused.items()))
    return "no DHT node stored it" + (f" ({refused})" if refused else " (no peers)")


class OwnRecords:
    """Publish, keep and renew my reviews and reports (`derive(signer)` gives a derived key)."""

    def __init__(self, identity: Identity, db: Database, dht: DhtNode | None, *,
                 derive: Callable[[str], Identity] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.identity, self.db, self.dht, self.clock = identity, db, dht, clock
        self.derive = derive
        db.migrate("owned", MIGRATIONS)

    async def publish(self, record: AnyRecord, ref: str, *, signer: str | None = None
                      ) -> PutReport:
        """Keep `record` (it replaces my earlier one of its kind and ref), then put it in the
        DHT; a failed put is kept as the record's error and tried again by `renew`."""
        self.db.execute(
            "INSERT INTO own_records (kind, ref, seq, raw, signer) VALUES (?,?,?,?,?) "
            "ON CONFLICT (kind, ref) DO UPDATE SET seq=excluded.seq, raw=excluded.raw, "
            "signer=excluded.signer, published=NULL, error=NULL",
            (record.kind, ref, record.seq, record.raw, signer))
        return await self._put(record, ref)

    async def _put(self, record: AnyRecord, ref: str) -> PutReport:
        if self.dht is None:
            raise DhtError("no DHT to publish in")
        try:
            report = await self.dht.put(record)
        except DhtError as exc:
            self._note(record, ref, None, str(exc))
            raise
        if report.ok:
            self._note(record, ref, self.clock(), None)
        else:
            self._note(record, ref, None, put_error(report))
            log.warning("my %s %s was not stored anywhere (%s); the node tries again",
                        record.kind, ref, report.refused)
        return report

    def _note(self, record: AnyRecord, ref: str, published: float | None,
              error: str | None) -> None:
        self.db.execute("UPDATE own_records SET published=?, error=? WHERE kind=? AND ref=? "
                        "AND raw=?", (published, error, record.kind, ref, record.raw))

    def _rows(self) -> list[tuple[Record[Body], str, str | None, float | None, str | None]]:
        out = []
        for row in self.db.query("SELECT ref, raw, signer, published, error FROM own_records "
                                 "ORDER BY kind, ref"):
            record = decode_record(row["raw"], allow_expired=True, verified=True,
                                   now=self.clock())
            out.append((record, row["ref"], row["signer"], row["published"], row["error"]))
        return out

    def last_seq(self, kind: str, ref: str) -> int:
        """The seq of my current record of this kind and ref (0: none)."""
        row = self.db.query_one("SELECT seq FROM own_records WHERE kind=? AND ref=?", (kind, ref))
        return 0 if row is None else int(row["seq"])

    def published_at(self, record: AnyRecord) -> float | None:
        """When a DHT node stored this very record (None: not stored, or replaced since)."""
        row = self.db.query_one("SELECT published FROM own_records WHERE kind=? AND raw=?",
                                (record.kind, record.raw))
        return None if row is None else row["published"]

    def states(self) -> list[RecordState]:
        return [record_state(record, ref, published, error)
                for record, ref, _, published, error in self._rows()]

    def _signer(self, name: str | None) -> Identity:
        if name is None:
            return self.identity
        if self.derive is None:
            raise RecordError(f"no way to derive the key {name!r} signed with")
        return self.derive(name)

    async def renew(self) -> int:
        """Re-sign (same seq and content, a new lifetime, with the key that signed it) what
        expires within RENEW_BEFORE or lapsed while the node was off, and publish it; put out
        again what no DHT node stored yet. Returns how many were stored."""
        if self.dht is None:
            return 0
        done = 0
        for record, ref, signer, published, _ in self._rows():
            try:
                key = self._signer(signer)
            except RecordError as exc:
                log.warning("cannot renew my %s %s: %s", record.kind, ref, exc)
                continue
            if key.public != record.publisher:
                log.warning("cannot renew my %s %s: the derived key is not its signer",
                            record.kind, ref)
                continue
            renewed = renewal(key, record, self.clock())
            if renewed is None and published is not None:
                continue
            if renewed is not None:
                self.db.execute("UPDATE own_records SET raw=?, published=NULL, error=NULL "
                                "WHERE kind=? AND ref=? AND raw=?",
                                (renewed.raw, record.kind, ref, record.raw))
                record = renewed
            try:
                done += (await self._put(record, ref)).ok
            except DhtError as exc:
                log.warning("cannot publish my %s %s: %s", record.kind, ref, exc)
        return done
