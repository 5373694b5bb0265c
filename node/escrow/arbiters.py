"""Arbiters: publish this node's arbiter advert in the DHT directory (`ARBITERS_KEY`), list the
adverts found there, and, as an arbiter, see each dispute as a case and rule on it.

A case shows both parties' signed order logs (each verified when it arrived, here re-read), the
listing copies they sent, and every statement on the escrow (dispute reasons, evidence). A
ruling is made through the escrow driver; it is allowed once both parties were heard, or at the
ruling deadline when one party never answered. The advert's `description` carries the arbiter's
languages and terms text (the record has no separate fields for them).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec

from dht.server import DhtNode
from escrow.terms import DisputeOpened, Evidence, LocalEscrowError, Role, State
from node.escrow.book import RulingView, decode_event
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Arbiter, Listing, Tombstone
from p2pmarket.wire.dhtkeys import ARBITERS_KEY
from p2pmarket.wire.market import listing_ref
from p2pmarket.wire.order_steps import OrderLogError, verify_chain
from p2pmarket.wire.records import Record, RecordError, decode_record, sign_record

if TYPE_CHECKING:
    from node.escrow.driver import EscrowDriver

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE arbiter_advert (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        raw BLOB NOT NULL,            -- our signed advert, or the tombstone that withdrew it
        live INTEGER NOT NULL
    );
    """,
]


async def list_arbiters(dht: DhtNode) -> list[Record[Arbiter]]:
    """The live adverts in the directory (a withdrawn one is a tombstone in its slot)."""
    found: list[Record[Arbiter]] = [
        r for r in await dht.get_all(ARBITERS_KEY, max_pages=8)  # type: ignore[misc]
        if isinstance(r.body, Arbiter)]
    return sorted(found, key=lambda r: (r.body.name, r.publisher))


async def find_advert(dht: DhtNode, arbiter: bytes) -> Record[Arbiter] | None:
    return next((r for r in await list_arbiters(dht) if r.publisher == arbiter), None)


# -- what an arbiter sees ------------------------------------------------------------------------


class CaseStep(msgspec.Struct, frozen=True):
    index: int
    by: str  # buyer or seller
    at_ms: int
    kind: str  # opened, address, paid, shipped, received, settled, cancelled


class CaseFile(msgspec.Struct, frozen=True):
    """One party's copy of the order log, and the listing it sent (if any)."""

    party: Role
    steps: tuple[CaseStep, ...]
    head: str  # hash of the last step: two copies agree up to where their heads differ
    listing_title: str
    listing_description: str
    listing_matches: bool  # the listing copy is the version the order was made on
    at: float


class Statement(msgspec.Struct, frozen=True):
    by: Role
    kind: str  # dispute_opened or evidence
    text: str
    attachments: tuple[str, ...]  # blob sha256s (hex)


class DisputeView(msgspec.Struct, frozen=True):
    order: str
    state: State
    amount_sats: int
    max_fee_sats: int  # the arbiter fee agreed in the terms
    buyer: bytes
    seller: bytes
    opened_by: Role | None
    heard: tuple[Role, ...]
    ruling_due: int | None
    can_rule: bool
    statements: tuple[Statement, ...]
    cases: tuple[CaseFile, ...]
    ruling: RulingView | None


class ArbiterService:
    def __init__(self, identity: Identity, db: Database, dht: DhtNode,
                 escrow: EscrowDriver | None = None) -> None:
        self.identity, self.db, self.dht, self.escrow = identity, db, dht, escrow
        db.migrate("arbiters", MIGRATIONS)

    # -- the advert ---------------------------------------------------------------------------

    def advert(self) -> Record[Arbiter] | None:
        """Our live advert, if we serve as an arbiter."""
        row = self.db.query_one("SELECT raw, live FROM arbiter_advert WHERE id=1")
        if row is None or not row["live"]:
            return None
        record = decode_record(row["raw"], allow_expired=True)
        return record if isinstance(record.body, Arbiter) else None  # type: ignore[return-value]

    def _seq(self) -> int:
        row = self.db.query_one("SELECT raw FROM arbiter_advert WHERE id=1")
        last = decode_record(row["raw"], allow_expired=True).seq if row else 0
        return max(last + 1, int(time.time() * 1000))

    async def publish(self, name: str, description: str = "", fee_percent_bp: int = 0,
                      fee_fixed_sat: int = 0) -> Record[Arbiter]:
        """Offer to arbitrate (or change the terms): sign the advert and put it in the DHT."""
        try:
            body = msgspec.convert(dict(name=name, description=description,
                                        fee_percent_bp=fee_percent_bp,
                                        fee_fixed_sat=fee_fixed_sat), Arbiter)
        except msgspec.ValidationError as exc:
            raise LocalEscrowError(f"bad advert: {exc}") from exc
        record = sign_record(self.identity, body, seq=self._seq())
        self._save(record.raw, live=True)
        report = await self.dht.put(record)
        if not report.ok:
            log.warning("arbiter advert not stored by any DHT node yet (%s)", report.refused)
        return record

    async def withdraw(self) -> None:
        """Stop serving as an arbiter: a tombstone replaces the advert in the directory."""
        tomb = sign_record(self.identity, Tombstone(target_kind="arbiter"), seq=self._seq())
        self._save(tomb.raw, live=False)
        await self.dht.put(tomb)

    def _save(self, raw: bytes, *, live: bool) -> None:
        self.db.execute("INSERT INTO arbiter_advert (id, raw, live) VALUES (1, ?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET raw=excluded.raw, live=excluded.live",
                        (raw, int(live)))

    async def directory(self) -> list[Record[Arbiter]]:
        return await list_arbiters(self.dht)

    # -- disputes -----------------------------------------------------------------------------

    def _driver(self) -> EscrowDriver:
        if self.escrow is None:
            raise LocalEscrowError("this node has no chain configured, so no escrow")
        return self.escrow

    def disputes(self) -> list[DisputeView]:
        """Escrows we arbitrate that were ever disputed, newest first."""
        driver = self._driver()
        ids = [e.order_id for e in driver.escrows.values()
               if e.role is Role.ARBITER and e.machine.disputed_by is not None]
        return [self.dispute(i) for i in reversed(ids)]

    def dispute(self, order_id: str) -> DisputeView:
        driver = self._driver()
        esc = driver._escrow(order_id)
        m = esc.machine
        statements = []
        for row in driver.store.steps(order_id, "applied"):
            event = decode_event(row.event)
            if isinstance(event, DisputeOpened | Evidence):
                text = event.reason if isinstance(event, DisputeOpened) else event.text
                files = event.attachments if isinstance(event, Evidence) else ()
                statements.append(Statement(Role(row.author), str(event.__struct_config__.tag),
                                            text, tuple(a.hex() for a in files)))
        cases = tuple(_case_file(Role(c.party), c.order_log, c.listing, c.at)
                      for c in driver.store.cases(order_id))
        due = m.deadline("ruling")
        heard = {Role.BUYER, Role.SELLER} <= m.heard
        r = m.ruling
        return DisputeView(
            order=order_id, state=m.state, amount_sats=esc.terms.amount_sats,
            max_fee_sats=esc.terms.arbiter_fee_sats, buyer=esc.proposal.buyer,
            seller=esc.proposal.seller, opened_by=m.disputed_by,
            heard=tuple(sorted(m.heard)), ruling_due=due,
            can_rule=m.state is State.DISPUTED and r is None and (
                heard or (due is not None and driver.now() >= due)),
            statements=tuple(statements), cases=cases,
            ruling=RulingView(r.buyer_sats, r.seller_sats, r.fee_sats, r.note) if r else None)

    async def rule(self, order_id: str, buyer_sats: int, seller_sats: int,
                   note: str = "") -> DisputeView:
        await self._driver().rule(order_id, buyer_sats, seller_sats, note)
        return self.dispute(order_id)

    async def rule_for(self, order_id: str, winner: Role, note: str = "") -> DisputeView:
        await self._driver().rule_for(order_id, winner, note)
        return self.dispute(order_id)


def _case_file(party: Role, raws: list[bytes], listing_raw: bytes, at: float) -> CaseFile:
    try:
        log_ = verify_chain(raws)
    except OrderLogError:  # checked on arrival; only a corrupted database gets here
        return CaseFile(party, (), "", "", "", False, at)
    first = log_.entries[0].action
    seller = log_.entries[0].author
    steps = tuple(CaseStep(e.step.index, "seller" if e.author == seller else "buyer",
                           e.step.at_ms, str(e.action.__struct_config__.tag))
                  for e in log_.entries)
    title = description = ""
    matches = False
    if listing_raw:
        try:
            record = decode_record(listing_raw, allow_expired=True)
        except RecordError:
            record = None
        if record is not None and isinstance(record.body, Listing) and record.publisher == seller:
            title, description = record.body.title, record.body.description
            matches = listing_ref(record) == getattr(first, "listing", None)  # type: ignore[arg-type]
    return CaseFile(party, steps, log_.entries[-1].hash.hex(), title, description, matches, at)
