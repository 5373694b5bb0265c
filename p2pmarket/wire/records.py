"""Signed records: the envelope every object leaving a node travels in, and its verification.

Wire form: msgpack array [kind, publisher, seq, created, expires, body, sig] where `body` is the
canonical msgpack of the kind's schema. `sig` is Ed25519 over `p2pmarket/v1/<kind>` + NUL + the
canonical bytes of the other six fields. Decoding insists on canonical bytes (re-encoding must give
the input back), so one record has exactly one encoding and one signature check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from p2pmarket.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify
from p2pmarket.wire.bodies import BODY_TYPES, MAX_TTL, Body

MAX_RECORD_SIZE = 7168  # fits one kademlia UDP request (8192) with room for the RPC framing
CLOCK_SKEW = 600  # seconds a record's `created` may lie ahead of our clock
MAX_SEQ = 2**63 - 1
DOMAIN = b"p2pmarket/v1/"

_encoder = msgspec.msgpack.Encoder()
# what msgspec may raise on hostile bytes (invalid UTF-8 surfaces as UnicodeDecodeError)
_DECODE_ERRORS = (msgspec.MsgspecError, ValueError, TypeError, OverflowError, RecursionError)


class RecordError(Exception):
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


def _signing_bytes(kind: str, publisher: bytes, seq: int, created: int, expires: int,
                   body: bytes) -> bytes:
    fields = _encoder.encode((kind, publisher, seq, created, expires, body))
    return DOMAIN + kind.encode() + b"\x00" + fields


def encode_body(body: Body) -> bytes:
    """Canonical bytes of a body, after checking it against its schema's constraints."""
    raw = _encoder.encode(body)
    try:
        msgspec.msgpack.decode(raw, type=type(body))
    except msgspec.ValidationError as exc:
        raise MalformedRecord(f"invalid {body.KIND}: {exc}") from exc
    return raw


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
    sig = identity.sign(_signing_bytes(kind, identity.public, seq, created, expires, body_raw))
    raw = _encoder.encode(_Envelope(kind, identity.public, seq, created, expires, body_raw, sig))
    if len(raw) > MAX_RECORD_SIZE:
        raise RecordTooLarge(f"{kind} record is {len(raw)} bytes; the limit is {MAX_RECORD_SIZE}")
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
    if len(data) > max_size:
        raise RecordTooLarge(f"record is {len(data)} bytes; the limit is {max_size}")
    try:
        env = msgspec.msgpack.decode(data, type=_Envelope)
    except _DECODE_ERRORS as exc:
        raise MalformedRecord(f"not a record envelope: {exc}") from exc
    body_type = BODY_TYPES.get(env.kind)
    if body_type is None:
        raise UnknownKind(f"unknown record kind {env.kind[:40]!r}")
    if _encoder.encode(env) != data:
        raise MalformedRecord("envelope is not canonically encoded")
    if len(env.publisher) != PUBLIC_KEY_SIZE or len(env.sig) != SIGNATURE_SIZE:
        raise MalformedRecord("publisher must be 32 bytes and sig 64 bytes")
    if not (0 <= env.seq <= MAX_SEQ and 0 <= env.created < env.expires):
        raise MalformedRecord("seq, created or expires out of range")
    if env.expires - env.created > MAX_TTL[env.kind]:
        raise MalformedRecord(f"{env.kind} lifetime exceeds {MAX_TTL[env.kind]} s")
    signed = _signing_bytes(env.kind, env.publisher, env.seq, env.created, env.expires, env.body)
    if not verified and not verify(env.publisher, env.sig, signed):
        raise BadSignature(f"{env.kind} signature does not verify")
    try:
        body = msgspec.msgpack.decode(env.body, type=body_type)
    except _DECODE_ERRORS as exc:
        raise MalformedRecord(f"invalid {env.kind} body: {exc}") from exc
    if _encoder.encode(body) != env.body:
        raise MalformedRecord(f"{env.kind} body is not canonically encoded")
    now = time.time() if now is None else now
    if env.created > now + CLOCK_SKEW:
        raise MalformedRecord(f"{env.kind} record is created in the future")
    if env.expires <= now and not allow_expired:
        raise ExpiredRecord(f"{env.kind} record expired at {env.expires}")
    return Record(env.kind, env.publisher, env.seq, env.created, env.expires, body, env.sig, data)
