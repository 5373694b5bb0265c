"""Backup files: what goes in, that a copy taken while the node writes is consistent, and that a
wrong passphrase, a cut-off file or altered bytes each give one clear error and no files."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from p2pmarket.backup import (
    CHUNK_SIZE,
    MAGIC,
    BackupCorrupt,
    BackupError,
    BackupTruncated,
    is_protected,
    open_backup,
    write_backup,
)
from p2pmarket.keystore import TEST_KDF, WrongPassphrase, create_keystore, open_keystore
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import ImageRef
from p2pmarket.wire.records import sign_record
from tests.support.records import make_listing


def make_datadir(root: Path, passphrase: str | None = "pw") -> tuple[Path, str]:
    datadir = root / "node"
    datadir.mkdir()
    ks = create_keystore(datadir / "keystore", passphrase, kdf_params=TEST_KDF)
    (datadir / "config.toml").write_text("api_port = 9100\n")
    db = Database.open(datadir / "node.db")
    db.execute("CREATE TABLE chat (n INTEGER PRIMARY KEY, line TEXT)")
    db.execute("CREATE TABLE my_listings (id TEXT PRIMARY KEY, seq INTEGER, raw BLOB, "
               "deleted INTEGER, updated REAL)")
    image = b"\x89PNG\r\n\x1a\n" + b"x" * 3000
    digest = hashlib.sha256(image).digest()
    (datadir / "blobs" / digest.hex()[:2]).mkdir(parents=True)
    (datadir / "blobs" / digest.hex()[:2] / digest.hex()).write_bytes(image)
    other = b"someone else's picture"
    od = hashlib.sha256(other).digest()
    (datadir / "blobs" / od.hex()[:2]).mkdir(parents=True, exist_ok=True)
    (datadir / "blobs" / od.hex()[:2] / od.hex()).write_bytes(other)
    listing = make_listing(id="listing-1", images=(ImageRef(sha256=digest, mime="image/png",
                                                     size=len(image)),))
    record = sign_record(ks.identity, listing, seq=1)
    db.execute("INSERT INTO my_listings VALUES ('listing-1', 1, ?, 0, 0)", (record.raw,))
    db.close()
    return datadir, ks.identity.peer_id


def test_backup_holds_keys_db_config_and_own_images_only(tmp_path: Path) -> None:
    datadir, peer_id = make_datadir(tmp_path)
    out = tmp_path / "b.p2pbak"
    info = write_backup(datadir, out, "pw", peer_id=peer_id, kdf_params=TEST_KDF)
    assert out.stat().st_mode & 0o777 == 0o600
    assert is_protected(out)
    into = tmp_path / "into"
    into.mkdir()
    opened = open_backup(out, "pw", into)
    assert opened.peer_id == peer_id and not opened.insecure
    assert set(opened.files) == set(info.files)
    assert sum(f.startswith("blobs/") for f in opened.files) == 1  # not the other's picture
    assert (into / "config.toml").read_text() == "api_port = 9100\n"
    assert open_keystore(into / "keystore", "pw").identity.peer_id == peer_id
    with pytest.raises(BackupError, match="already exists"):
        write_backup(datadir, out, "pw", peer_id=peer_id, kdf_params=TEST_KDF)


def test_a_backup_taken_while_the_node_writes_is_consistent(tmp_path: Path) -> None:
    datadir, peer_id = make_datadir(tmp_path)
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:  # a node busy storing chat lines, each in its own transaction
        db = Database.open(datadir / "node.db")
        n = 0
        while not stop.is_set():
            n += 1
            with db.transaction():
                db.execute("INSERT INTO chat (n, line) VALUES (?, ?)", (n, "x" * 2000))
                db.execute("UPDATE chat SET line = 'y' WHERE n = ?", (n,))
            written.append(n)
        db.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 200:
            threading.Event().wait(0.01)
        outs = [tmp_path / f"b{i}" for i in range(3)]
        for out in outs:
            write_backup(datadir, out, "pw", peer_id=peer_id, kdf_params=TEST_KDF)
    finally:
        stop.set()
        thread.join()
    for i, out in enumerate(outs):
        into = tmp_path / f"into{i}"
        into.mkdir()
        open_backup(out, "pw", into)
        conn = sqlite3.connect(into / "node.db")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT n, line FROM chat ORDER BY n").fetchall()
        conn.close()
        # every transaction is there whole or not at all, and none is missing before the last
        assert rows and all(line == "y" for _, line in rows)
        assert [n for n, _ in rows] == list(range(1, len(rows) + 1))


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    datadir, peer_id = make_datadir(tmp_path)
    with Database.open(datadir / "node.db") as db:  # big enough for several chunks
        db.executemany("INSERT INTO chat (line) VALUES (?)",
                       [(os.urandom(2000),) for _ in range(1500)])
    out = tmp_path / "b.p2pbak"
    write_backup(datadir, out, "pw", peer_id=peer_id, kdf_params=TEST_KDF)
    assert out.stat().st_size > 2 * CHUNK_SIZE
    return out


def _open(path: Path, passphrase: str | None, tmp_path: Path) -> Path:
    into = tmp_path / "into"
    into.mkdir(exist_ok=True)
    open_backup(path, passphrase, into)
    return into


def test_wrong_passphrase(backup: Path, tmp_path: Path) -> None:
    with pytest.raises(WrongPassphrase, match="wrong passphrase for backup"):
        _open(backup, "not it", tmp_path)


@pytest.mark.parametrize("keep", [0, 10, 30, 200, 5000, 1 << 20, 2 << 20])
def test_truncated_backup(backup: Path, tmp_path: Path, keep: int) -> None:
    data = backup.read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(data[:keep] if keep < len(data) - 1 else data[:-1])
    with pytest.raises(BackupTruncated, match="truncated"):
        _open(cut, "pw", tmp_path)


@pytest.mark.parametrize("where", [0.5, 0.75, -1])
def test_altered_bytes(backup: Path, tmp_path: Path, where: float) -> None:
    data = bytearray(backup.read_bytes())
    at = int(len(data) * where) if where > 0 else len(data) - 1
    data[at] ^= 0x40
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    with pytest.raises(BackupCorrupt, match="damaged"):
        _open(bad, "pw", tmp_path)


def chunks(data: bytes) -> tuple[bytes, list[bytes]]:
    at = len(MAGIC) + 4 + int.from_bytes(data[len(MAGIC):len(MAGIC) + 4], "big")
    head, parts = data[:at], []
    while at < len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        parts.append(data[at:at + 4 + size])
        at += 4 + size
    return head, parts


def test_dropped_chunk_and_extra_bytes(backup: Path, tmp_path: Path) -> None:
    data = backup.read_bytes()
    head, parts = chunks(data)
    assert len(parts) >= 3
    for name, reordered in [("dropped", [parts[0], *parts[2:]]),
                            ("swapped", [parts[0], parts[2], parts[1], *parts[3:]])]:
        bad = tmp_path / name
        bad.write_bytes(head + b"".join(reordered))
        with pytest.raises(BackupCorrupt, match="chunk 1 fails its check"):
            _open(bad, "pw", tmp_path)
    early_end = tmp_path / "early-end"  # the last chunk dropped: cut off at a chunk boundary
    early_end.write_bytes(head + b"".join(parts[:-1]))
    with pytest.raises(BackupTruncated):
        _open(early_end, "pw", tmp_path)
    extra = tmp_path / "extra"
    extra.write_bytes(data + b"\x00")
    with pytest.raises(BackupCorrupt, match="after its end"):
        _open(extra, "pw", tmp_path)


def test_not_a_backup(tmp_path: Path) -> None:
    other = tmp_path / "photo.jpg"
    other.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    with pytest.raises(BackupCorrupt, match="not a p2pmarket backup"):
        _open(other, "pw", tmp_path)


def test_a_keystore_without_passphrase_makes_an_unprotected_backup(tmp_path: Path) -> None:
    datadir, peer_id = make_datadir(tmp_path, passphrase=None)
    out = tmp_path / "b"
    write_backup(datadir, out, None, peer_id=peer_id, kdf_params=TEST_KDF)
    assert not is_protected(out)
    into = _open(out, None, tmp_path)
    assert open_keystore(into / "keystore", None).insecure
