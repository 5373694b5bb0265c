from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mnemonic import Mnemonic

from p2pmarket.identity import Identity
from p2pmarket.keystore import (
    KEYSTORE_FILE,
    TEST_KDF,
    KeystoreCorrupt,
    KeystoreError,
    KeystoreExists,
    KeystoreMissing,
    PassphraseRequired,
    WrongPassphrase,
    change_passphrase,
    create_keystore,
    open_keystore,
)


def make_keystore(tmp_path: Path, passphrase: str | None = "correct horse") -> Path:
    path = tmp_path / KEYSTORE_FILE
    create_keystore(path, passphrase, kdf_params=TEST_KDF)
    return path


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / KEYSTORE_FILE
    created = create_keystore(path, "correct horse", kdf_params=TEST_KDF)
    opened = open_keystore(path, "correct horse")
    assert opened.identity.public == created.identity.public
    assert opened.identity.seed() == created.identity.seed()
    assert opened.mnemonic == created.mnemonic
    assert len(opened.mnemonic.split()) == 24
    assert Mnemonic("english").check(opened.mnemonic)
    assert opened.seed_bytes() == Mnemonic.to_seed(created.mnemonic)
    assert len(opened.seed_bytes()) == 64
    assert not opened.insecure
    assert created.mnemonic not in repr(opened)


def test_round_trip_with_default_argon2_params(tmp_path: Path) -> None:
    path = tmp_path / KEYSTORE_FILE
    created = create_keystore(path, "pässwörd")
    raw = msgspec.msgpack.decode(path.read_bytes())
    assert (raw["kdf"], raw["iterations"], raw["memory_cost"], raw["lanes"]) == (
        "argon2id",
        3,
        65536,
        4,
    )
    assert open_keystore(path, "pässwörd").identity.peer_id == created.identity.peer_id


def test_restore_from_identity_and_mnemonic(tmp_path: Path) -> None:
    identity = Identity.generate()
    words = Mnemonic("english").generate(strength=256)
    path = tmp_path / KEYSTORE_FILE
    create_keystore(path, "pw", kdf_params=TEST_KDF, identity=identity, mnemonic=words)
    opened = open_keystore(path, "pw")
    assert opened.identity.public == identity.public
    assert opened.mnemonic == words
    with pytest.raises(KeystoreError, match="bad checksum"):
        create_keystore(tmp_path / "other", "pw", kdf_params=TEST_KDF, mnemonic="abandon " * 24)


def test_file_mode_is_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = make_keystore(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [KEYSTORE_FILE]  # no temp file left


def test_wrong_passphrase_leaves_file_untouched(tmp_path: Path) -> None:
    path = make_keystore(tmp_path)
    before = path.read_bytes()
    old_time = time.time() - 3600
    os.utime(path, (old_time, old_time))
    mtime = path.stat().st_mtime_ns
    with pytest.raises(WrongPassphrase):
        open_keystore(path, "wrong horse")
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime


def test_protected_keystore_needs_passphrase(tmp_path: Path) -> None:
    path = make_keystore(tmp_path)
    with pytest.raises(PassphraseRequired):
        open_keystore(path, None)


def test_insecure_flag_recorded(tmp_path: Path) -> None:
    path = make_keystore(tmp_path, passphrase=None)
    raw = msgspec.msgpack.decode(path.read_bytes())
    assert raw["insecure"] is True
    assert raw["kdf"] == "none"
    opened = open_keystore(path, None)
    assert opened.insecure
    # an insecure keystore ignores a passphrase rather than pretending to check it
    assert open_keystore(path, "anything").identity.public == opened.identity.public


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="empty passphrase"):
        create_keystore(tmp_path / KEYSTORE_FILE, "", kdf_params=TEST_KDF)


def test_create_twice_raises(tmp_path: Path) -> None:
    path = make_keystore(tmp_path)
    before = path.read_bytes()
    with pytest.raises(KeystoreExists):
        create_keystore(path, "other", kdf_params=TEST_KDF)
    assert path.read_bytes() == before


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(KeystoreMissing):
        open_keystore(tmp_path / KEYSTORE_FILE, "pw")


def _tamper(path: Path, **changes: object) -> None:
    raw = msgspec.msgpack.decode(path.read_bytes())
    raw.update(changes)
    path.write_bytes(msgspec.msgpack.encode(raw))


@pytest.mark.parametrize(
    "changes",
    [
        {"salt": b"\x00" * 16},
        {"iterations": 2},
        {"nonce": b"\x01" * 12},
        {"insecure": True},
        {"insecure": True, "kdf": "none"},
    ],
)
def test_header_tampering_detected(tmp_path: Path, changes: dict[str, object]) -> None:
    path = make_keystore(tmp_path)
    _tamper(path, **changes)
    with pytest.raises((WrongPassphrase, KeystoreCorrupt)):
        open_keystore(path, "correct horse")


def test_header_is_authenticated_even_when_insecure(tmp_path: Path) -> None:
    # salt and costs are unused without a passphrase; only the AEAD associated data notices
    path = make_keystore(tmp_path, passphrase=None)
    _tamper(path, salt=b"\x00" * 16, memory_cost=128)
    with pytest.raises(KeystoreCorrupt):
        open_keystore(path, None)


def test_unsupported_version(tmp_path: Path) -> None:
    path = make_keystore(tmp_path)
    _tamper(path, version=2)
    with pytest.raises(KeystoreCorrupt, match="version 2"):
        open_keystore(path, "correct horse")


def test_hostile_kdf_cost_refused(tmp_path: Path) -> None:
    path = make_keystore(tmp_path)
    _tamper(path, memory_cost=2**40)
    with pytest.raises(KeystoreCorrupt):
        open_keystore(path, "correct horse")


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_random_bytes_are_corrupt(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / KEYSTORE_FILE
    path.write_bytes(data)
    with pytest.raises(KeystoreCorrupt):
        open_keystore(path, "pw")


@pytest.fixture(scope="module")
def insecure_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_keystore(tmp_path_factory.mktemp("ks"), passphrase=None).read_bytes()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0), flip=st.tuples(st.integers(0), st.integers(1, 255)))
def test_truncated_or_flipped_is_corrupt(
    tmp_path: Path, insecure_bytes: bytes, cut: int, flip: tuple[int, int]
) -> None:
    # the insecure form needs no KDF, so every damaged variant must be reported as corrupt
    path = tmp_path / KEYSTORE_FILE
    path.write_bytes(insecure_bytes[: cut % len(insecure_bytes)])
    with pytest.raises(KeystoreCorrupt):
        open_keystore(path, None)
    damaged = bytearray(insecure_bytes)
    damaged[flip[0] % len(damaged)] ^= flip[1]
    path.write_bytes(bytes(damaged))
    with pytest.raises(KeystoreCorrupt):
        open_keystore(path, None)


def test_change_passphrase(tmp_path: Path) -> None:
    path = make_keystore(tmp_path)
    original = open_keystore(path, "correct horse")
    with pytest.raises(WrongPassphrase):
        change_passphrase(path, "nope", "new", kdf_params=TEST_KDF)
    change_passphrase(path, "correct horse", "battery staple", kdf_params=TEST_KDF)
    with pytest.raises(WrongPassphrase):
        open_keystore(path, "correct horse")
    reopened = open_keystore(path, "battery staple")
    assert reopened.identity.public == original.identity.public
    assert reopened.mnemonic == original.mnemonic
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    change_passphrase(path, "battery staple", None, kdf_params=TEST_KDF)
    assert open_keystore(path, None).insecure
    assert [p.name for p in tmp_path.iterdir()] == [KEYSTORE_FILE]
