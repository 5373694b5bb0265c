"""The one signed-envelope codec: Ed25519 over a domain prefix + canonical msgpack, a size limit
and typed errors. Records, direct messages, order steps and escrow proposals/steps all use it.

`SignedCodec` is the [payload, sig] envelope of one struct type under one domain. The functions
below it are its parts, for envelopes of another shape (records sign their fields, not a payload).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from p2pmarket.identity import Identity, verify
from p2pmarket.wire.bodies import Sig64

# what msgspec may raise on hostile bytes (invalid UTF-8 surfaces as UnicodeDecodeError)
DECODE_ERRORS = (msgspec.MsgspecError, ValueError, TypeError, OverflowError, RecursionError)

_encoder = msgspec.msgpack.Encoder()

S = TypeVar("S")
T = TypeVar("T", bound=msgspec.Struct)


class EnvelopeError(Exception):
    """Base of every reason a signed object is refused (the sender's fault).

    Each wire module's own error base (`RecordError`, `MessageError`, `EscrowWireError`,
    `OrderLogError`) derives from it and the codec raises that module's classes (`Errors`).
    """


class MalformedEnvelope(EnvelopeError):
    """Not well-formed, canonical bytes of the expected type."""


class BadEnvelopeSignature(EnvelopeError):
    """The signature does not verify for the key the signed object names."""


class EnvelopeTooLarge(EnvelopeError):
    """Over the size limit."""


@dataclass(frozen=True, slots=True)
class Errors:
    """The exception class raised for each failure: a wire module passes its own."""

    malformed: type[EnvelopeError] = MalformedEnvelope
    bad_signature: type[EnvelopeError] = BadEnvelopeSignature
    too_large: type[EnvelopeError] = EnvelopeTooLarge


DEFAULT_ERRORS = Errors()


class SignedPayload(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """Wire form [payload, sig]: `payload` is the canonical msgpack of the signed struct and
    `sig` Ed25519 over domain + payload."""

    payload: bytes
    sig: Sig64


class _LenientSignedPayload(msgspec.Struct, frozen=True, array_like=True):
    # how direct messages have always been parsed: any sig length, extra elements ignored
    payload: bytes
    sig: bytes


# -- the parts ---------------------------------------------------------------------------------


def encode(obj: Any) -> bytes:
    """Canonical msgpack: the one encoder every signed byte string comes from."""
    return _encoder.encode(obj)


def encode_valid(obj: msgspec.Struct, what: str,
                 error: type[EnvelopeError] = MalformedEnvelope) -> bytes:
    """Canonical bytes of `obj`, after checking its schema's constraints as a receiver would."""
    raw = _encoder.encode(obj)
    try:
        msgspec.msgpack.decode(raw, type=type(obj))
    except msgspec.ValidationError as exc:
        raise error(f"invalid {what}: {exc}") from exc
    return raw


def check_size(raw: bytes, limit: int, what: str,
               error: type[EnvelopeError] = EnvelopeTooLarge) -> None:
    if len(raw) > limit:
        raise error(f"{what} is {len(raw)} bytes; the limit is {limit}")


def decode(raw: bytes, type_: type[S], what: str,
           error: type[EnvelopeError] = MalformedEnvelope) -> S:
    """Decode untrusted bytes; anything msgspec raises becomes `error`."""
    try:
        return msgspec.msgpack.decode(raw, type=type_)
    except DECODE_ERRORS as exc:
        raise error(f"not a well-formed {what}: {exc}") from exc


def require_canonical(obj: Any, raw: bytes, what: str,
                      error: type[EnvelopeError] = MalformedEnvelope) -> None:
    """One object, one encoding: anything else could give one object two hashes."""
    if _encoder.encode(obj) != raw:
        raise error(f"{what} is not canonically encoded")


def sign(identity: Identity, domain: bytes, data: bytes) -> bytes:
    return identity.sign(domain + data)


def require_signature(public: bytes, sig: bytes, domain: bytes, data: bytes, what: str,
                      error: type[EnvelopeError] = BadEnvelopeSignature) -> None:
    if not verify(public, sig, domain + data):
        raise error(f"{what} signature does not verify")


# -- the [payload, sig] envelope ---------------------------------------------------------------


class SignedCodec(Generic[T]):
    """Signs and opens one struct type as [payload, sig] under one domain.

    `signer` names the key in the struct that must have signed it; `check` runs cheap checks
    before the Ed25519 verification. `strict=False` skips the canonical check and tolerates a
    malformed wrapper (any sig length, extra elements): direct messages, which are never hashed
    or kept as evidence, have always been read that way.
    """

    def __init__(self, domain: bytes, payload_type: type[T], *, name: str, max_size: int,
                 signer: Callable[[T], bytes], check: Callable[[T], None] | None = None,
                 errors: Errors = DEFAULT_ERRORS, strict: bool = True) -> None:
        self.domain = domain
        self.payload_type = payload_type
        self.name = name
        self.max_size = max_size
        self.signer = signer
        self.check = check
        self.errors = errors
        self.strict = strict

    def sign(self, identity: Identity, obj: T) -> bytes:
        """The wire bytes of `obj` signed by `identity`, which must be the key it names."""
        if self.signer(obj) != identity.public:
            raise self.errors.malformed(f"a {self.name} is signed by the key it names")
        payload = encode_valid(obj, self.name, self.errors.malformed)
        raw = _encoder.encode(SignedPayload(payload, sign(identity, self.domain, payload)))
        check_size(raw, self.max_size, self.name, self.errors.too_large)
        return raw

    def open(self, raw: bytes) -> T:
        """Decode and verify untrusted bytes; raises only this codec's `errors`."""
        check_size(raw, self.max_size, self.name, self.errors.too_large)
        wire: SignedPayload | _LenientSignedPayload
        if self.strict:
            wire = decode(raw, SignedPayload, self.name, self.errors.malformed)
        else:
            wire = decode(raw, _LenientSignedPayload, self.name, self.errors.malformed)
        obj = decode(wire.payload, self.payload_type, self.name, self.errors.malformed)
        if self.strict:
            require_canonical(wire, raw, self.name, self.errors.malformed)
            require_canonical(obj, wire.payload, self.name, self.errors.malformed)
        if self.check is not None:
            self.check(obj)
        require_signature(self.signer(obj), wire.sig, self.domain, wire.payload, self.name,
                          self.errors.bad_signature)
        return obj
