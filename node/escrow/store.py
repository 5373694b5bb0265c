"""What the escrow driver keeps in SQLite (component "escrow"): escrows, their steps, the inbox of
escrow messages not yet handled, and the arbiter's case files.

Steps are stored as evidence (the signed bytes) with how they were used: `applied` steps, in the
order they were fed to the machine, rebuild it on a restart; `pending` ones wait for a state in
which they are legal; `rejected` ones broke a rule; `noted` ones are kept but never fed (a peer's
claim of funding: every node checks the chain itself).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from escrow.bitcoin import legacy_order_index
from p2pmarket.storage import Database
from p2pmarket.wire.escrow import EscrowBody, digest

MIGRATIONS = [
    """
    CREATE TABLE escrows (
        order_id TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('buyer', 'seller', 'arbiter')),
        proposal BLOB NOT NULL,        -- the buyer's signed proposal
        state TEXT NOT NULL,
        funding_tx BLOB,               -- the funding transaction, once seen on chain
        settlement_tx BLOB,            -- the final transaction, once finalized here
        flags TEXT NOT NULL DEFAULT '',  -- one-off actions done (escrow_book.Flag)
        created INTEGER NOT NULL,      -- machine clock at creation
        updated REAL NOT NULL
    );
    CREATE TABLE escrow_steps (
        id INTEGER PRIMARY KEY,        -- arrival order
        order_id TEXT NOT NULL REFERENCES escrows (order_id),
        hash BLOB NOT NULL,
        author TEXT NOT NULL,          -- the author's role
        raw BLOB,                      -- signed step; NULL for a local event (clock, watcher)
        event BLOB NOT NULL,           -- msgpack of the escrow event
        status TEXT NOT NULL CHECK (status IN ('applied', 'pending', 'rejected', 'noted')),
        applied INTEGER,               -- feeding order of applied steps
        at INTEGER NOT NULL,           -- machine clock when fed (or received)
        reason TEXT NOT NULL DEFAULT '',
        UNIQUE (order_id, hash)
    );
    CREATE TABLE escrow_inbox (
        id INTEGER PRIMARY KEY,
        sender BLOB NOT NULL,
        order_id TEXT NOT NULL,
        body BLOB NOT NULL,            -- msgpack of a p2pmarket.wire.escrow.EscrowBody
        parked INTEGER NOT NULL DEFAULT 0,  -- waits for its escrow to exist
        at REAL NOT NULL
    );
    CREATE INDEX escrow_inbox_order ON escrow_inbox (order_id, parked);
    CREATE TABLE escrow_cases (
        order_id TEXT NOT NULL REFERENCES escrows (order_id),
        party TEXT NOT NULL,
        order_log BLOB NOT NULL,       -- msgpack list of the party's signed order steps
        listing BLOB NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (order_id, party)
    );
    """,
    # the key registry: our hardened key index per order (unique: a key never serves two
    # orders, so neither does an escrow address), the escrow address once all three keys are
    # known (unique too), the tip height when our key was made (funding confirmed at or below
    # it cannot be for this escrow), and every counterparty key seen (a repeat is refused)
    """
    CREATE TABLE escrow_keys (
        order_id TEXT PRIMARY KEY,
        key_index INTEGER NOT NULL UNIQUE,
        address TEXT UNIQUE,
        made_height INTEGER
    );
    CREATE TABLE escrow_peer_keys (
        xpub TEXT PRIMARY KEY,
        order_id TEXT NOT NULL
    );
    """,
]

_encoder = msgspec.msgpack.Encoder()
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StepRow:
    id: int
    hash: bytes
    author: str
    raw: bytes | None
    event: bytes
    status: str
    at: int
    reason: str


@dataclass(frozen=True, slots=True)
class EscrowRow:
    order_id: str
    role: str
    proposal: bytes
    state: str
    funding_tx: bytes | None
    settlement_tx: bytes | None
    flags: frozenset[str]
    created: int


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    sender: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class CaseRow:
    party: str
    order_log: list[bytes]
    listing: bytes
    at: float


class KeyRepeated(Exception):
    """A key or an escrow address another order already uses."""


@dataclass(frozen=True, slots=True)
class KeySlot:
    index: int
    made_height: int | None  # None for escrows made before the registry


class EscrowStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        before = db.schema_version("escrow")
        db.migrate("escrow", MIGRATIONS)
        if 0 < before < 2:
            self._register_legacy()

    def _register_legacy(self) -> None:
        """Escrows made before the registry keep the key they derived then (a public hash of
        the order id); a repeat among them is logged: that escrow's key is suspect."""
        for row in self.db.query("SELECT order_id FROM escrows ORDER BY created"):
            index = legacy_order_index(row["order_id"])
            if self.db.execute("INSERT OR IGNORE INTO escrow_keys (order_id, key_index) "
                               "VALUES (?,?)", (row["order_id"], index)) == 0:
                log.error("escrow %s shares its key index with another order: do not fund it",
                          row["order_id"])

    # the key registry

    def key_slot(self, order_id: str) -> KeySlot | None:
        row = self.db.query_one("SELECT key_index, made_height FROM escrow_keys WHERE order_id=?",
                                (order_id,))
        return None if row is None else KeySlot(row["key_index"], row["made_height"])

    def claim_index(self, order_id: str, candidates: Iterable[int], made_height: int | None
                    ) -> KeySlot:
        """The order's key index: the one it has, else the first candidate no order holds."""
        with self.db.transaction():
            slot = self.key_slot(order_id)
            if slot is not None:
                return slot
            for index in candidates:
                if self.db.query_one("SELECT 1 FROM escrow_keys WHERE key_index=?", (index,)):
                    continue
                self.db.execute("INSERT INTO escrow_keys (order_id, key_index, made_height) "
                                "VALUES (?,?,?)", (order_id, index, made_height))
                return KeySlot(index, made_height)
        raise KeyRepeated(f"no free key index for order {order_id}")

    def claim_address(self, order_id: str, address: str, peer_xpubs: Iterable[str]) -> None:
        """Note the escrow's address and the counterparties' keys; KeyRepeated if another
        order already has that address or one of those keys (nothing is noted then)."""
        peer_xpubs = list(peer_xpubs)
        with self.db.transaction():
            row = self.db.query_one("SELECT order_id FROM escrow_keys WHERE address=? AND "
                                    "order_id<>?", (address, order_id))
            if row is not None:
                raise KeyRepeated(f"escrow address {address} is already order {row[0]}'s")
            for xpub in peer_xpubs:
                row = self.db.query_one("SELECT order_id FROM escrow_peer_keys WHERE xpub=? AND "
                                        "order_id<>?", (xpub, order_id))
                if row is not None:
                    raise KeyRepeated(f"a counterparty key of this escrow was used in order "
                                      f"{row[0]}")
            self.db.execute("UPDATE escrow_keys SET address=? WHERE order_id=?",
                            (address, order_id))
            self.db.executemany("INSERT OR IGNORE INTO escrow_peer_keys (xpub, order_id) "
                                "VALUES (?,?)", [(x, order_id) for x in peer_xpubs])

    # escrows

    def add_escrow(self, order_id: str, role: str, proposal: bytes, state: str, created: int,
                   now: float) -> None:
        self.db.execute(
            "INSERT INTO escrows (order_id, role, proposal, state, created, updated) "
            "VALUES (?,?,?,?,?,?)", (order_id, role, proposal, state, created, now))

    def has_escrow(self, order_id: str) -> bool:
        return self.db.query_one("SELECT 1 FROM escrows WHERE order_id=?", (order_id,)) is not None

    def escrows(self) -> list[EscrowRow]:
        return [EscrowRow(r["order_id"], r["role"], r["proposal"], r["state"], r["funding_tx"],
                          r["settlement_tx"], frozenset(filter(None, r["flags"].split(","))),
                          r["created"])
                for r in self.db.query("SELECT * FROM escrows ORDER BY created")]

    def set_state(self, order_id: str, state: str, now: float) -> None:
        self.db.execute("UPDATE escrows SET state=?, updated=? WHERE order_id=?",
                        (state, now, order_id))

    def set_funding(self, order_id: str, raw_tx: bytes) -> None:
        self.db.execute("UPDATE escrows SET funding_tx=? WHERE order_id=?", (raw_tx, order_id))

    def set_settlement(self, order_id: str, raw_tx: bytes) -> None:
        self.db.execute("UPDATE escrows SET settlement_tx=? WHERE order_id=?",
                        (raw_tx, order_id))

    def set_flags(self, order_id: str, flags: set[str]) -> None:
        self.db.execute("UPDATE escrows SET flags=? WHERE order_id=?",
                        (",".join(sorted(flags)), order_id))

    # steps

    def add_step(self, order_id: str, author: str, raw: bytes | None, event: bytes, status: str,
                 at: int, reason: str = "") -> int:
        """Store a step; `applied` steps get the next feeding position. Returns the row id."""
        step_hash = digest(raw) if raw is not None else digest(b"local" + event + os.urandom(8))
        applied = self._next_applied(order_id) if status == "applied" else None
        return self.db.insert(
            "INSERT INTO escrow_steps (order_id, hash, author, raw, event, status, applied, at, "
            "reason) VALUES (?,?,?,?,?,?,?,?,?)",
            (order_id, step_hash, author, raw, event, status, applied, at, reason[:500]))

    def has_step(self, order_id: str, step_hash: bytes) -> bool:
        return self.db.query_one("SELECT 1 FROM escrow_steps WHERE order_id=? AND hash=?",
                                 (order_id, step_hash)) is not None

    def mark_step(self, row_id: int, status: str, at: int, reason: str = "") -> None:
        applied = None
        if status == "applied":
            row = self.db.query_one("SELECT order_id FROM escrow_steps WHERE id=?", (row_id,))
            applied = self._next_applied(row[0]) if row else None
        self.db.execute("UPDATE escrow_steps SET status=?, applied=?, at=?, reason=? WHERE id=?",
                        (status, applied, at, reason[:500], row_id))

    def _next_applied(self, order_id: str) -> int:
        row = self.db.query_one("SELECT COALESCE(MAX(applied), 0) + 1 FROM escrow_steps "
                                "WHERE order_id=?", (order_id,))
        return int(row[0]) if row else 1

    def steps(self, order_id: str, status: str | None = None) -> list[StepRow]:
        """Steps of one escrow: applied ones in feeding order, the others in arrival order."""
        where, params = "order_id=?", [order_id]
        if status is not None:
            where += " AND status=?"
            params.append(status)
        rows = self.db.query(f"SELECT * FROM escrow_steps WHERE {where} "
                             "ORDER BY COALESCE(applied, 1e18), id", params)
        return [StepRow(r["id"], r["hash"], r["author"], r["raw"], r["event"], r["status"],
                        r["at"], r["reason"]) for r in rows]

    # inbox

    def add_inbox(self, sender: bytes, body: EscrowBody, now: float) -> None:
        self.db.execute("INSERT INTO escrow_inbox (sender, order_id, body, at) VALUES (?,?,?,?)",
                        (sender, body.order, _encoder.encode(body), now))

    def inbox(self) -> list[InboxRow]:
        return [InboxRow(r["id"], r["sender"], r["body"]) for r in self.db.query(
            "SELECT id, sender, body FROM escrow_inbox WHERE parked=0 ORDER BY id")]

    def park(self, row_id: int) -> None:
        self.db.execute("UPDATE escrow_inbox SET parked=1 WHERE id=?", (row_id,))

    def unpark(self, order_id: str) -> int:
        return self.db.execute("UPDATE escrow_inbox SET parked=0 WHERE order_id=?", (order_id,))

    def drop_inbox(self, row_id: int) -> None:
        self.db.execute("DELETE FROM escrow_inbox WHERE id=?", (row_id,))

    def expire_parked(self, before: float) -> int:
        return self.db.execute("DELETE FROM escrow_inbox WHERE parked=1 AND at<?", (before,))

    # arbiter's case files

    def set_case(self, order_id: str, party: str, order_log: list[bytes], listing: bytes,
                 now: float) -> None:
        self.db.execute(
            "INSERT INTO escrow_cases (order_id, party, order_log, listing, at) VALUES "
            "(?,?,?,?,?) ON CONFLICT (order_id, party) DO UPDATE SET order_log=excluded.order_log,"
            " listing=excluded.listing, at=excluded.at",
            (order_id, party, _encoder.encode(order_log), listing, now))

    def cases(self, order_id: str) -> list[CaseRow]:
        return [CaseRow(r["party"], msgspec.msgpack.decode(r["order_log"], type=list[bytes]),
                        r["listing"], r["at"])
                for r in self.db.query("SELECT * FROM escrow_cases WHERE order_id=? "
                                       "ORDER BY party", (order_id,))]
