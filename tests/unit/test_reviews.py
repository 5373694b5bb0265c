"""Review grants: only a rating key the seller granted for an order can review that seller."""

from __future__ import annotations

import os

import msgspec

from node.trade.reviews import (
    ReviewReader,
    build_review,
    rating_identity,
    summarize,
    valid_reviews,
    verify_review,
)
from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import Review
from p2pmarket.wire.dhtkeys import reviews_key
from p2pmarket.wire.market import sign_grant, verify_grant
from p2pmarket.wire.records import AnyRecord, Record, sign_record

ORDER = "order-000001"


def granted(seller: Identity, order_id: str = ORDER, stars: int = 5,
            rating: Identity | None = None, seq: int = 1) -> Record[Review]:
    rating = rating or Identity.generate()
    return build_review(rating, seller=seller.public, order_id=order_id, stars=stars,
                        text="as described", grant=sign_grant(seller, order_id, rating.public),
                        seq=seq)


def test_a_granted_review_verifies() -> None:
    seller = Identity.generate()
    record = granted(seller)
    assert verify_review(record)
    assert verify_grant(seller.public, ORDER, record.publisher, record.body.grant)


def test_forged_grant_is_rejected() -> None:
    seller, rating = Identity.generate(), Identity.generate()
    forged = build_review(rating, seller=seller.public, order_id=ORDER, stars=5, text="",
                          grant=os.urandom(64))
    assert not verify_review(forged)
    # a grant the "buyer" signed itself
    self_signed = build_review(rating, seller=seller.public, order_id=ORDER, stars=5, text="",
                               grant=sign_grant(rating, ORDER, rating.public))
    assert not verify_review(self_signed)


def test_wrong_seller_is_rejected() -> None:
    seller, other = Identity.generate(), Identity.generate()
    rating = Identity.generate()
    grant = sign_grant(seller, ORDER, rating.public)
    moved = build_review(rating, seller=other.public, order_id=ORDER, stars=1, text="",
                         grant=grant)
    assert not verify_review(moved)


def test_wrong_order_is_rejected() -> None:
    seller, rating = Identity.generate(), Identity.generate()
    grant = sign_grant(seller, ORDER, rating.public)
    other_order = build_review(rating, seller=seller.public, order_id="order-000002", stars=5,
                               text="", grant=grant)
    assert not verify_review(other_order)


def test_grant_used_by_another_rating_key_is_rejected() -> None:
    seller = Identity.generate()
    real = granted(seller)
    thief = Identity.generate()
    stolen = build_review(thief, seller=seller.public, order_id=ORDER, stars=1, text="",
                          grant=real.body.grant)
    assert not verify_review(stolen)


def test_tampered_bytes_are_rejected() -> None:
    seller = Identity.generate()
    record = granted(seller)
    flipped = bytearray(record.raw)
    flipped[-70] ^= 0x01
    fake = Record(record.kind, record.publisher, record.seq, record.created, record.expires,
                  record.body, record.sig, bytes(flipped))
    assert not verify_review(fake)


def test_readers_keep_valid_reviews_one_per_order() -> None:
    seller, rating = Identity.generate(), Identity.generate()
    first = granted(seller, stars=2, rating=rating)
    edited = granted(seller, stars=4, rating=rating, seq=2)
    other = granted(seller, order_id="order-000002", stars=5)
    forged = build_review(Identity.generate(), seller=seller.public, order_id="order-000003",
                          stars=1, text="", grant=os.urandom(64))
    elsewhere = granted(Identity.generate(), order_id="order-000004", stars=1)
    records: list[AnyRecord] = [first, edited, other, forged, elsewhere]
    kept = valid_reviews(records, seller.public)
    assert sorted(r.body.rating for r in kept) == [4, 5]
    assert summarize(kept) == (2, 4.5)
    assert summarize([]) == (0, 0.0)


def test_rating_keys_are_unlinkable_but_stable() -> None:
    buyer = Identity.generate()
    a, a_again = rating_identity(buyer, "negotiation-a"), rating_identity(buyer, "negotiation-a")
    b = rating_identity(buyer, "negotiation-b")
    assert a.public == a_again.public
    assert len({a.public, b.public, buyer.public}) == 3
    assert rating_identity(Identity.generate(), "negotiation-a").public != a.public


class FakeDht:
    def __init__(self, records: list[AnyRecord]) -> None:
        self.records = records
        self.asked: list[bytes] = []

    async def get_all(self, key: bytes, *, max_pages: int = 4) -> list[AnyRecord]:
        self.asked.append(key)
        return self.records


async def test_reader_over_a_dht() -> None:
    seller = Identity.generate()
    not_a_review = sign_record(seller, msgspec.structs.replace(
        granted(seller).body, grant=os.urandom(64)), seq=1)
    dht = FakeDht([granted(seller, stars=3), granted(seller, order_id="order-000009", stars=4),
                   not_a_review])
    reader = ReviewReader(dht)
    assert await reader.reputation(seller.public) == (2, 3.5)
    assert dht.asked == [reviews_key(seller.public)]
