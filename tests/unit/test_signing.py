"""The signed-envelope codec: round trip, domain separation, canonical form, size, typed errors,
and the wire bytes of every module built on it (pinned, so the shared codec changed none)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Annotated

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import Meta

from p2pmarket.identity import Identity
from p2pmarket.wire import signing
from p2pmarket.wire.bodies import Key32
from p2pmarket.wire.escrow import (
    EscrowStepPayload,
    EscrowWireError,
    Proposal,
    open_escrow_step,
    open_proposal,
    sign_escrow_step,
    sign_proposal,
)
from p2pmarket.wire.market import Shipped
from p2pmarket.wire.messages import Chat, MessageError, open_message, sign_message
from p2pmarket.wire.order_steps import BadStep, open_step, sign_step
from p2pmarket.wire.records import RecordError, decode_record

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))
CAROL = Identity.from_seed(bytes(range(2, 34)))
NOTE_DOMAIN = b"p2pmarket/test/note\x00"
LIMIT = 512


class Note(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    author: Key32
    count: Annotated[int, Meta(ge=0)]
    text: str


class NoteError(signing.EnvelopeError):
    pass


class BadNote(NoteError):
    pass


class ForgedNote(NoteError):
    pass


def codec(domain: bytes = NOTE_DOMAIN, *, strict: bool = True,
          errors: signing.Errors = signing.DEFAULT_ERRORS,
          check: Callable[[Note], None] | None = None) -> signing.SignedCodec[Note]:
    return signing.SignedCodec(domain, Note, name="note", max_size=LIMIT,
                               signer=lambda note: note.author, check=check, errors=errors,
                               strict=strict)


def note(text: str = "hello", count: int = 1) -> Note:
    return Note(ALICE.public, count, text)


def test_round_trip_is_the_plain_msgpack_pair() -> None:
    raw = codec().sign(ALICE, note())
    assert codec().open(raw) == note()
    payload = msgspec.msgpack.encode(note())
    assert raw == msgspec.msgpack.encode([payload, ALICE.sign(NOTE_DOMAIN + payload)])


def test_a_signature_from_another_domain_is_refused() -> None:
    raw = codec(b"p2pmarket/test/other\x00").sign(ALICE, note())
    with pytest.raises(signing.BadEnvelopeSignature, match="signature"):
        codec().open(raw)


def test_a_tampered_payload_is_refused() -> None:
    wire = msgspec.msgpack.decode(codec().sign(ALICE, note()), type=signing.SignedPayload)
    forged = msgspec.msgpack.encode(note("hellO"))
    with pytest.raises(signing.BadEnvelopeSignature):
        codec().open(msgspec.msgpack.encode(signing.SignedPayload(forged, wire.sig)))
    # the same note claimed by another key
    claimed = msgspec.msgpack.encode(Note(BOB.public, 1, "hello"))
    with pytest.raises(signing.BadEnvelopeSignature):
        codec().open(msgspec.msgpack.encode(signing.SignedPayload(claimed, wire.sig)))


def test_non_canonical_bytes_are_refused() -> None:
    raw = codec().sign(ALICE, note())
    wire = msgspec.msgpack.decode(raw, type=signing.SignedPayload)
    # the payload's length as bin16 instead of bin8: same values, other bytes
    assert raw[:2] == b"\x92\xc4"
    wide_wrapper = b"\x92\xc5\x00" + raw[2:]
    assert msgspec.msgpack.decode(wide_wrapper, type=signing.SignedPayload) == wire
    with pytest.raises(signing.MalformedEnvelope, match="canonical"):
        codec().open(wide_wrapper)
    # a payload with `count` as uint16, correctly signed
    payload = msgspec.msgpack.encode(note())
    wide = payload.replace(b"\x01\xa5hello", b"\xcd\x00\x01\xa5hello")
    assert wide != payload
    resigned = msgspec.msgpack.encode(
        signing.SignedPayload(wide, ALICE.sign(NOTE_DOMAIN + wide)))
    with pytest.raises(signing.MalformedEnvelope, match="canonical"):
        codec().open(resigned)
    # a lenient codec (how direct messages are read) takes both
    assert codec(strict=False).open(wide_wrapper) == note()
    assert codec(strict=False).open(resigned) == note()


def test_oversize_is_refused_both_ways() -> None:
    with pytest.raises(signing.EnvelopeTooLarge):
        codec().sign(ALICE, note("x" * LIMIT))
    with pytest.raises(signing.EnvelopeTooLarge):
        codec().open(b"\x92" + b"\x00" * LIMIT)


def test_only_the_named_key_signs() -> None:
    with pytest.raises(signing.MalformedEnvelope):
        codec().sign(BOB, note())


def test_schema_constraints_are_checked_before_signing() -> None:
    with pytest.raises(signing.MalformedEnvelope, match="invalid note"):
        codec().sign(ALICE, note(count=-1))


def test_a_module_gets_its_own_error_classes() -> None:
    errors = signing.Errors(BadNote, ForgedNote, BadNote)
    strict = codec(errors=errors)
    with pytest.raises(BadNote):
        strict.open(b"\x00")
    with pytest.raises(BadNote):
        strict.open(b"\x00" * (LIMIT + 1))
    with pytest.raises(ForgedNote):
        strict.open(codec(b"p2pmarket/test/other\x00").sign(ALICE, note()))


def test_check_runs_before_the_signature() -> None:
    seen: list[Note] = []

    def refuse(obj: Note) -> None:
        seen.append(obj)
        raise BadNote("no")

    raw = codec(b"p2pmarket/test/other\x00").sign(ALICE, note())
    with pytest.raises(BadNote):
        codec(check=refuse).open(raw)  # a bad signature, but the cheap check speaks first
    assert seen == [note()]


@pytest.mark.parametrize("blob", [b"", b"\xc1", b"\x92", b"\x92\xc4\x01", b"\x91\xc0",
                                  b"\x93\xc4\x00\xc4\x00\x00", b"\x92\xc4\x00\xc4\x40" + bytes(64)])
def test_malformed_bytes_give_the_typed_error(blob: bytes) -> None:
    with pytest.raises(signing.MalformedEnvelope):
        codec().open(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_the_typed_error(blob: bytes) -> None:
    with pytest.raises(signing.EnvelopeError):
        codec().open(blob)
    with pytest.raises(signing.EnvelopeError):
        codec(strict=False).open(blob)


OPENERS: dict[str, Callable[[bytes], object]] = {
    "record": lambda raw: decode_record(raw, now=1_700_000_000),
    "message": open_message,
    "order step": open_step,
    "proposal": open_proposal,
    "escrow step": open_escrow_step,
}


def test_every_wire_error_is_an_envelope_error() -> None:
    for error in (RecordError, MessageError, BadStep, EscrowWireError):
        assert issubclass(error, signing.EnvelopeError)
    rng = random.Random(99)
    for _ in range(300):
        blob = rng.randbytes(rng.randrange(0, 120))
        for opener in OPENERS.values():
            with pytest.raises(signing.EnvelopeError):
                opener(rng.choice([blob, b"\x92\xc4" + blob, b"\x97\xa7listing" + blob]))


def _wire_samples() -> dict[str, bytes]:
    _, message = sign_message(ALICE, BOB.public, Chat(conversation="conv-0001", text="hello"),
                              seq=3, msg_id="msg-00000001", sent_ms=1_700_000_000_000)
    step = sign_step(ALICE, "order-0001", 1, bytes(32), Shipped("UPS", "1Z999"),
                     1_700_000_000_000).raw
    proposal = sign_proposal(ALICE, Proposal(order="order-0001", buyer=ALICE.public,
                                             seller=BOB.public, arbiter=CAROL.public,
                                             opened=b"step", advert=b"advert", terms=b"terms",
                                             at_ms=1))
    escrow_step = sign_escrow_step(BOB, EscrowStepPayload(order="order-0001", proposal=bytes(32),
                                                          author=BOB.public, at_ms=5,
                                                          event=b"event"))
    return {"message": message, "order step": step, "proposal": proposal,
            "escrow step": escrow_step}


# SHA-256 of each module's wire bytes for fixed keys and content, taken before the codec was
# shared (Ed25519 signatures are deterministic): the envelope format must never drift.
GOLDEN = {
    "message": "9005b2db3da72382e0f08331e9af3ffd5b7f76e1ecbd751932777d2bb850a021",
    "order step": "924b71b0f37eafac99fcc9e47609b1c813d8ae9b144d4210d36702573e73620d",
    "proposal": "36648c8d6a9075d34476d8da0a131dafbde9da1abf01853a76ee1dd25b6e1c20",
    "escrow step": "c6d15a55ddad1cef4daf0eef75d8a08684660737f1d9dbf11f4a023746335ea4",
}


def test_golden_wire_bytes_of_every_envelope() -> None:
    samples = _wire_samples()
    assert {name: hashlib.sha256(raw).hexdigest() for name, raw in samples.items()} == GOLDEN
    for name, raw in samples.items():
        OPENERS[name](raw)  # and each opens
