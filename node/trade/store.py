"""What the trade service keeps and shows: its SQLite tables and the API's views of them.

Negotiations are stored as their messages and orders as their signed steps; the machines are
rebuilt by replaying them, so the tables hold evidence, not conclusions (the `state` columns are
there for listing and sorting). Components "negotiation" and "orders".
"""

from __future__ import annotations

import msgspec

from node.p2p.seal import SealError, encryption_key, unseal
from node.trade.errors import NotFound, TradeError
from node.trade.negotiation import Negotiation, NegotiationState, Proposal
from node.trade.orders import Order, OrderState, Role
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Listing, Price
from p2pmarket.wire.market import (
    Action,
    AddressSent,
    ListingRef,
    NegotiationBody,
    Offer,
    PaymentConfirmed,
    Shipped,
)
from p2pmarket.wire.records import Record, RecordError, decode_record

NEGOTIATION_MIGRATIONS = [
    """
    CREATE TABLE negotiations (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('buyer', 'seller')),
        seller BLOB NOT NULL,
        buyer BLOB NOT NULL,
        listing_id TEXT NOT NULL,
        listing_raw BLOB,              -- the buyer's copy of the listing it offered on
        state TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX negotiations_listing ON negotiations (seller, listing_id);
    CREATE TABLE negotiation_events (
        negotiation_id TEXT NOT NULL REFERENCES negotiations (id),
        idx INTEGER NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('sent', 'received')),
        body BLOB NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (negotiation_id, idx)
    );
    CREATE TABLE chat (
        id INTEGER PRIMARY KEY,
        conversation TEXT NOT NULL,
        sender BLOB NOT NULL,
        text TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX chat_conversation ON chat (conversation, id);
    """,
    # conversations opened by an Inquiry, before any offer (node.trade.inquiries)
    """
    CREATE TABLE inquiries (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('buyer', 'seller')),
        peer BLOB NOT NULL,
        listing_id TEXT NOT NULL,
        title TEXT NOT NULL,
        answered INTEGER NOT NULL DEFAULT 0,  -- we wrote in it (the caps count unanswered ones)
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX inquiries_peer ON inquiries (peer, created);
    CREATE INDEX inquiries_updated ON inquiries (updated);
    """,
]
ORDER_MIGRATIONS = [
    """
    CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        negotiation_id TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('buyer', 'seller')),
        listing_id TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        state TEXT NOT NULL,
        address TEXT,                  -- the buyer's own plaintext copy
        sold INTEGER NOT NULL DEFAULT 0,    -- on_sold hook: 0 not due, 1 due, 2 done
        unsold INTEGER NOT NULL DEFAULT 0,  -- on_unsold hook, likewise
        review_seq INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE order_steps (
        order_id TEXT NOT NULL REFERENCES orders (id),
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        raw BLOB NOT NULL,
        PRIMARY KEY (order_id, idx)
    );
    """,
]

_encoder = msgspec.msgpack.Encoder()
_body_decoder = msgspec.msgpack.Decoder(NegotiationBody)


# -- views (for the API) -----------------------------------------------------------------------


class NegotiationView(msgspec.Struct, frozen=True):
    id: str
    role: Role
    state: NegotiationState
    seller: bytes
    buyer: bytes
    listing: ListingRef  # the newest version any proposal is bound to
    title: str
    proposals: tuple[Proposal, ...]
    stale: bool  # the listing changed since the proposal we could accept
    order_id: str | None
    reason: str
    updated: float


class StepView(msgspec.Struct, frozen=True):
    index: int
    hash: str
    by: Role
    at_ms: int
    action: Action


class OrderView(msgspec.Struct, frozen=True):
    id: str
    negotiation: str
    role: Role
    state: OrderState
    seller: bytes
    buyer: bytes
    listing: ListingRef
    title: str
    quantity: int
    price: Price
    payment: PaymentConfirmed | None
    shipment: Shipped | None
    address: str | None  # plaintext: the buyer's copy, or unsealed by the seller
    can: tuple[str, ...]  # the steps we may take now
    log: tuple[StepView, ...]


def negotiation_view(neg: Negotiation, current: Record[Listing] | None,
                     updated: float) -> NegotiationView:
    theirs = neg.latest(neg.our_role.other)
    stale = theirs is not None and (current.seq > theirs.listing.seq if current is not None
                                    else neg.our_role is Role.SELLER)
    return NegotiationView(
        id=neg.id, role=neg.our_role, state=neg.state, seller=neg.seller, buyer=neg.buyer,
        listing=neg.listing, title=current.body.title if current else "",
        proposals=tuple(neg.proposals), stale=stale, order_id=neg.order_id, reason=neg.reason,
        updated=updated)


def order_view(order: Order, identity: Identity, address: str | None) -> OrderView:
    sealed = order.last(AddressSent)
    if address is None and order.our_role is Role.SELLER and sealed is not None:
        box = sealed.action
        assert isinstance(box, AddressSent)
        try:
            address = unseal(encryption_key(identity), box.ephemeral, box.nonce,
                             box.ciphertext).decode()
        except (SealError, UnicodeDecodeError):
            address = None
    paid, shipped = order.last(PaymentConfirmed), order.last(Shipped)
    return OrderView(
        id=order.id, negotiation=order.terms.negotiation, role=order.our_role,
        state=order.state, seller=order.seller, buyer=order.buyer, listing=order.terms.listing,
        title=order.terms.title, quantity=order.terms.quantity, price=order.terms.price,
        payment=paid.action if paid and isinstance(paid.action, PaymentConfirmed) else None,
        shipment=shipped.action if shipped and isinstance(shipped.action, Shipped) else None,
        address=address,
        can=tuple(_tag(a) for a in order.allowed(order.our_role)),
        log=tuple(StepView(index=e.step.index, hash=e.hash.hex(),
                           by=order.role_of(e.author) or Role.SELLER, at_ms=e.step.at_ms,
                           action=e.action) for e in order.log.entries))


def _tag(action: type[Action]) -> str:
    return str(action.__struct_config__.tag)


# -- storage -----------------------------------------------------------------------------------


class TradeStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("negotiation", NEGOTIATION_MIGRATIONS)
        db.migrate("orders", ORDER_MIGRATIONS)

    # negotiations

    def add_negotiation(self, neg: Negotiation, listing_raw: bytes | None, now: float) -> None:
        self.db.execute(
            "INSERT INTO negotiations VALUES (?,?,?,?,?,?,?,?,?)",
            (neg.id, neg.our_role, neg.seller, neg.buyer, neg.listing_id, listing_raw,
             neg.state, now, now))

    def add_event(self, neg: Negotiation, body: NegotiationBody, direction: str,
                  now: float) -> None:
        with self.db.transaction():
            row = self.db.query_one("SELECT count(*) FROM negotiation_events "
                                    "WHERE negotiation_id=?", (neg.id,))
            self.db.execute("INSERT INTO negotiation_events VALUES (?,?,?,?,?)",
                            (neg.id, int(row[0]) if row else 0, direction,
                             _encoder.encode(body), now))
            self.db.execute("UPDATE negotiations SET state=?, updated=? WHERE id=?",
                            (neg.state, now, neg.id))

    def load_negotiation(self, negotiation_id: str) -> Negotiation:
        row = self.db.query_one("SELECT * FROM negotiations WHERE id=?", (negotiation_id,))
        if row is None:
            raise NotFound(f"no negotiation {negotiation_id}")
        events = self.db.query("SELECT direction, body FROM negotiation_events WHERE "
                               "negotiation_id=? ORDER BY idx", (negotiation_id,))
        bodies = [(e["direction"], _body_decoder.decode(e["body"])) for e in events]
        if not bodies or not isinstance(bodies[0][1], Offer):
            raise TradeError(f"stored negotiation {negotiation_id} does not open with an offer")
        neg = Negotiation(bodies[0][1], seller=row["seller"], buyer=row["buyer"],
                          our_role=Role(row["role"]))
        for direction, body in bodies[1:]:
            if direction == "sent":
                neg.send(body)
            else:
                neg.receive(body)
        return neg

    def has_negotiation(self, negotiation_id: str) -> bool:
        return self.db.query_one("SELECT 1 FROM negotiations WHERE id=?",
                                 (negotiation_id,)) is not None

    def has_negotiation_with(self, negotiation_id: str, peer: bytes) -> bool:
        return self.db.query_one(
            "SELECT 1 FROM negotiations WHERE id=? AND ((role='seller' AND buyer=?) OR "
            "(role='buyer' AND seller=?))", (negotiation_id, peer, peer)) is not None

    def open_negotiations(self, seller: bytes, listing_id: str) -> list[str]:
        """Our open negotiations as the buyer on one listing."""
        rows = self.db.query(
            "SELECT id FROM negotiations WHERE role='buyer' AND seller=? AND listing_id=? AND "
            "state IN ('open', 'countered') ORDER BY updated DESC", (seller, listing_id))
        return [r["id"] for r in rows]

    def negotiation_ids(self) -> list[str]:
        return [r["id"] for r in self.db.query(
            "SELECT id FROM negotiations ORDER BY updated DESC")]

    def negotiations_in(self, role: str, state: str) -> list[str]:
        return [r["id"] for r in self.db.query(
            "SELECT id FROM negotiations WHERE role=? AND state=?", (role, state))]

    def updated(self, negotiation_id: str) -> float:
        row = self.db.query_one("SELECT updated FROM negotiations WHERE id=?",
                                (negotiation_id,))
        return float(row[0]) if row else 0.0

    def offered_listing(self, negotiation_id: str) -> Record[Listing] | None:
        """The listing copy a negotiation started on (the buyer's, or the seller's own version
        the offer named)."""
        row = self.db.query_one("SELECT listing_raw FROM negotiations WHERE id=? AND "
                                "listing_raw IS NOT NULL", (negotiation_id,))
        return _listing(row[0]) if row else None

    def listing(self, seller: bytes, listing_id: str) -> Record[Listing] | None:
        """The newest listing copy we offered on."""
        row = self.db.query_one(
            "SELECT listing_raw FROM negotiations WHERE seller=? AND listing_id=? AND "
            "listing_raw IS NOT NULL ORDER BY created DESC", (seller, listing_id))
        return _listing(row[0]) if row else None

    # chat

    def add_chat(self, conversation: str, sender: bytes, text: str, now: float) -> None:
        self.db.execute("INSERT INTO chat (conversation, sender, text, at) VALUES (?,?,?,?)",
                        (conversation, sender, text, now))

    def chat(self, conversation: str) -> list[tuple[bytes, str, float]]:
        rows = self.db.query("SELECT sender, text, at FROM chat WHERE conversation=? "
                             "ORDER BY id", (conversation,))
        return [(r["sender"], r["text"], r["at"]) for r in rows]

    # orders

    def add_order(self, order: Order, now: float) -> None:
        seller = order.our_role is Role.SELLER
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO orders (id, negotiation_id, role, listing_id, quantity, state, "
                "sold, created, updated) VALUES (?,?,?,?,?,?,?,?,?)",
                (order.id, order.terms.negotiation, order.our_role, order.terms.listing.id,
                 order.terms.quantity, order.state, 1 if seller else 0, now, now))
            self.save_steps(order, 0, order.state, now)

    def save_steps(self, order: Order, start: int, before: OrderState, now: float) -> None:
        """Store the log from entry `start` on (earlier entries are unchanged)."""
        with self.db.transaction():
            self.db.execute("DELETE FROM order_steps WHERE order_id=? AND idx>=?",
                            (order.id, start))
            self.db.executemany("INSERT INTO order_steps VALUES (?,?,?,?)", [
                (order.id, e.step.index, e.hash, e.raw) for e in order.log.entries[start:]])
            self.db.execute("UPDATE orders SET state=?, updated=? WHERE id=?",
                            (order.state, now, order.id))
            if order.state is OrderState.CANCELLED and before is not OrderState.CANCELLED:
                # a sale not yet reported needs no report; a reported one is given back
                self.db.execute("UPDATE orders SET unsold=CASE sold WHEN 2 THEN 1 ELSE 0 END, "
                                "sold=CASE sold WHEN 1 THEN 0 ELSE sold END WHERE id=? AND "
                                "role='seller'", (order.id,))

    def load_order(self, order_id: str) -> Order:
        row = self.db.query_one("SELECT role FROM orders WHERE id=?", (order_id,))
        if row is None:
            raise NotFound(f"no order {order_id}")
        raws = [r["raw"] for r in self.db.query(
            "SELECT raw FROM order_steps WHERE order_id=? ORDER BY idx", (order_id,))]
        return Order.restore(raws, Role(row["role"]))

    def orders_in(self, role: str, state: str) -> list[str]:
        return [r["id"] for r in self.db.query(
            "SELECT id FROM orders WHERE role=? AND state=?", (role, state))]

    def order_ids(self) -> list[str]:
        return [r["id"] for r in self.db.query("SELECT id FROM orders ORDER BY updated DESC")]

    def address(self, order_id: str) -> str | None:
        row = self.db.query_one("SELECT address FROM orders WHERE id=?", (order_id,))
        return None if row is None else row[0]

    def set_address(self, order_id: str, address: str) -> None:
        self.db.execute("UPDATE orders SET address=? WHERE id=?", (address, order_id))

    def review_seq(self, order_id: str) -> int:
        row = self.db.query_one("SELECT review_seq FROM orders WHERE id=?", (order_id,))
        return 0 if row is None else int(row[0])

    def set_review_seq(self, order_id: str, seq: int) -> None:
        self.db.execute("UPDATE orders SET review_seq=? WHERE id=?", (seq, order_id))

    def due_hooks(self) -> list[tuple[str, str, str, int]]:
        """(order id, "sold" or "unsold", listing id, quantity) still to report."""
        rows = self.db.query("SELECT id, sold, unsold, listing_id, quantity FROM orders "
                             "WHERE sold=1 OR unsold=1 ORDER BY created")
        return [(r["id"], "sold" if r["sold"] == 1 else "unsold", r["listing_id"],
                 r["quantity"]) for r in rows]

    def hook_done(self, order_id: str, hook: str) -> None:
        column = "sold" if hook == "sold" else "unsold"
        self.db.execute(f"UPDATE orders SET {column}=2 WHERE id=?", (order_id,))


def _listing(raw: bytes) -> Record[Listing] | None:
    try:
        record = decode_record(raw, allow_expired=True)
    except RecordError:
        return None
    return record if isinstance(record.body, Listing) else None  # type: ignore[return-value]
