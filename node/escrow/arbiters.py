"""Arbitration: as an arbiter, see each dispute as a case and rule on it (the advert that makes
this node an arbiter is `node.escrow.adverts`).

A case shows both parties' signed order logs (each verified when it arrived, here re-read), the
listing copies they sent, and every statement on the escrow (dispute reasons, evidence). A
ruling is made through the escrow driver; it is allowed once both parties were heard, or at the
ruling deadline when one party never answered.
"""

from __future__ import annotations

import msgspec

from escrow.terms import DisputeOpened, Evidence, LocalEscrowError, Role, State
from node.escrow.book import RulingView, decode_event
from node.escrow.driver import EscrowDriver
from p2pmarket.wire.bodies import Listing
from p2pmarket.wire.market import listing_ref
from p2pmarket.wire.order_steps import OrderLogError, verify_chain
from p2pmarket.wire.records import RecordError, decode_record

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
    """The disputes of the escrows this node arbitrates; `escrow` is None on a node without a
    chain (then every call says so)."""

    def __init__(self, escrow: EscrowDriver | None) -> None:
        self.escrow = escrow

    # -- disputes -----------------------------------------------------------------------------

    def _driver(self) -> EscrowDriver:
        if self.escrow is None:
            raise LocalEscrowError("this node has no chain configured, so no escrow")
        return self.escrow

    def disputes(self) -> list[DisputeView]:
        """Escrows we arbitrate that were ever disputed, newest first."""
        driver = self._driver()
        ids = [e.order_id for e in driver.book.escrows.values()
               if e.role is Role.ARBITER and e.machine.disputed_by is not None]
        return [self.dispute(i) for i in reversed(ids)]

    def dispute(self, order_id: str) -> DisputeView:
        driver = self._driver()
        esc = driver.book.get(order_id)
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
