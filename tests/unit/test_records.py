"""Signed records: canonical encoding, signatures, typed errors, golden vectors."""

from __future__ import annotations

import os
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmarket.identity import Identity
from p2pmarket.wire import bodies as b
from p2pmarket.wire.records import (
    MAX_RECORD_SIZE,
    BadSignature,
    ExpiredRecord,
    MalformedRecord,
    RecordError,
    RecordTooLarge,
    UnknownKind,
    _signing_bytes,
    decode_record,
    sign_record,
)
from tests.support.records import make_listing
from tests.support.strategies import BY_KIND

NOW = 1_700_000_000
ALICE = Identity.from_seed(bytes(range(32)))
MALLORY = Identity.from_seed(bytes(range(1, 33)))


GOLDEN_RAW = (
    "97a76c697374696e67c42003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b807"
    "ce6553f100ce657b7e00c501948da26964a86c73742d30303031a57469746c65b0526f61642062696b652c20"
    "353420636dab6465736372697074696f6eb7537465656c206672616d652c206e65772074797265732ea57072"
    "69636582a6616d6f756e74cd61a8a863757272656e6379a3455552a863617465676f7279ac73706f7274732f"
    "62696b6573a9636f6e646974696f6ea4676f6f64a87175616e7469747901a86c6f636174696f6e82a7636f75"
    "6e747279a24445a767656f68617368a57533336462a87368697070696e679184a6726567696f6ea24445a570"
    "72696365cd05dca8646179735f6d696e02a8646179735f6d617805a6696d616765739183a6736861323536c4"
    "200000000000000000000000000000000000000000000000000000000000000000a46d696d65aa696d616765"
    "2f6a706567a473697a65cdbc55a47461677392a462696b65a5737465656ca8617262697465727390a6657363"
    "726f7783af66756e64696e675f74696d656f7574ce0002a300ae646973707574655f77696e646f77ce001275"
    "00ae72756c696e675f74696d656f7574ce00127500c4403fef42d9f79c9aaa1efb9b73f73f946db68c2204fd"
    "c072ea3cba8b83e4a92cfb1f2ab00feb4ebb07be9deac781a5eb3802822af7bd7d208c442a34c5df85c007"
)
GOLDEN_SIG = (
    "3fef42d9f79c9aaa1efb9b73f73f946db68c2204fdc072ea3cba8b83e4a92cfb1f2ab00feb4ebb07be9deac7"
    "81a5eb3802822af7bd7d208c442a34c5df85c007"
)


def test_golden_vector_listing() -> None:
    """Fixed key + fixed listing = fixed bytes and signature; the encoding must never drift."""
    rec = sign_record(ALICE, make_listing(), seq=7, created=NOW, ttl=30 * 86_400)
    assert rec.raw.hex() == GOLDEN_RAW
    assert rec.sig.hex() == GOLDEN_SIG


def test_round_trip_listing() -> None:
    rec = sign_record(ALICE, make_listing(), seq=1, created=NOW)
    assert decode_record(rec.raw, now=NOW + 1) == rec
    assert rec.publisher == ALICE.public and rec.kind == "listing"


def test_every_single_byte_change_fails() -> None:
    raw = sign_record(ALICE, make_listing(), seq=1, created=NOW).raw
    for pos in range(len(raw)):
        for value in range(256):
            if value == raw[pos]:
                continue
            mutated = raw[:pos] + bytes([value]) + raw[pos + 1 :]
            with pytest.raises(RecordError):
                decode_record(mutated, now=NOW + 1)


def test_claimed_by_another_key_fails() -> None:
    rec = sign_record(ALICE, make_listing(), seq=1, created=NOW)
    forged = rec.raw.replace(ALICE.public, MALLORY.public)
    with pytest.raises(BadSignature):
        decode_record(forged, now=NOW + 1)


def test_oversize_is_refused_both_ways() -> None:
    with pytest.raises(RecordTooLarge):
        sign_record(ALICE, make_listing(description="é" * 4000), seq=1, created=NOW)
    with pytest.raises(RecordTooLarge):
        decode_record(b"\x97" + b"\x00" * MAX_RECORD_SIZE, now=NOW)


def test_unknown_kind() -> None:
    rec = sign_record(ALICE, make_listing(), seq=1, created=NOW)
    raw = rec.raw.replace(b"\xa7listing", b"\xa7kitchen", 1)
    with pytest.raises(UnknownKind):
        decode_record(raw, now=NOW + 1)


def test_expired_and_future() -> None:
    rec = sign_record(ALICE, make_listing(), seq=1, created=NOW, ttl=60)
    with pytest.raises(ExpiredRecord):
        decode_record(rec.raw, now=NOW + 60)
    assert decode_record(rec.raw, now=NOW + 60, allow_expired=True).seq == 1
    with pytest.raises(MalformedRecord, match="future"):
        decode_record(rec.raw, now=NOW - 3600)


def test_ttl_over_kind_maximum_refused() -> None:
    with pytest.raises(MalformedRecord):
        sign_record(ALICE, make_listing(), seq=1, created=NOW, ttl=b.MAX_TTL["listing"] + 1)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"title": "x" * 121}, "title"),
        ({"category": "weapons"}, "category"),
        ({"condition": "mint"}, "condition"),
        ({"price": b.Price(-1, "EUR")}, "price.amount"),
        ({"location": b.Location("DE", "aaaa")}, "location"),
        ({"images": (b.ImageRef(bytes(32), "image/png", 10),) * 9}, "images"),
    ],
)
def test_listing_constraints(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises((MalformedRecord, ValueError), match=fragment):
        sign_record(ALICE, make_listing(**changes), seq=1, created=NOW)


def test_body_must_be_canonical() -> None:
    """A correctly signed body whose bytes are not the canonical encoding is refused."""
    body = msgspec.msgpack.encode(make_listing(quantity=1))
    wide = body.replace(b"\xa8quantity\x01", b"\xa8quantity\xcd\x00\x01")  # uint16 for 1
    assert wide != body
    sig = ALICE.sign(_signing_bytes("listing", ALICE.public, 1, NOW, NOW + 60, wide))
    raw = msgspec.msgpack.encode(["listing", ALICE.public, 1, NOW, NOW + 60, wide, sig])
    with pytest.raises(MalformedRecord, match="canonical"):
        decode_record(raw, now=NOW)


@pytest.mark.parametrize("kind", sorted(BY_KIND))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip_every_kind(kind: str, data: st.DataObject) -> None:
    body = data.draw(BY_KIND[kind])
    seq = data.draw(st.integers(0, 2**63 - 1))
    rec = sign_record(ALICE, body, seq=seq, created=NOW, ttl=3600)
    back = decode_record(rec.raw, now=NOW)
    assert back == rec
    assert back.body == body


def test_random_bytes_raise_only_record_error() -> None:
    rng = random.Random(1234)
    for _ in range(10_000):
        blob = rng.randbytes(rng.randrange(0, 300))
        if rng.random() < 0.5:  # start like an envelope so the decoder goes deeper
            blob = b"\x97\xa7listing" + blob
        with pytest.raises(RecordError):
            decode_record(blob, now=NOW)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_hypothesis_bytes_raise_only_record_error(blob: bytes) -> None:
    with pytest.raises(RecordError):
        decode_record(blob, now=NOW)


def test_non_bytes_input() -> None:
    with pytest.raises(MalformedRecord):
        decode_record("hello", now=NOW)  # type: ignore[arg-type]


def test_fresh_keys_are_unique() -> None:
    assert Identity.from_seed(os.urandom(32)).public != ALICE.public
    assert msgspec.msgpack.encode(make_listing()) == msgspec.msgpack.encode(make_listing())


def test_verified_skips_only_the_signature() -> None:
    rec = sign_record(ALICE, make_listing(), seq=1, created=NOW)
    forged = rec.raw.replace(ALICE.public, MALLORY.public)
    assert decode_record(forged, now=NOW, verified=True).publisher == MALLORY.public
    with pytest.raises(BadSignature):
        decode_record(forged, now=NOW)
    with pytest.raises(MalformedRecord):
        decode_record(rec.raw[:-1] + b"\x00\x00", now=NOW, verified=True)
