"""Reviews only a real buyer can write: per-order rating keys, the seller's grant, DHT readers.

When the buyer opens a negotiation it sends a fresh rating key; the seller's opening order step
signs a grant over (order id, seller key, rating key). The buyer later publishes a `Review` signed
by the rating key with the grant inside, under `reviews_key(seller)`. Readers keep only reviews
whose grant verifies, one per order. The rating key is derived from the buyer's identity seed
and the negotiation id, so it needs no storage and nobody else can link it to the buyer; the
buyer's node keeps the review among its own records (`node.market.owned`, signer = the
negotiation id) and renews it with the same derived key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import Review
from p2pmarket.wire.dhtkeys import reviews_key
from p2pmarket.wire.market import verify_grant
from p2pmarket.wire.records import AnyRecord, Record, RecordError, decode_record, sign_record

_RATING_INFO = b"p2pmarket/v1/rating-key"


class ReviewSource(Protocol):
    """What the readers need of a DHT node (`dht.server.DhtNode` is one)."""

    async def get_all(self, key: bytes, *, max_pages: int = ...) -> list[AnyRecord]: ...


def rating_identity(identity: Identity, negotiation_id: str) -> Identity:
    """The buyer's rating key for one negotiation (so for its one order)."""
    seed = HKDF(hashes.SHA256(), 32, salt=negotiation_id.encode(), info=_RATING_INFO).derive(
        identity.seed())
    return Identity.from_seed(seed)


def build_review(rating: Identity, *, seller: bytes, order_id: str, stars: int, text: str,
                 grant: bytes, seq: int = 1, created: int | None = None) -> Record[Review]:
    """A review record signed by the rating key; a higher `seq` replaces an earlier one."""
    body = Review(seller=seller, order_id=order_id, rating=stars, text=text, grant=grant)
    return sign_record(rating, body, seq=seq, created=created)


def verify_review(record: AnyRecord) -> bool:
    """True for a well-signed review whose grant is the named seller's, for this rating key."""
    try:
        # signature and grant only: whether it is still live is the reader's call, on its clock
        checked = decode_record(record.raw, now=record.created, allow_expired=True)
    except RecordError:
        return False
    body = checked.body
    return isinstance(body, Review) and verify_grant(body.seller, body.order_id,
                                                     checked.publisher, body.grant)


def valid_reviews(records: Iterable[AnyRecord], seller: bytes) -> list[Record[Review]]:
    """The verified reviews of `seller`, one per order (the newest), newest first."""
    best: dict[str, Record[Review]] = {}
    for record in records:
        body = record.body
        if not isinstance(body, Review) or body.seller != seller or not verify_review(record):
            continue
        # an honest seller grants one key per order; should two keys review one order, the
        # same one counts on every node (lowest key), with its newest version
        known = best.get(body.order_id)
        if known is None or (record.publisher, -record.seq) < (known.publisher, -known.seq):
            best[body.order_id] = record  # type: ignore[assignment]
    return sorted(best.values(), key=lambda r: (-r.created, r.publisher))


def summarize(reviews: Iterable[Record[Review]]) -> tuple[int, float]:
    """(count, average stars); (0, 0.0) when there are none."""
    stars = [r.body.rating for r in reviews]
    return len(stars), (sum(stars) / len(stars) if stars else 0.0)


class ReviewReader:
    def __init__(self, dht: ReviewSource) -> None:
        self.dht = dht

    async def reviews_for(self, seller: bytes) -> list[Record[Review]]:
        return valid_reviews(await self.dht.get_all(reviews_key(seller), max_pages=8), seller)

    async def reputation(self, seller: bytes) -> tuple[int, float]:
        return summarize(await self.reviews_for(seller))
