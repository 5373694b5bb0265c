"""The persistent outbox and inbox of direct messages (SQLite, component "p2p").

Outbox states: queued -> sent -> delivered (the recipient's ack) or failed (gave up). `via` says
how the last copy left: "direct" over a channel or "mailbox" sealed into the DHT. The inbox keeps
every delivered message and each sender's next expected seq, so dedup and order survive restarts.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Container
from dataclasses import dataclass

from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.messages import MessageBody, sign_message

MIGRATIONS = [
    """
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        recipient BLOB NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        raw BLOB NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'delivered', 'failed')),
        via TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        UNIQUE (recipient, seq)
    );
    CREATE INDEX outbox_due ON outbox (state, next_attempt);
    CREATE TABLE inbox (
        id TEXT PRIMARY KEY,
        sender BLOB NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        raw BLOB NOT NULL,
        received REAL NOT NULL,
        via TEXT NOT NULL
    );
    CREATE INDEX inbox_sender ON inbox (sender, seq);
    CREATE TABLE inbox_senders (
        sender BLOB PRIMARY KEY,
        next_seq INTEGER NOT NULL
    );
    """,
    # a message is known by (sender, id): ids are visible in the DHT on sealed mail, so a peer
    # that copied one must not make another sender's message a "duplicate"
    """
    CREATE TABLE inbox2 (
        id TEXT NOT NULL,
        sender BLOB NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        raw BLOB NOT NULL,
        received REAL NOT NULL,
        via TEXT NOT NULL,
        PRIMARY KEY (sender, id)
    );
    INSERT INTO inbox2 SELECT id, sender, seq, kind, raw, received, via FROM inbox;
    DROP TABLE inbox;
    ALTER TABLE inbox2 RENAME TO inbox;
    CREATE INDEX inbox_sender ON inbox (sender, seq);
    CREATE INDEX inbox_received ON inbox (received);
    """,
]


class State(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: str
    recipient: bytes
    seq: int
    kind: str
    raw: bytes
    state: State
    via: str
    attempts: int
    next_attempt: float
    created: float
    updated: float
    error: str


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("p2p", MIGRATIONS)

    # -- outgoing ------------------------------------------------------------------------------

    def enqueue(self, identity: Identity, recipient: bytes, body: MessageBody,
                now: float | None = None, next_attempt: float | None = None) -> OutboxEntry:
        """Sign the next message to `recipient` and queue it; returns the new entry.

        `next_attempt` (default: now) is when `due()` offers it; a caller that sends it at once
        sets it later, to when a copy that got lost should be sent again.
        """
        now = time.time() if now is None else now
        next_attempt = now if next_attempt is None else next_attempt
        with self.db.transaction():
            row = self.db.query_one(
                "SELECT coalesce(max(seq), 0) FROM outbox WHERE recipient=?", (recipient,))
            seq = int(row[0]) + 1 if row else 1
            message, raw = sign_message(identity, recipient, body, seq=seq,
                                        sent_ms=int(now * 1000))
            self.db.execute(
                "INSERT INTO outbox (id, recipient, seq, kind, raw, state, next_attempt, created,"
                " updated) VALUES (?,?,?,?,?,?,?,?,?)",
                (message.id, recipient, seq, type(body).__name__.lower(), raw, State.QUEUED,
                 next_attempt, now, now))
        return OutboxEntry(id=message.id, recipient=recipient, seq=seq,
                           kind=type(body).__name__.lower(), raw=raw, state=State.QUEUED,
                           via="", attempts=0, next_attempt=next_attempt, created=now,
                           updated=now, error="")

    def get(self, msg_id: str) -> OutboxEntry | None:
        row = self.db.query_one("SELECT * FROM outbox WHERE id=?", (msg_id,))
        return _entry(row) if row else None

    def entries(self, *, recipient: bytes | None = None, state: State | None = None,
             limit: int = 100, after: str = "") -> list[OutboxEntry]:
        sql = "SELECT * FROM outbox WHERE id > ?"
        args: list[object] = [after]
        if recipient is not None:
            sql, args = sql + " AND recipient=?", [*args, recipient]
        if state is not None:
            sql, args = sql + " AND state=?", [*args, str(state)]
        rows = self.db.query(sql + " ORDER BY id LIMIT ?", (*args, limit))
        return [_entry(r) for r in rows]

    def due(self, now: float | None = None, limit: int = 64) -> list[OutboxEntry]:
        """Entries to (re)send now, oldest first, in seq order per recipient."""
        rows = self.db.query(
            "SELECT * FROM outbox WHERE state IN ('queued', 'sent') AND next_attempt <= ? "
            "ORDER BY recipient, seq LIMIT ?", (time.time() if now is None else now, limit))
        return [_entry(r) for r in rows]

    def next_due(self) -> float | None:
        """When the earliest pending entry wants its next attempt."""
        row = self.db.query_one(
            "SELECT min(next_attempt) FROM outbox WHERE state IN ('queued', 'sent')")
        return None if row is None or row[0] is None else float(row[0])

    def attempted(self, msg_id: str, *, via: str, retry_at: float, error: str = "",
                  now: float | None = None) -> None:
        """Record one delivery attempt; `error` empty means the copy left this node."""
        now = time.time() if now is None else now
        self.db.execute(
            "UPDATE outbox SET attempts=attempts+1, via=CASE WHEN ?='' THEN ? ELSE via END, "
            "state=CASE WHEN ?='' THEN 'sent' ELSE state END, next_attempt=?, error=?, "
            "updated=? WHERE id=? AND state IN ('queued', 'sent')",
            (error, via, error, retry_at, error, now, msg_id))

    def attempted_all(self, attempts: list[tuple[str, float]], *, via: str,
                      now: float | None = None) -> None:
        """`attempted(id, via=via, retry_at=...)` for each (id, retry_at), in one transaction."""
        if not attempts:
            return
        with self.db.transaction():
            for msg_id, retry_at in attempts:
                self.attempted(msg_id, via=via, retry_at=retry_at, now=now)

    def delivered(self, sender_of_ack: bytes, ids: tuple[str, ...],
                  now: float | None = None,
                  direct_copies: Container[str] = ()) -> list[tuple[str, str]]:
        """Mark acknowledged messages; only their recipient may acknowledge them.

        `direct_copies`: ids whose direct copy was written but not yet recorded with
        `attempted`; the same update records it (one attempt, via "direct").
        Returns (id, via) of the entries this ack delivered (not ones delivered before)."""
        now = time.time() if now is None else now
        done: list[tuple[str, str]] = []
        with self.db.transaction():
            for msg_id in ids:
                unrecorded = msg_id in direct_copies
                row = self.db.query_one(
                    "UPDATE outbox SET state='delivered', updated=?, error='', "
                    "attempts=attempts+?, via=CASE WHEN ? THEN 'direct' ELSE via END "
                    "WHERE id=? AND recipient=? AND state IN ('queued', 'sent') RETURNING via",
                    (now, int(unrecorded), unrecorded, msg_id, sender_of_ack))
                if row is not None:
                    done.append((msg_id, row["via"]))
        return done

    def fail(self, msg_id: str, reason: str, now: float | None = None) -> None:
        self.db.execute(
            "UPDATE outbox SET state='failed', error=?, updated=? WHERE id=? "
            "AND state IN ('queued', 'sent')", (reason, time.time() if now is None else now,
                                                msg_id))

    # -- incoming ------------------------------------------------------------------------------

    def load_receiver_state(self, seen_limit: int = 10_000
                            ) -> tuple[dict[bytes, int], list[tuple[bytes, str]]]:
        """Each sender's next seq, and the (sender, id) of the latest delivered messages."""
        next_seq = {r["sender"]: int(r["next_seq"]) for r in
                    self.db.query("SELECT sender, next_seq FROM inbox_senders")}
        seen = [(r["sender"], r["id"]) for r in self.db.query(
            "SELECT sender, id FROM inbox ORDER BY received DESC LIMIT ?", (seen_limit,))]
        return next_seq, seen[::-1]

    def was_delivered(self, sender: bytes, msg_id: str) -> bool:
        return self.db.query_one("SELECT 1 FROM inbox WHERE sender=? AND id=?",
                                 (sender, msg_id)) is not None

    def store_delivered(self, msg_id: str, sender: bytes, seq: int, kind: str, raw: bytes,
                        via: str, now: float | None = None) -> bool:
        """Keep a delivered message; False if it was already kept (a duplicate)."""
        with self.db.transaction():
            added = self.db.execute(
                "INSERT OR IGNORE INTO inbox VALUES (?,?,?,?,?,?,?)",
                (msg_id, sender, seq, kind, raw, time.time() if now is None else now, via))
            self.db.execute(
                "INSERT INTO inbox_senders VALUES (?, ?) ON CONFLICT (sender) DO UPDATE SET "
                "next_seq=max(next_seq, excluded.next_seq)", (sender, seq + 1))
        return bool(added)

    def inbox(self, *, sender: bytes | None = None, limit: int = 100,
              after: float = 0.0) -> list[tuple[str, bytes, bytes, float, str]]:
        """(id, sender, raw, received, via) of delivered messages, oldest first."""
        sql = "SELECT * FROM inbox WHERE received > ?"
        args: list[object] = [after]
        if sender is not None:
            sql, args = sql + " AND sender=?", [*args, sender]
        rows = self.db.query(sql + " ORDER BY received, seq LIMIT ?", (*args, limit))
        return [(r["id"], r["sender"], r["raw"], r["received"], r["via"]) for r in rows]


def _entry(row: object) -> OutboxEntry:
    r = row  # sqlite3.Row
    return OutboxEntry(
        id=r["id"], recipient=r["recipient"], seq=r["seq"], kind=r["kind"],  # type: ignore[index]
        raw=r["raw"], state=State(r["state"]), via=r["via"],  # type: ignore[index]
        attempts=r["attempts"], next_attempt=r["next_attempt"],  # type: ignore[index]
        created=r["created"], updated=r["updated"], error=r["error"])  # type: ignore[index]
