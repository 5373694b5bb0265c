from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2pmarket.storage import (
    ConstraintViolation,
    Database,
    SchemaTooNew,
    StorageError,
    StorageFull,
    split_script,
)

ITEMS_V1 = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
ITEMS_V2 = """
-- a comment; with a semicolon
CREATE TABLE tags (item INTEGER NOT NULL REFERENCES items(id), tag TEXT NOT NULL);
CREATE TRIGGER items_upper AFTER INSERT ON items BEGIN
    UPDATE items SET name = upper(name) WHERE id = new.id;
END;
INSERT INTO items(name) VALUES ('a;b')
"""


@pytest.fixture
def make_db(tmp_path: Path) -> Iterator[Callable[..., Database]]:
    opened: list[Database] = []

    def make(name: str = "node.db") -> Database:
        db = Database.open(tmp_path / name)
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


def test_pragmas_on_file_db(make_db: Callable[..., Database]) -> None:
    db = make_db()
    assert db.query_one("PRAGMA journal_mode")[0] == "wal"  # type: ignore[index]
    assert db.query_one("PRAGMA foreign_keys")[0] == 1  # type: ignore[index]
    assert db.query_one("PRAGMA synchronous")[0] == 1  # type: ignore[index]  # NORMAL
    assert db.query_one("PRAGMA busy_timeout")[0] == 5000  # type: ignore[index]


def test_memory_db() -> None:
    with Database.open(":memory:") as db:
        db.migrate("core", [ITEMS_V1])
        db.execute("INSERT INTO items(name) VALUES (?)", ("x",))
        assert [tuple(r) for r in db.query("SELECT id, name FROM items")] == [(1, "x")]


def test_foreign_keys_enforced(make_db: Callable[..., Database]) -> None:
    db = make_db()
    db.migrate("core", [ITEMS_V1, ITEMS_V2])
    with pytest.raises(ConstraintViolation):
        db.execute("INSERT INTO tags(item, tag) VALUES (999, 'x')")


def test_migrations_applied_once_and_idempotent(make_db: Callable[..., Database]) -> None:
    db = make_db()
    assert db.migrate("core", [ITEMS_V1]) == 1
    assert db.migrate("core", [ITEMS_V1]) == 1
    db.close()
    db = make_db()
    assert db.schema_version("core") == 1
    assert db.migrate("core", [ITEMS_V1, ITEMS_V2]) == 2  # only the new script runs
    assert db.migrate("core", [ITEMS_V1, ITEMS_V2]) == 2
    assert [r["name"] for r in db.query("SELECT name FROM items")] == ["A;B"]
    db.execute("INSERT INTO items(name) VALUES ('c')")
    assert db.query_one("SELECT name FROM items WHERE id = 2")["name"] == "C"  # type: ignore[index]


def test_components_are_independent(make_db: Callable[..., Database]) -> None:
    db = make_db()
    dht_v1 = "CREATE TABLE records (k BLOB PRIMARY KEY);"
    db.migrate("dht", [dht_v1])
    db.migrate("escrow", ["CREATE TABLE orders (id TEXT);", "ALTER TABLE orders ADD state TEXT;"])
    assert db.schema_version("dht") == 1
    assert db.schema_version("escrow") == 2
    assert db.schema_version("node") == 0
    db.migrate("dht", [dht_v1, "CREATE INDEX ix ON records(k)"])
    assert db.schema_version("dht") == 2
    assert db.schema_version("escrow") == 2


def test_schema_too_new(make_db: Callable[..., Database]) -> None:
    db = make_db()
    db.migrate("core", [ITEMS_V1, ITEMS_V2])
    db.close()
    db = make_db()
    with pytest.raises(SchemaTooNew, match="version 2"):
        db.migrate("core", [ITEMS_V1])
    assert db.schema_version("core") == 2


def test_failed_migration_rolls_back(make_db: Callable[..., Database]) -> None:
    db = make_db()
    broken = "CREATE TABLE half (x); INSERT INTO nowhere VALUES (1);"
    with pytest.raises(StorageError, match="core migration 2 failed"):
        db.migrate("core", [ITEMS_V1, broken])
    assert db.schema_version("core") == 1
    assert db.query("SELECT name FROM sqlite_master WHERE name = 'half'") == []
    assert not db.in_transaction


def test_transaction_rollback_keeps_old_data(make_db: Callable[..., Database]) -> None:
    db = make_db()
    db.migrate("core", [ITEMS_V1])
    db.execute("INSERT INTO items(name) VALUES ('old')")
    with pytest.raises(RuntimeError), db.transaction():
        db.execute("UPDATE items SET name = 'new'")
        db.execute("INSERT INTO items(name) VALUES ('more')")
        raise RuntimeError("boom")
    assert [r["name"] for r in db.query("SELECT name FROM items")] == ["old"]
    with db.transaction():
        db.execute("INSERT INTO items(name) VALUES ('kept')")
    assert len(db.query("SELECT * FROM items")) == 2


def test_nested_transaction_uses_savepoint(make_db: Callable[..., Database]) -> None:
    db = make_db()
    db.migrate("core", [ITEMS_V1])
    with db.transaction():
        db.execute("INSERT INTO items(name) VALUES ('outer')")
        with pytest.raises(ConstraintViolation), db.transaction():
            db.execute("INSERT INTO items(name) VALUES ('inner')")
            db.execute("INSERT INTO items(name) VALUES ('outer')")
        assert db.in_transaction
    assert [r["name"] for r in db.query("SELECT name FROM items")] == ["outer"]
    assert not db.in_transaction


def test_disk_full_is_storage_full_and_loses_nothing(make_db: Callable[..., Database]) -> None:
    db = make_db()
    db.migrate("core", ["CREATE TABLE blobs (b BLOB);"])
    db.execute("INSERT INTO blobs VALUES (x'01')")
    pages = db.query_one("PRAGMA page_count")[0]  # type: ignore[index]
    db.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(StorageFull), db.transaction():
        for _ in range(50):
            db.execute("INSERT INTO blobs VALUES (zeroblob(4096))")
    assert not db.in_transaction
    assert [bytes(r["b"]) for r in db.query("SELECT b FROM blobs")] == [b"\x01"]


def test_errors_are_translated(make_db: Callable[..., Database], tmp_path: Path) -> None:
    db = make_db()
    with pytest.raises(StorageError, match="no such table") as info:
        db.query("SELECT * FROM missing")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StorageError):
        Database.open(tmp_path / "junk.db")
    with pytest.raises(StorageError):
        Database.open(tmp_path / "no" / "such" / "dir.db")
    db.close()
    db.close()
    with pytest.raises(StorageError):
        db.query("SELECT 1")


def test_executemany_and_insert(make_db: Callable[..., Database]) -> None:
    db = make_db()
    db.migrate("core", [ITEMS_V1])
    assert db.executemany("INSERT INTO items(name) VALUES (?)", [("a",), ("b",)]) == 2
    assert db.insert("INSERT INTO items(name) VALUES (:n)", {"n": "c"}) == 3
    assert db.execute("DELETE FROM items WHERE name != 'a'") == 2


def test_split_script() -> None:
    assert split_script("SELECT 1; SELECT ';';\n-- done\n") == ["SELECT 1;", "SELECT ';';"]
    assert split_script("SELECT 1") == ["SELECT 1"]
    assert split_script("SELECT 'a;b'\n-- no semicolon") == ["SELECT 'a;b'\n-- no semicolon"]
    with pytest.raises(ValueError):
        split_script("CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1;")
