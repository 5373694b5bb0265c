"""The encrypted keystore: the node's Ed25519 identity seed and its 24 recovery words.

A new keystore's identity is derived from the words (`p2pmarket.words`), so the words alone
restore the peer id; older keystores keep the random identity they were made with.

One msgpack file, sealed with ChaCha20-Poly1305 under an Argon2id key (or a fixed key when the
user explicitly opted out of a passphrase); the header is the AEAD associated data.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from p2pmarket.identity import Identity
from p2pmarket.words import BadWords, check_words, identity_from_words, new_words, seed_of

log = logging.getLogger(__name__)

KEYSTORE_FILE = "keystore"
FORMAT_VERSION = 1
MAX_FILE_SIZE = 64 * 1024
SALT_SIZE = 16
NONCE_SIZE = 12
MAX_MEMORY_COST = 1024 * 1024  # KiB; a file asking for more is refused
INSECURE_KEY = hashlib.sha256(b"p2pmarket/insecure-no-passphrase").digest()
_DECODE_ERRORS = (msgspec.MsgspecError, ValueError, TypeError, OverflowError, RecursionError)


class KeystoreError(Exception):
    """Base of every keystore failure; the message is one line meant for a human."""


class KeystoreExists(KeystoreError):
    """Refusing to overwrite a keystore that is already there."""


class KeystoreMissing(KeystoreError):
    """No keystore file at the given path."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not open this keystore."""


class PassphraseRequired(KeystoreError):
    """The keystore is passphrase-protected and no passphrase was given."""


class KeystoreCorrupt(KeystoreError):
    """The file is not a keystore this code can read (bad bytes, version, lengths or fields)."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost. `memory_cost` is in KiB and must be at least 8 * lanes."""

    iterations: int = 3
    memory_cost: int = 65536
    lanes: int = 4


DEFAULT_KDF = KdfParams()
# cheap enough for unit tests; never use for a real keystore
TEST_KDF = KdfParams(iterations=1, memory_cost=64, lanes=1)

# bounds on what a file may ask of us, so a hostile file cannot make opening it eat all memory
_Iterations = Annotated[int, msgspec.Meta(ge=1, le=64)]
_MemoryCost = Annotated[int, msgspec.Meta(ge=8, le=MAX_MEMORY_COST)]
_Lanes = Annotated[int, msgspec.Meta(ge=1, le=64)]
_Salt = Annotated[bytes, msgspec.Meta(min_length=SALT_SIZE, max_length=SALT_SIZE)]
_Nonce = Annotated[bytes, msgspec.Meta(min_length=NONCE_SIZE, max_length=NONCE_SIZE)]


class _Version(msgspec.Struct):
    version: int


class _Header(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    kdf: Literal["argon2id", "none"]
    salt: _Salt
    iterations: _Iterations
    memory_cost: _MemoryCost
    lanes: _Lanes
    nonce: _Nonce
    insecure: bool


class _File(_Header, frozen=True, forbid_unknown_fields=True):
    ciphertext: bytes


class _Secrets(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    identity_seed: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    mnemonic: str


_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True)
class Keystore:
    """The opened secrets. `insecure` is True for a keystore written without a passphrase."""

    identity: Identity
    mnemonic: str = field(repr=False)
    insecure: bool

    def seed_bytes(self) -> bytes:
        """The 64-byte BIP-39 seed of the mnemonic (no BIP-39 passphrase), root of escrow keys."""
        return seed_of(self.mnemonic)

    @property
    def words_restore_identity(self) -> bool:
        """True when the 24 words alone bring back this peer id (keystores made before the
        identity was derived from the words answer False: keep a backup file for those)."""
        return identity_from_words(self.mnemonic).public == self.identity.public


def _header_bytes(header: _Header) -> bytes:
    # re-encoding a decoded header gives the same bytes: msgspec writes struct fields in order
    fields = {name: getattr(header, name) for name in _Header.__struct_fields__}
    return _encoder.encode(_Header(**fields))


def passphrase_key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    """The 32-byte Argon2id key of `passphrase` (also used for backup files)."""
    # NFKC so the same passphrase typed on different systems gives the same key (as BIP-39 does)
    secret = unicodedata.normalize("NFKC", passphrase).encode("utf-8")
    try:
        kdf = Argon2id(
            salt=salt,
            length=32,
            iterations=params.iterations,
            lanes=params.lanes,
            memory_cost=params.memory_cost,
        )
        return kdf.derive(secret)
    except UnsupportedAlgorithm as exc:
        raise KeystoreError("this OpenSSL build has no Argon2id; upgrade cryptography") from exc
    except (ValueError, MemoryError) as exc:
        raise KeystoreCorrupt(f"unusable Argon2id parameters: {exc}") from exc


def _derive_key(passphrase: str, header: _Header) -> bytes:
    return passphrase_key(passphrase, header.salt,
                          KdfParams(header.iterations, header.memory_cost, header.lanes))


def check_kdf_params(p: KdfParams) -> None:
    # the same bounds the reader enforces, so we never write a file we would refuse to open
    if not (1 <= p.iterations <= 64 and 1 <= p.lanes <= 64):
        raise ValueError("Argon2id iterations and lanes must be within 1..64")
    if not 8 * p.lanes <= p.memory_cost <= MAX_MEMORY_COST:
        raise ValueError("Argon2id memory_cost must be within 8 * lanes KiB .. 1 GiB")


def _seal(ks: Keystore, passphrase: str | None, kdf_params: KdfParams) -> bytes:
    if passphrase is not None and passphrase == "":
        raise KeystoreError("empty passphrase; pass None to create an insecure keystore explicitly")
    check_kdf_params(kdf_params)
    insecure = passphrase is None
    header = _Header(
        version=FORMAT_VERSION,
        kdf="none" if insecure else "argon2id",
        salt=secrets.token_bytes(SALT_SIZE),
        iterations=kdf_params.iterations,
        memory_cost=kdf_params.memory_cost,
        lanes=kdf_params.lanes,
        nonce=secrets.token_bytes(NONCE_SIZE),
        insecure=insecure,
    )
    key = INSECURE_KEY if passphrase is None else _derive_key(passphrase, header)
    plain = _encoder.encode(_Secrets(identity_seed=ks.identity.seed(), mnemonic=ks.mnemonic))
    ciphertext = ChaCha20Poly1305(key).encrypt(header.nonce, plain, _header_bytes(header))
    return _encoder.encode(_File(**msgspec.structs.asdict(header), ciphertext=ciphertext))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, *, overwrite: bool) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may have taken bits away; we want exactly 0600
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() refuses an existing target atomically, which replace() cannot do
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KeystoreExists(f"a keystore already exists at {path}") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                # a filesystem without hard links: best effort, the race window is tiny
                if path.exists():
                    raise KeystoreExists(f"a keystore already exists at {path}") from None
                os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def create_keystore(
    path: Path,
    passphrase: str | None,
    *,
    kdf_params: KdfParams = DEFAULT_KDF,
    identity: Identity | None = None,
    mnemonic: str | None = None,
) -> Keystore:
    """Write a new keystore (mode 0600) and return it; `None` passphrase means insecure.

    Fresh 24 words are generated unless given (restore); the identity is derived from the
    words unless given (an identity from an older keystore, kept by a backup).
    """
    if path.exists():
        raise KeystoreExists(f"a keystore already exists at {path}")
    try:
        words = check_words(new_words() if mnemonic is None else mnemonic)
    except BadWords as exc:
        raise KeystoreError(str(exc)) from None
    ident = identity_from_words(words) if identity is None else identity
    ks = Keystore(identity=ident, mnemonic=words, insecure=passphrase is None)
    data = _seal(ks, passphrase, kdf_params)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_atomic(path, data, overwrite=False)
    except OSError as exc:
        raise KeystoreError(f"cannot write keystore {path}: {exc.strerror or exc}") from exc
    if ks.insecure:
        log.warning("keystore %s is not protected by a passphrase", path)
    log.info("created keystore %s for %s", path, ks.identity.peer_id)
    return ks


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        raise KeystoreMissing(f"no keystore at {path}; run 'p2pmarket init' first") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror or exc}") from exc
    if stat.S_IMODE(mode) & 0o077:
        log.warning("keystore %s is readable by other users (mode %o)", path, stat.S_IMODE(mode))
    if len(data) > MAX_FILE_SIZE:
        raise KeystoreCorrupt(f"keystore {path} is too large to be a keystore")
    return data


def _decode(path: Path, data: bytes) -> _File:
    try:
        version = msgspec.msgpack.decode(data, type=_Version).version
    except _DECODE_ERRORS:
        raise KeystoreCorrupt(f"keystore {path} is damaged or not a keystore") from None
    if version != FORMAT_VERSION:
        raise KeystoreCorrupt(f"keystore {path} has unsupported format version {version}")
    try:
        sealed = msgspec.msgpack.decode(data, type=_File)
    except _DECODE_ERRORS as exc:
        raise KeystoreCorrupt(f"keystore {path} is damaged: {exc}") from None
    if sealed.insecure != (sealed.kdf == "none"):
        raise KeystoreCorrupt(f"keystore {path} is damaged: kdf and insecure flag disagree")
    return sealed


def open_keystore(path: Path, passphrase: str | None) -> Keystore:
    """Read and decrypt a keystore; never writes. An insecure keystore ignores the passphrase."""
    sealed = _decode(path, _read(path))
    if sealed.insecure:
        key = INSECURE_KEY
        if passphrase is not None:
            log.info("keystore %s has no passphrase; ignoring the one given", path)
    elif passphrase is None:
        raise PassphraseRequired(f"keystore {path} is protected; a passphrase is required")
    else:
        key = _derive_key(passphrase, sealed)
    try:
        aead = ChaCha20Poly1305(key)
        plain = aead.decrypt(sealed.nonce, sealed.ciphertext, _header_bytes(sealed))
    except InvalidTag:
        if sealed.insecure:
            raise KeystoreCorrupt(f"keystore {path} is damaged (authentication failed)") from None
        msg = f"wrong passphrase for keystore {path} (or the file is damaged)"
        raise WrongPassphrase(msg) from None
    try:
        inner = msgspec.msgpack.decode(plain, type=_Secrets)
        words = check_words(inner.mnemonic)
        identity = Identity.from_seed(inner.identity_seed)
    except _DECODE_ERRORS:
        raise KeystoreCorrupt(f"keystore {path} holds malformed secrets") from None
    return Keystore(identity=identity, mnemonic=words, insecure=sealed.insecure)


def change_passphrase(
    path: Path, old: str | None, new: str | None, *, kdf_params: KdfParams = DEFAULT_KDF
) -> Keystore:
    """Re-encrypt the keystore under `new` (None: insecure), replacing the file atomically."""
    ks = open_keystore(path, old)
    ks = Keystore(identity=ks.identity, mnemonic=ks.mnemonic, insecure=new is None)
    data = _seal(ks, new, kdf_params)
    try:
        _write_atomic(path, data, overwrite=True)
    except OSError as exc:
        raise KeystoreError(f"cannot rewrite keystore {path}: {exc.strerror or exc}") from exc
    log.info("changed the passphrase of keystore %s", path)
    return ks
