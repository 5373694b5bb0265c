"""Backup files: an encrypted, consistent copy of what a node cannot get back from the network.

A backup holds the keystore file (still sealed under its own passphrase), a snapshot of
`node.db` taken with SQLite's online backup API (consistent while the node writes: one read
transaction), `config.toml` and the images of the node's own listings. It is sealed under the
keystore's passphrase (Argon2id) and written as a stream of ChaCha20-Poly1305 chunks:

    MAGIC | u32 header length | header (msgpack) | chunks: u32 length | ciphertext ...

Chunk `i` uses nonce = header.nonce_prefix (7 bytes) | i (4 bytes, big endian) | last (1 byte)
and the header as associated data, so a reordered, dropped, altered or cut-off chunk is caught:
a file that ends before the chunk marked last is "truncated", any failed tag is "damaged"; a
wrong passphrase is told apart by a key check in the header (an HMAC of the key). The
plaintext is a gzip'd tar of the files above; reading accepts only those names.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import logging
import os
import re
import secrets
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from p2pmarket.datadir import CONFIG_FILE, DB_FILE
from p2pmarket.keystore import (
    DEFAULT_KDF,
    INSECURE_KEY,
    KEYSTORE_FILE,
    MAX_MEMORY_COST,
    KdfParams,
    WrongPassphrase,
    check_kdf_params,
    passphrase_key,
)
from p2pmarket.wire.bodies import MAX_IMAGE_BYTES, Listing
from p2pmarket.wire.records import RecordError, decode_record

log = logging.getLogger(__name__)

MAGIC = b"p2pmarket-backup\n"
FORMAT_VERSION = 1
CHUNK_SIZE = 1 << 20
TAG_SIZE = 16
MAX_HEADER = 4096
MAX_DB_BYTES = 4 << 30  # a node.db bigger than this is not something we restore blindly
MAX_IMAGES = 10_000
BLOBS_DIR = "blobs"
_BLOB_NAME = re.compile(r"blobs/([0-9a-f]{2})/([0-9a-f]{64})")
_LIMITS = {KEYSTORE_FILE: 64 * 1024, CONFIG_FILE: 1 << 20, DB_FILE: MAX_DB_BYTES}


class BackupError(Exception):
    """A backup that cannot be written or read; the message is one line for a human."""


class BackupCorrupt(BackupError):
    """Not a backup file, or one whose bytes were altered."""


class BackupTruncated(BackupCorrupt):
    """The file ends before its last chunk: it was cut off (a full disk, an interrupted copy)."""


class _Header(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    kdf: Literal["argon2id", "none"]
    salt: Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
    iterations: Annotated[int, msgspec.Meta(ge=1, le=64)]
    memory_cost: Annotated[int, msgspec.Meta(ge=8, le=MAX_MEMORY_COST)]
    lanes: Annotated[int, msgspec.Meta(ge=1, le=64)]
    nonce_prefix: Annotated[bytes, msgspec.Meta(min_length=7, max_length=7)]
    peer_id: Annotated[str, msgspec.Meta(max_length=100)]
    created: int
    # tells a wrong passphrase from altered bytes (a failed first chunk could be either)
    key_check: Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]


def _key_check(key: bytes) -> bytes:
    return hmac.new(key, b"p2pmarket backup key check", hashlib.sha256).digest()[:16]


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a backup says about itself (readable only with the passphrase)."""

    peer_id: str
    created: int
    insecure: bool
    files: tuple[str, ...]


# -- writing ----------------------------------------------------------------------------------


def snapshot_db(source: Path, target: Path) -> None:
    """Copy a live SQLite database with the online backup API: one read transaction, so the
    copy is a state the database really had, whatever the node writes meanwhile."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {source}: {exc}") from exc
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: all in one step, under one read lock
            ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {source}: {exc}") from exc
    finally:
        src.close()
    if ok != "ok":
        raise BackupError(f"the copy of {source} fails its integrity check: {ok}")


def own_images(db_path: Path) -> list[bytes]:
    """The sha256 of every image of the node's own (not deleted) listings."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT raw FROM my_listings WHERE deleted=0").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # no listings table yet: a node that never listed
        return []
    digests: dict[bytes, None] = {}
    for (raw,) in rows:
        try:
            record = decode_record(raw, allow_expired=True, verified=True)
        except RecordError:
            continue
        if isinstance(record.body, Listing):
            digests.update(dict.fromkeys(ref.sha256 for ref in record.body.images))
    return list(digests)[:MAX_IMAGES]


class _Sealer(io.RawIOBase):
    """A write-only file object that seals what is written in chunks onto `out`."""

    def __init__(self, out: IO[bytes], key: bytes, prefix: bytes, aad: bytes) -> None:
        super().__init__()
        self._out, self._aead, self._prefix, self._aad = out, ChaCha20Poly1305(key), prefix, aad
        self._buffer = bytearray()
        self._count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        while len(self._buffer) > CHUNK_SIZE:  # keep one back: the last chunk is marked
            self._emit(bytes(self._buffer[:CHUNK_SIZE]), last=False)
            del self._buffer[:CHUNK_SIZE]
        return len(data)

    def finish(self) -> None:
        self._emit(bytes(self._buffer), last=True)
        self._buffer.clear()

    def _emit(self, plain: bytes, *, last: bool) -> None:
        nonce = self._prefix + self._count.to_bytes(4, "big") + bytes([last])
        sealed = self._aead.encrypt(nonce, plain, self._aad)
        self._out.write(len(sealed).to_bytes(4, "big") + sealed)
        self._count += 1


def write_backup(datadir: Path, out: Path, passphrase: str | None, *, peer_id: str,
                 kdf_params: KdfParams = DEFAULT_KDF) -> BackupInfo:
    """Write a backup of `datadir` to `out` (mode 0600; never overwrites). `passphrase` is
    the keystore's (None only for a keystore without one: the backup is then unprotected)."""
    if out.exists():
        raise BackupError(f"{out} already exists; not overwriting it")
    check_kdf_params(kdf_params)
    salt, prefix = secrets.token_bytes(16), secrets.token_bytes(7)
    key = INSECURE_KEY if passphrase is None else passphrase_key(passphrase, salt, kdf_params)
    header = _Header(version=FORMAT_VERSION, kdf="none" if passphrase is None else "argon2id",
                     salt=salt, iterations=kdf_params.iterations,
                     memory_cost=kdf_params.memory_cost, lanes=kdf_params.lanes,
                     nonce_prefix=prefix, peer_id=peer_id, created=int(time.time()),
                     key_check=_key_check(key))
    header_bytes = msgspec.msgpack.encode(header)
    names: list[str] = []
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".p2pmarket-backup.") as tmp:
            staged = Path(tmp)
            db_copy = staged / DB_FILE
            if (datadir / DB_FILE).exists():
                snapshot_db(datadir / DB_FILE, db_copy)
            part = staged / "backup.part"
            fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + len(header_bytes).to_bytes(4, "big") + header_bytes)
                sealer = _Sealer(f, key, prefix, header_bytes)
                with tarfile.open(fileobj=sealer, mode="w|gz") as tar:
                    for name, path in _members(datadir, db_copy):
                        tar.add(path, arcname=name, recursive=False)
                        names.append(name)
                sealer.finish()
                f.flush()
                os.fsync(f.fileno())
            _publish(part, out)
    except OSError as exc:
        raise BackupError(f"cannot write {out}: {exc.strerror or exc}") from exc
    log.info("wrote backup %s (%d files)", out, len(names))
    return BackupInfo(peer_id, header.created, passphrase is None, tuple(names))


def _members(datadir: Path, db_copy: Path) -> Iterator[tuple[str, Path]]:
    yield KEYSTORE_FILE, datadir / KEYSTORE_FILE
    if (datadir / CONFIG_FILE).exists():
        yield CONFIG_FILE, datadir / CONFIG_FILE
    if db_copy.exists():
        yield DB_FILE, db_copy
        for digest in own_images(db_copy):
            name = digest.hex()
            path = datadir / BLOBS_DIR / name[:2] / name
            if path.is_file():
                yield f"{BLOBS_DIR}/{name[:2]}/{name}", path


def _publish(part: Path, out: Path) -> None:
    try:
        os.link(part, out)  # refuses an existing target atomically
    except FileExistsError:
        raise BackupError(f"{out} already exists; not overwriting it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if out.exists():
            raise BackupError(f"{out} already exists; not overwriting it") from None
        os.replace(part, out)
    with contextlib.suppress(OSError):
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- reading ----------------------------------------------------------------------------------


def _read_exact(f: IO[bytes], n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise BackupTruncated(f"backup {path} is truncated (it ends early); use another copy")
    return data


def _header(f: IO[bytes], path: Path) -> tuple[_Header, bytes]:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        if MAGIC.startswith(magic):
            raise BackupTruncated(f"backup {path} is truncated (it ends early); use another copy")
        raise BackupCorrupt(f"{path} is not a p2pmarket backup file")
    size = int.from_bytes(_read_exact(f, 4, path), "big")
    if not 0 < size <= MAX_HEADER:
        raise BackupCorrupt(f"backup {path} is damaged (bad header length)")
    raw = _read_exact(f, size, path)
    try:
        version = msgspec.msgpack.decode(raw, type=dict[str, object]).get("version")
    except (msgspec.MsgspecError, ValueError, TypeError, RecursionError):
        raise BackupCorrupt(f"backup {path} is damaged (unreadable header)") from None
    if version != FORMAT_VERSION:
        raise BackupCorrupt(f"backup {path} has format version {version!r}; this p2pmarket "
                            f"reads version {FORMAT_VERSION}")
    try:
        return msgspec.msgpack.decode(raw, type=_Header), raw
    except (msgspec.MsgspecError, ValueError, TypeError):
        raise BackupCorrupt(f"backup {path} is damaged (bad header fields)") from None


def is_protected(path: Path) -> bool:
    """Whether the backup at `path` needs a passphrase (reads only its header)."""
    try:
        with path.open("rb") as f:
            return _header(f, path)[0].kdf == "argon2id"
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from exc


def open_backup(path: Path, passphrase: str | None, into: Path) -> BackupInfo:
    """Decrypt and check `path`, extracting its files into the empty directory `into`.

    Raises WrongPassphrase, BackupTruncated, BackupCorrupt or BackupError; on any failure
    `into` may hold partial files (the caller stages it and deletes it)."""
    try:
        with path.open("rb") as f:
            header, aad = _header(f, path)
            insecure = header.kdf == "none"
            if insecure:
                key = INSECURE_KEY
            elif passphrase is None:
                raise BackupError(f"backup {path} is protected: a passphrase is required")
            else:
                key = passphrase_key(passphrase, header.salt, KdfParams(
                    header.iterations, header.memory_cost, header.lanes))
            if not hmac.compare_digest(_key_check(key), header.key_check):
                if insecure:
                    raise BackupCorrupt(f"backup {path} is damaged (bad key check)")
                raise WrongPassphrase(f"wrong passphrase for backup {path}")
            plain = into / ".backup.tar.gz"
            with plain.open("wb") as sink:
                _unseal(f, sink, key, header, aad, path)
            files = _extract(plain, into, path)
            plain.unlink()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return BackupInfo(header.peer_id, header.created, insecure, files)


def _unseal(f: IO[bytes], sink: IO[bytes], key: bytes, header: _Header, aad: bytes,
            path: Path) -> None:
    aead = ChaCha20Poly1305(key)
    count = 0
    while True:
        size = int.from_bytes(_read_exact(f, 4, path), "big")
        if not TAG_SIZE <= size <= CHUNK_SIZE + TAG_SIZE:
            raise BackupCorrupt(f"backup {path} is damaged (bad chunk length)")
        sealed = _read_exact(f, size, path)
        for last in (False, True):
            nonce = header.nonce_prefix + count.to_bytes(4, "big") + bytes([last])
            try:
                sink.write(aead.decrypt(nonce, sealed, aad))
                break
            except InvalidTag:
                continue
        else:
            raise BackupCorrupt(f"backup {path} is damaged (chunk {count} fails its check)")
        count += 1
        if last:
            if f.read(1):
                raise BackupCorrupt(f"backup {path} is damaged (bytes after its end)")
            return


def _extract(plain: Path, into: Path, path: Path) -> tuple[str, ...]:
    names: list[str] = []
    try:
        with tarfile.open(plain, mode="r:gz") as tar:
            for member in tar:
                name = member.name
                blob = _BLOB_NAME.fullmatch(name)
                limit = MAX_IMAGE_BYTES if blob else _LIMITS.get(name)
                if limit is None or not member.isfile() or name in names:
                    raise BackupCorrupt(f"backup {path} holds an unexpected entry {name!r}")
                if member.size > limit or len(names) > MAX_IMAGES + 3:
                    raise BackupCorrupt(f"backup {path} holds an oversized entry {name!r}")
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has contents
                fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                names.append(name)
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise BackupCorrupt(f"backup {path} is damaged ({exc})") from None
    if KEYSTORE_FILE not in names:
        raise BackupCorrupt(f"backup {path} holds no keystore")
    if DB_FILE in names:
        _check_db(into / DB_FILE, path)
    return tuple(names)


def _check_db(db: Path, path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupCorrupt(f"backup {path} holds a damaged node.db ({exc})") from None
    if ok != "ok":
        raise BackupCorrupt(f"backup {path} holds a damaged node.db ({ok})")
