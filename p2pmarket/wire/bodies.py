"""Schemas of the bodies carried by signed records, one `msgspec.Struct` per record kind.

Constraints live in the types (lengths, ranges, enums) so decoding a body is validating it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta

from p2pmarket.taxonomy import is_category

MAX_IMAGE_BYTES = 2_000_000

Key32 = Annotated[bytes, Meta(min_length=32, max_length=32)]
Sig64 = Annotated[bytes, Meta(min_length=64, max_length=64)]
ObjectId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
CountryCode = Annotated[str, Meta(pattern=r"^[A-Z]{2}$")]
GeohashStr = Annotated[str, Meta(pattern=r"^[0-9b-hjkmnp-z]{1,12}$")]
Amount = Annotated[int, Meta(ge=0, le=2**53)]
Currency = Literal["BTC", "USD", "EUR", "GBP", "CHF", "JPY", "CAD", "AUD"]
Condition = Literal["new", "like-new", "good", "fair", "for-parts"]
Mime = Literal["image/jpeg", "image/png", "image/webp", "image/gif"]
Tag = Annotated[str, Meta(min_length=1, max_length=32)]
CategoryPath = Annotated[str, Meta(min_length=1, max_length=64)]
Days = Annotated[int, Meta(ge=0, le=365)]

DAY = 86_400


class Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every record body; `KIND` names the record kind it travels in.

    Bodies and their parts are msgpack maps, so validation errors name the field
    (`$.price.amount`) and JSON clients send plain objects.
    """

    KIND: ClassVar[str] = ""


class _Part(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the small structs nested in bodies (maps, so JSON clients can send objects)."""


class Price(_Part, frozen=True):
    amount: Amount  # minor units: cents, or sats for BTC
    currency: Currency


class Location(_Part, frozen=True):
    country: CountryCode
    geohash: GeohashStr


class ImageRef(_Part, frozen=True):
    sha256: Key32
    mime: Mime
    size: Annotated[int, Meta(ge=1, le=MAX_IMAGE_BYTES)]


class ShippingOption(_Part, frozen=True):
    region: Annotated[str, Meta(min_length=1, max_length=40)]  # country code or "worldwide"
    price: Amount  # in the listing's currency
    days_min: Days
    days_max: Days

    def __post_init__(self) -> None:
        if self.days_max < self.days_min:
            raise ValueError("shipping days_max is before days_min")


class EscrowTerms(_Part, frozen=True):
    """Deadlines in seconds: to fund after acceptance, to open a dispute, for the ruling."""

    funding_timeout: Annotated[int, Meta(ge=3600, le=30 * DAY)] = 2 * DAY
    dispute_window: Annotated[int, Meta(ge=DAY, le=90 * DAY)] = 14 * DAY
    ruling_timeout: Annotated[int, Meta(ge=DAY, le=60 * DAY)] = 14 * DAY


class Listing(Body, frozen=True):
    KIND: ClassVar[str] = "listing"

    id: ObjectId
    title: Annotated[str, Meta(min_length=1, max_length=120)]
    description: Annotated[str, Meta(max_length=4000)]
    price: Price
    category: CategoryPath
    condition: Condition
    quantity: Annotated[int, Meta(ge=0, le=1_000_000)]
    location: Location
    shipping: Annotated[tuple[ShippingOption, ...], Meta(max_length=10)] = ()
    images: Annotated[tuple[ImageRef, ...], Meta(max_length=8)] = ()
    tags: Annotated[tuple[Tag, ...], Meta(max_length=10)] = ()
    arbiters: Annotated[tuple[Key32, ...], Meta(max_length=8)] = ()
    escrow: EscrowTerms = EscrowTerms()

    def __post_init__(self) -> None:
        if not is_category(self.category):
            raise ValueError(f"unknown category {self.category!r}")
        if not self.title.strip():
            raise ValueError("title is blank")


class Profile(Body, frozen=True):
    KIND: ClassVar[str] = "profile"

    name: Annotated[str, Meta(min_length=1, max_length=64)]
    bio: Annotated[str, Meta(max_length=1000)] = ""
    avatar: ImageRef | None = None
    location: Location | None = None


class Peer(Body, frozen=True):
    """Where to reach a node (libp2p multiaddrs) and its X25519 key for sealed mail."""

    KIND: ClassVar[str] = "peer"

    addrs: Annotated[tuple[Annotated[str, Meta(min_length=1, max_length=256)], ...],
                     Meta(min_length=1, max_length=8)]
    enc_key: Key32


# "seller": one key per seller (term: its public key in hex) listing all its listings, so a
# restored node finds its own again and a buyer can browse one seller's shop
IndexScope = Literal["kw", "cat", "geo", "seller"]


class IndexEntry(Body, frozen=True):
    """One search-index entry pointing at a listing, with enough summary to show a result."""

    KIND: ClassVar[str] = "index"

    scope: IndexScope
    term: Annotated[str, Meta(min_length=1, max_length=64)]
    listing_id: ObjectId
    listing_seq: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    title: Annotated[str, Meta(min_length=1, max_length=120)]
    price: Price
    category: CategoryPath


class Review(Body, frozen=True):
    """Signed by the buyer's per-order rating key; `grant` is the seller's signature over it."""

    KIND: ClassVar[str] = "review"

    seller: Key32
    order_id: ObjectId
    rating: Annotated[int, Meta(ge=1, le=5)]
    text: Annotated[str, Meta(max_length=2000)]
    grant: Sig64


class Arbiter(Body, frozen=True):
    """An arbiter's advert: who it is and what a ruling costs."""

    KIND: ClassVar[str] = "arbiter"

    name: Annotated[str, Meta(min_length=1, max_length=64)]
    description: Annotated[str, Meta(max_length=1000)] = ""
    fee_percent_bp: Annotated[int, Meta(ge=0, le=2000)] = 0  # basis points of the escrow
    fee_fixed_sat: Annotated[int, Meta(ge=0, le=10_000_000)] = 0


class Mail(Body, frozen=True):
    """A message sealed to the recipient's X25519 key (ephemeral ECDH + AEAD)."""

    KIND: ClassVar[str] = "mail"

    id: ObjectId
    recipient: Key32
    ephemeral: Key32
    nonce: Annotated[bytes, Meta(min_length=12, max_length=12)]
    ciphertext: Annotated[bytes, Meta(min_length=16, max_length=6000)]


ReportReason = Literal["scam", "prohibited", "counterfeit", "spam", "offensive", "other"]


class Report(Body, frozen=True):
    """A signed report about a listing; each reporter has one slot per listing."""

    KIND: ClassVar[str] = "report"

    listing_publisher: Key32
    listing_id: ObjectId
    reason: ReportReason
    text: Annotated[str, Meta(max_length=1000)] = ""


DeletableKind = Literal["listing", "profile", "arbiter", "mail"]


class Tombstone(Body, frozen=True):
    """Deletes the publisher's own record of `target_kind`/`target_id` (a higher seq wins).

    For mail, `recipient` names the mailbox the mail was left in.
    """

    KIND: ClassVar[str] = "tombstone"

    target_kind: DeletableKind
    target_id: Annotated[str, Meta(max_length=64)] = ""
    recipient: Key32 | None = None

    def __post_init__(self) -> None:
        if (self.target_kind == "mail") != (self.recipient is not None):
            raise ValueError("a mail tombstone, and only a mail tombstone, names its recipient")


class Holder(Body, frozen=True):
    """The publisher serves the image with this sha256 over the blob protocol (one slot per
    holder under the image's key; short-lived, re-announced while held)."""

    KIND: ClassVar[str] = "holder"

    sha256: Key32


class Keeper(Body, frozen=True):
    """An image keeper's advert in the keepers directory: it takes pushed listing images from
    any publisher, up to `per_publisher` bytes each, within a disk budget of `budget` bytes."""

    KIND: ClassVar[str] = "keeper"

    budget: Annotated[int, Meta(ge=1, le=2**50)]
    per_publisher: Annotated[int, Meta(ge=1, le=2**50)]


BODY_TYPES: dict[str, type[Body]] = {
    t.KIND: t for t in (Listing, Profile, Peer, IndexEntry, Review, Arbiter, Mail, Tombstone,
                        Report, Holder, Keeper)
}

# The longest a record of each kind may live; also what a storing DHT node accepts.
MAX_TTL: dict[str, int] = {
    "listing": 30 * DAY,
    "profile": 30 * DAY,
    "peer": 2 * DAY,
    "index": 30 * DAY,
    "review": 365 * DAY,
    "arbiter": 30 * DAY,
    "mail": 14 * DAY,
    "tombstone": 30 * DAY,
    "report": 90 * DAY,
    "holder": 2 * DAY,
    "keeper": 2 * DAY,
}
