"""Conversations a buyer opens about a listing before any offer (an `Inquiry`): table and rules.

Sans-IO: `InquiryStore.admit` decides on a peer's inquiry and stores it; the engine sends and emits.
The table is in the "negotiation" component (`trade_store.NEGOTIATION_MIGRATIONS`), next to the
chat lines both kinds of conversation share, so an id names one conversation of either kind.

Caps: a seller keeps at most `MAX_OPEN_PER_PEER` open inquiries per peer and `MAX_OPEN` in all;
"open" means not answered by us and younger than `OPEN_FOR`. What is over a cap is dropped (not
stored, not counted as misbehaviour: throttling is not an offence); what came first stays.
"""

from __future__ import annotations

import logging

import msgspec

from node.trade.errors import NotFound, RemoteProtocolError
from node.trade.orders import Role
from node.trade.store import TradeStore
from p2pmarket.wire.bodies import Listing
from p2pmarket.wire.market import Inquiry
from p2pmarket.wire.records import Record

log = logging.getLogger(__name__)

MAX_OPEN_PER_PEER = 20
MAX_OPEN = 1000
OPEN_FOR = 30 * 86400.0  # seconds an unanswered inquiry counts against the caps


class InquiryView(msgspec.Struct, frozen=True):
    """One inquiry conversation seen from this node (`role` is ours, `peer` the other side)."""

    id: str
    role: Role
    peer: bytes
    listing_id: str
    title: str  # the listing's title when the conversation opened
    created: float
    updated: float


class InquiryStore:
    def __init__(self, store: TradeStore) -> None:
        self.store, self.db = store, store.db  # TradeStore ran the migrations

    def add(self, view: InquiryView) -> None:
        self.db.execute(
            "INSERT INTO inquiries (id, role, peer, listing_id, title, created, updated) "
            "VALUES (?,?,?,?,?,?,?)", (view.id, view.role, view.peer, view.listing_id,
                                       view.title, view.created, view.updated))

    def get(self, conversation: str) -> InquiryView | None:
        row = self.db.query_one("SELECT id, role, peer, listing_id, title, created, updated "
                                "FROM inquiries WHERE id=?", (conversation,))
        if row is None:
            return None
        return InquiryView(id=row["id"], role=Role(row["role"]), peer=row["peer"],
                           listing_id=row["listing_id"], title=row["title"],
                           created=row["created"], updated=row["updated"])

    def view(self, conversation: str) -> InquiryView:
        found = self.get(conversation)
        if found is None:
            raise NotFound(f"no conversation {conversation}")
        return found

    def has_with(self, conversation: str, peer: bytes) -> bool:
        return self.db.query_one("SELECT 1 FROM inquiries WHERE id=? AND peer=?",
                                 (conversation, peer)) is not None

    def mine_about(self, seller: bytes, listing_id: str) -> InquiryView | None:
        """Our newest conversation as the buyer about one listing."""
        row = self.db.query_one("SELECT id FROM inquiries WHERE role='buyer' AND peer=? AND "
                                "listing_id=? ORDER BY created DESC", (seller, listing_id))
        return None if row is None else self.get(row["id"])

    def open_count(self, now: float, peer: bytes | None = None) -> int:
        """Unanswered inquiries peers opened with us since `now - OPEN_FOR` (of `peer`, or all)."""
        sql = "SELECT count(*) FROM inquiries WHERE role='seller' AND answered=0 AND created>?"
        params: tuple[object, ...] = (now - OPEN_FOR,)
        if peer is not None:
            sql, params = sql + " AND peer=?", (*params, peer)
        row = self.db.query_one(sql, params)
        return int(row[0]) if row else 0

    def add_line(self, conversation: str, sender: bytes, text: str, now: float, *,
                 ours: bool) -> None:
        """One chat line in any conversation; an inquiry's `updated` (and `answered`) follow."""
        with self.db.transaction():
            self.store.add_chat(conversation, sender, text, now)
            self.db.execute("UPDATE inquiries SET updated=?, answered=max(answered, ?) "
                            "WHERE id=?", (now, int(ours), conversation))

    def conversation_ids(self) -> list[tuple[str, str]]:
        """(id, "offer" or "inquiry") of every conversation, latest change first."""
        rows = self.db.query(
            "SELECT id, 'offer' AS kind, updated FROM negotiations UNION ALL "
            "SELECT id, 'inquiry' AS kind, updated FROM inquiries ORDER BY updated DESC, id")
        return [(r["id"], r["kind"]) for r in rows]

    # -- a peer's inquiry ----------------------------------------------------------------------

    def admit(self, sender: bytes, inquiry: Inquiry, listing: Record[Listing] | None,
              now: float) -> bool:
        """Store `sender`'s inquiry about our `listing` (None: not one of ours); False when it is
        dropped. Raises RemoteProtocolError for an id that is not the sender's to use."""
        conversation = inquiry.conversation
        if self.store.has_negotiation(conversation):
            raise RemoteProtocolError(f"conversation id {conversation} is a negotiation's")
        known = self.get(conversation)
        if known is not None:
            if known.role is not Role.SELLER or known.peer != sender:
                raise RemoteProtocolError(f"conversation id {conversation} is already used")
            if known.listing_id != inquiry.listing:
                raise RemoteProtocolError(f"conversation {conversation} is about another listing")
            self.add_line(conversation, sender, inquiry.text, now, ours=False)
            return True
        if listing is None:
            log.info("inquiry from %s about %s: no such listing here; dropped",
                     sender.hex()[:16], inquiry.listing)
            return False
        if (self.open_count(now, sender) >= MAX_OPEN_PER_PEER
                or self.open_count(now) >= MAX_OPEN):
            log.info("inquiry from %s: too many open inquiries; dropped", sender.hex()[:16])
            return False
        with self.db.transaction():
            self.add(InquiryView(id=conversation, role=Role.SELLER, peer=sender,
                                 listing_id=inquiry.listing, title=listing.body.title,
                                 created=now, updated=now))
            self.store.add_chat(conversation, sender, inquiry.text, now)
        return True
