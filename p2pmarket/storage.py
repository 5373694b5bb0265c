"""The node's one SQLite connection: pragmas, per-component migrations, transactions, errors.

Each layer (dht, node, escrow) registers its own migrations under its component name, so the
core never knows their tables. sqlite3 errors leave this module only as StorageError.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

log = logging.getLogger(__name__)

Params = Sequence[Any] | dict[str, Any]

_SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)


class StorageError(Exception):
    """A database operation failed; the message says which and why."""


class StorageFull(StorageError):
    """The disk (or the database's size limit) is full; the failed change was rolled back."""


class ConstraintViolation(StorageError):
    """A UNIQUE, FOREIGN KEY, CHECK or NOT NULL constraint refused the change."""


class SchemaTooNew(StorageError):
    """The database was written by a newer version of p2pmarket than this one."""


def _raise(exc: sqlite3.Error, doing: str) -> NoReturn:
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc):
        raise StorageFull(f"{doing}: the disk or database is full") from exc
    if isinstance(exc, sqlite3.IntegrityError):
        raise ConstraintViolation(f"{doing}: {exc}") from exc
    raise StorageError(f"{doing}: {exc}") from exc


def split_script(script: str) -> list[str]:
    """Split an SQL script into complete statements (semicolons in strings and triggers kept)."""
    statements: list[str] = []
    start = 0
    for i, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : i + 1]):
            statements.append(script[start : i + 1].strip())
            start = i + 1
    rest = script[start:].strip()
    if rest and not _only_comments(rest):
        # the last statement may omit its semicolon; the newline ends a trailing -- comment
        if not sqlite3.complete_statement(rest + "\n;"):
            raise ValueError(f"incomplete SQL statement at the end of the script: {rest[:60]!r}")
        statements.append(rest)
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


class Database:
    """One SQLite connection in autocommit mode; `transaction()` groups statements.

    The connection is made with check_same_thread=False so it can move to a worker thread
    (`asyncio.to_thread` or a writer thread), but it must be used by one thread at a time.
    """

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self.path = path
        self._depth = 0

    @classmethod
    def open(cls, path: Path | str) -> Database:
        name = str(path)
        try:
            conn = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            _raise(exc, f"cannot open database {name}")
        conn.row_factory = sqlite3.Row
        db = cls(conn, name)
        try:
            if name != ":memory:" and not name.startswith("file::memory:"):
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("database %s: WAL unavailable, journal mode is %s", name, mode)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute(_SCHEMA_VERSION_DDL)
        except sqlite3.Error as exc:
            conn.close()
            _raise(exc, f"cannot open database {name}")
        log.debug("opened database %s", name)
        return db

    # -- statements ---------------------------------------------------------------------------

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        try:
            return self._conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            _raise(exc, f"database {self.path}")

    def insert(self, sql: str, params: Params = ()) -> int:
        """Run one INSERT; returns the rowid of the new row."""
        try:
            rowid = self._conn.execute(sql, params).lastrowid
        except sqlite3.Error as exc:
            _raise(exc, f"database {self.path}")
        return 0 if rowid is None else rowid

    def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> int:
        try:
            return self._conn.executemany(sql, seq_of_params).rowcount
        except sqlite3.Error as exc:
            _raise(exc, f"database {self.path}")

    def query(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        try:
            rows: list[sqlite3.Row] = self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            _raise(exc, f"database {self.path}")
        return rows

    def query_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        try:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            _raise(exc, f"database {self.path}")
        return row

    # -- transactions -------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raises; nests with savepoints."""
        depth = self._depth
        begin, commit, rollback = (
            ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
            if depth == 0
            else (f"SAVEPOINT sp{depth}", f"RELEASE sp{depth}", f"ROLLBACK TO sp{depth}")
        )
        self._run(begin)
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth = depth
            self._rollback(rollback, depth)
            raise
        self._depth = depth
        try:
            self._conn.execute(commit)
        except sqlite3.Error as exc:
            self._rollback(rollback, depth)
            _raise(exc, f"database {self.path}: commit failed")

    def _rollback(self, rollback: str, depth: int) -> None:
        try:
            self._conn.execute(rollback)
            if depth > 0:
                self._conn.execute(f"RELEASE sp{depth}")
        except sqlite3.Error as exc:
            # SQLite rolls back by itself after some errors (e.g. SQLITE_FULL); nothing is lost
            log.debug("database %s: %s: %s", self.path, rollback, exc)

    def _run(self, sql: str) -> None:
        try:
            self._conn.execute(sql)
        except sqlite3.Error as exc:
            _raise(exc, f"database {self.path}: {sql}")

    # -- migrations ---------------------------------------------------------------------------

    def schema_version(self, component: str) -> int:
        row = self.query_one(
            "SELECT version FROM schema_version WHERE component = ?", (component,)
        )
        return 0 if row is None else int(row[0])

    def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Apply the not yet applied scripts of `component` in order; returns the new version.

        Script n (1-based) brings the component to version n, each in its own transaction.
        Scripts must not contain BEGIN/COMMIT themselves.
        """
        if self.in_transaction:
            raise StorageError("migrate() cannot run inside a transaction")
        target = len(migrations)
        while True:
            with self.transaction():
                # read inside the write lock: another process may have migrated meanwhile
                current = self.schema_version(component)
                if current > target:
                    raise SchemaTooNew(
                        f"database {self.path}: {component} schema is version {current}, this "
                        f"p2pmarket knows up to {target}; upgrade p2pmarket"
                    )
                if current == target:
                    return current
                doing = f"database {self.path}: {component} migration {current + 1} failed"
                try:
                    for statement in split_script(migrations[current]):
                        self._conn.execute(statement)
                except sqlite3.Error as exc:
                    _raise(exc, doing)
                except ValueError as exc:
                    raise StorageError(f"{doing}: {exc}") from None
                self.execute(
                    "INSERT INTO schema_version(component, version) VALUES (?, ?) "
                    "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                    (component, current + 1),
                )
            log.info("database %s: migrated %s to version %d", self.path, component, current + 1)

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent); WAL content is checkpointed by SQLite."""
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            _raise(exc, f"database {self.path}: close failed")

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
