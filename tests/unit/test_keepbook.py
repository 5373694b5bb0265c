"""The image keeper's book (quotas, disk budget, LRU eviction) and the holder/keeper records."""

from __future__ import annotations

import hashlib

import pytest

from dht.validate import KeyMismatch, validate_for_key
from node.market.images import closest_keepers
from node.p2p.keepbook import Admitted, KeepBook, KeepPolicy, Kept, Refusal, Refused
from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import MAX_IMAGE_BYTES, MAX_TTL, Holder, Keeper
from p2pmarket.wire.dhtkeys import KEEPERS_KEY, blob_key, is_multi, record_key, record_slot
from p2pmarket.wire.records import MalformedRecord, decode_record, sign_record

NOW = 1_700_000_000
ALICE, BOB, CAROL = (b"\xa1" * 32, b"\xb0" * 32, b"\xc0" * 32)


def d(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(4, "big")).digest()


def admit(book: KeepBook, publisher: bytes, n: int, size: int, now: float = NOW
          ) -> Admitted | Refused:
    decision = book.admit(publisher, d(n), size, until=NOW + 86_400, now=now)
    if isinstance(decision, Admitted) and not decision.already:
        book.settle(d(n))
    return decision


def test_per_publisher_quota_in_bytes_and_count() -> None:
    book = KeepBook(KeepPolicy(budget=10_000, per_publisher=1_000, max_blobs_per_publisher=3))
    assert isinstance(admit(book, ALICE, 1, 600), Admitted)
    assert admit(book, ALICE, 2, 500) == Refused(Refusal.QUOTA)  # 1100 > 1000
    assert isinstance(admit(book, ALICE, 3, 100), Admitted)
    assert isinstance(admit(book, ALICE, 4, 100), Admitted)
    assert admit(book, ALICE, 5, 1) == Refused(Refusal.QUOTA)  # a fourth blob
    assert isinstance(admit(book, BOB, 5, 1), Admitted)  # others are not charged for Alice
    assert book.usage(ALICE) == (800, 3) and book.usage(BOB) == (1, 1)
    book.drop(d(1))
    assert book.usage(ALICE) == (200, 2) and book.used_bytes == 201


def test_budget_evicts_least_recently_used_of_others_only() -> None:
    book = KeepBook(KeepPolicy(budget=1_000, per_publisher=1_000))
    admit(book, ALICE, 1, 400, now=NOW)
    admit(book, BOB, 2, 400, now=NOW + 1)
    book.touch(d(1), NOW + 2)  # Alice's image was served since: Bob's is the oldest now
    decision = admit(book, CAROL, 3, 300, now=NOW + 3)
    assert isinstance(decision, Admitted) and [e.digest for e in decision.evict] == [d(2)]
    assert d(2) not in book and book.used_bytes == 700
    # a publisher cannot push its own images out to make room for itself
    alone = KeepBook(KeepPolicy(budget=1_000, per_publisher=5_000))
    admit(alone, ALICE, 1, 400)
    admit(alone, ALICE, 2, 400)
    assert admit(alone, ALICE, 3, 300) == Refused(Refusal.FULL)
    assert d(1) in alone and d(2) in alone


def test_pending_entries_count_and_are_never_evicted() -> None:
    book = KeepBook(KeepPolicy(budget=1_000))
    first = book.admit(ALICE, d(1), 900, until=NOW + 10, now=NOW)
    assert isinstance(first, Admitted) and first.entry.pending and book.used_bytes == 900
    assert book.admit(BOB, d(2), 200, until=NOW + 10, now=NOW) == Refused(Refusal.FULL)
    assert book.admit(BOB, d(1), 900, until=NOW + 10, now=NOW) == Refused(Refusal.BUSY)
    assert book.drop(d(1)) is not None and book.used_bytes == 0  # the fetch failed


def test_already_held_extends_its_life_without_charging_again() -> None:
    book = KeepBook(KeepPolicy(budget=1_000))
    admit(book, ALICE, 1, 500)
    again = book.admit(BOB, d(1), 500, until=NOW + 999_999, now=NOW + 5)
    assert isinstance(again, Admitted) and again.already and again.entry.until == NOW + 999_999
    assert book.usage(ALICE) == (500, 1) and book.usage(BOB) == (0, 0)
    assert book.expired(NOW + 86_400) == [] and len(book) == 1
    assert [e.digest for e in book.expired(NOW + 999_999)] == [d(1)] and len(book) == 0


def test_too_large_and_restored_from_entries() -> None:
    book = KeepBook(KeepPolicy(budget=100))
    assert admit(book, ALICE, 1, 101) == Refused(Refusal.TOO_LARGE)
    big = KeepBook(KeepPolicy(budget=10 * MAX_IMAGE_BYTES, per_publisher=10 * MAX_IMAGE_BYTES))
    assert admit(big, ALICE, 1, MAX_IMAGE_BYTES + 1) == Refused(Refusal.TOO_LARGE)
    restored = KeepBook(KeepPolicy(budget=100), [Kept(d(1), ALICE, 60, NOW, NOW)])
    assert restored.used_bytes == 60 and restored.usage(ALICE) == (60, 1)
    decision = admit(restored, BOB, 2, 50)  # Alice's, the only other one, makes room
    assert isinstance(decision, Admitted) and decision.evict[0].digest == d(1)
    with pytest.raises(ValueError):
        KeepPolicy(budget=0)


def test_holder_and_keeper_records_are_bound_and_short_lived() -> None:
    me = Identity.generate()
    digest = d(7)
    holder = sign_record(me, Holder(sha256=digest), seq=1, created=NOW, ttl=86_400)
    assert record_key(holder) == blob_key(digest) and is_multi(holder)
    assert record_slot(holder) == (me.public, "")
    assert validate_for_key(blob_key(digest), holder.raw, now=NOW + 1) == holder
    with pytest.raises(KeyMismatch):  # announced under another image's key
        validate_for_key(blob_key(d(8)), holder.raw, now=NOW + 1)
    with pytest.raises(MalformedRecord):
        sign_record(me, Holder(sha256=digest), seq=1, ttl=MAX_TTL["holder"] + 1)
    with pytest.raises(MalformedRecord):
        decode_record(sign_record(me, Holder(sha256=digest), seq=1).raw[:-1])
    advert = sign_record(me, Keeper(budget=10**9, per_publisher=64 << 20), seq=1, created=NOW)
    assert record_key(advert) == KEEPERS_KEY
    assert validate_for_key(KEEPERS_KEY, advert.raw, now=NOW + 1).body == advert.body
    with pytest.raises(MalformedRecord):
        sign_record(me, Keeper(budget=0, per_publisher=1), seq=1)


def test_every_publisher_picks_the_same_keepers_for_an_image() -> None:
    keepers = [Identity.generate().public for _ in range(6)]
    first = closest_keepers(d(1), keepers)
    assert closest_keepers(d(1), list(reversed(keepers))) == first
    assert sorted(first) == sorted(keepers)
