"""Signed records: the envelope every object leaving a node travels in, and its verification.

Wire form: msgpack array [kind, publisher, seq, created, expires, body, sig] where `body` is the
canonical msgpack of the kind's schema. `sig` is Ed25519 over `p2pmarket/v1/<kind>` + NUL + the
canonical bytes of the other six fields. Decoding insists on canonical bytes (re-encoding must give
the input back), so one record has exactly one encoding and one signature check. The parts
(canonical check, size limit, domain-prefixed signature, typed errors) are `wire.signing`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from p2pmarket.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity
from p2pmarket.wire import signing
from p2pmarket.wire.bodies import BODY_TYPES, MAX_TTL, Body

MAX_RECORD_SIZE = 7168  # fits one kademlia UDP request (8192) with room for the RPC framing
CLOCK_SKEW = 600  # seconds a record's `created` may lie ahead of our clock
MAX_SEQ = 2**63 - 1
DOMAIN = b"p2pmarket/v1/"


class RecordError(signing.EnvelopeError):
    """Base of every reason a record is refused."""


class MalformedRecord(RecordError):
    """Not a well-formed, canonical record of its kind (bad bytes, bad field, bad times)."""


class BadSignature(RecordError):
    """The signature does not verify for the claimed publisher."""


class RecordTooLarge(RecordError):
    """The encoded record is over the size limit."""


class ExpiredRecord(RecordError):
    """The record's expiry time has passed."""


class UnknownKind(RecordError):
    """A kind this node does not know."""


class _Envelope(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    kind: str
    publisher: bytes
    seq: int
    created: int
    expires: int
    body: bytes
    sig: bytes


B = TypeVar("B", bound=Body, covariant=True)
BT = TypeVar("BT", bound=Body)


@dataclass(frozen=True, slots=True)
class Record(Generic[B]):
    """A verified record; `raw` is its exact wire bytes."""

    kind: str
    publisher: bytes
    seq: int
    created: int
    expires: int
    body: B
    sig: bytes
    raw: bytes

    @property
    def size(self) -> int:
        return len(self.raw)


AnyRecord = Record[Body]


def _domain(kind: str) -> bytes:
    return DOMAIN + kind.encode() + b"\x00"


def _signed_fields(kind: str, publisher: bytes, seq: int, created: int, expires: int,
                   body: bytes) -> bytes:
    return signing.encode((kind, publisher, seq, created, expires, body))


def _signing_bytes(kind: str, publisher: bytes, seq: int, created: int, expires: int,
                   body: bytes) -> bytes:
    return _domain(kind) + _signed_fields(kind, publisher, seq, created, expires, body)


def encode_body(body: Body) -> bytes:
    """Canonical bytes of a body, after checking it against its schema's constraints."""
    return signing.encode_valid(body, body.KIND, MalformedRecord)


def sign_record(identity: Identity, body: BT, *, seq: int, created: int | None = None,
                ttl: int | None = None) -> Record[BT]:
    """Sign `body` as `identity`; the result is what `decode_record` would return."""
    kind = body.KIND
    if kind not in BODY_TYPES:
        raise UnknownKind(f"unknown record kind {kind!r}")
    if not 0 <= seq <= MAX_SEQ:
        raise MalformedRecord(f"seq out of range: {seq}")
    created = int(time.time()) if created is None else created
    ttl = MAX_TTL[kind] if ttl is None else ttl
    if not 0 < ttl <= MAX_TTL[kind]:
        raise MalformedRecord(f"ttl for {kind} must be 1..{MAX_TTL[kind]} s, got {ttl}")
    expires = created + ttl
    body_raw = encode_body(body)
    sig = signing.sign(identity, _domain(kind),
                       _signed_fields(kind, identity.public, seq, created, expires, body_raw))
    raw = signing.encode(_Envelope(kind, identity.public, seq, created, expires, body_raw, sig))
    signing.check_size(raw, MAX_RECORD_SIZE, f"{kind} record", RecordTooLarge)
    return Record(kind, identity.public, seq, created, expires, body, sig, raw)


def decode_record(data: bytes, *, now: float | None = None, allow_expired: bool = False,
                  max_size: int = MAX_RECORD_SIZE, verified: bool = False) -> Record[Body]:
    """Parse and verify a record from untrusted bytes; raises only `RecordError` subclasses.

    `verified=True` skips the signature check, and only that: for bytes this node verified
    before and kept in its own database (a cache read must not cost an Ed25519 check).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedRecord(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    signing.check_size(data, max_size, "record", RecordTooLarge)
    env = signing.decode(data, _Envelope, "record envelope", MalformedRecord)
    body_type = BODY_TYPES.get(env.kind)
    if body_type is None:
        raise UnknownKind(f"unknown record kind {env.kind[:40]!r}")
    signing.require_canonical(env, data, "envelope", MalformedRecord)
    if len(env.publisher) != PUBLIC_KEY_SIZE or len(env.sig) != SIGNATURE_SIZE:
        raise MalformedRecord("publisher must be 32 bytes and sig 64 bytes")
    if not (0 <= env.seq <= MAX_SEQ and 0 <= env.created < env.expires):
        raise MalformedRecord("seq, created or expires out of range")
    if env.expires - env.created > MAX_TTL[env.kind]:
        raise MalformedRecord(f"{env.kind} lifetime exceeds {MAX_TTL[env.kind]} s")
    if not verified:
        fields = _signed_fields(env.kind, env.publisher, env.seq, env.created, env.expires,
                                env.body)
        signing.require_signature(env.publisher, env.sig, _domain(env.kind), fields, env.kind,
                                  BadSignature)
    body = signing.decode(env.body, body_type, f"{env.kind} body", MalformedRecord)
    signing.require_canonical(body, env.body, f"{env.kind} body", MalformedRecord)
    now = time.time() if now is None else now
    if env.created > now + CLOCK_SKEW:
        raise MalformedRecord(f"{env.kind} record is created in the future")
    if env.expires <= now and not allow_expired:
        raise ExpiredRecord(f"{env.kind} record expired at {env.expires}")
    return Record(env.kind, env.publisher, env.seq, env.created, env.expires, body, env.sig, data)
