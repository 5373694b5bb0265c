"""Wire bodies of the market conversation: inquiries, negotiation messages, order steps, grants.

Inquiries and negotiation bodies ride signed direct messages (`p2pmarket.wire.messages`). An order
step is signed again on its own (`SignedStep`, see `p2pmarket.wire.order_steps`) so an order's
log is evidence anyone can check without the message envelopes: the other party, an arbiter, a
restarted node.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from p2pmarket.identity import Identity, verify
from p2pmarket.wire.bodies import Key32, Listing, ObjectId, Price, Sig64
from p2pmarket.wire.message_base import ChatText, MessageBodyBase
from p2pmarket.wire.records import Record
from p2pmarket.wire.signing import SignedPayload

Hash32 = Annotated[bytes, Meta(min_length=32, max_length=32)]
Quantity = Annotated[int, Meta(ge=1, le=1_000_000)]
Note = Annotated[str, Meta(max_length=1000)]
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]
MAX_STEP = 8 * 1024  # bytes of one signed order step
MAX_STEPS = 1000  # entries in one order's log

GRANT_DOMAIN = b"p2pmarket/v1/review-grant\x00"
_LISTING_HASH_DOMAIN = b"p2pmarket/v1/listing-ref\x00"
_ORDER_ID_DOMAIN = b"p2pmarket/v1/order\x00"

_encoder = msgspec.msgpack.Encoder()


# -- what a proposal is bound to ---------------------------------------------------------------


class ListingRef(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One version of a listing: its id, seq and content hash (`listing_hash`)."""

    id: ObjectId
    seq: Seq
    hash: Hash32


def listing_hash(record: Record[Listing]) -> bytes:
    """Hash of what a listing version says: publisher, seq and body.

    `created`/`expires` are left out on purpose, so re-signing the same version to extend its
    life does not invalidate the offers made on it; any change of content needs a higher seq.
    """
    data = _encoder.encode((record.publisher, record.seq, _encoder.encode(record.body)))
    return hashlib.sha256(_LISTING_HASH_DOMAIN + data).digest()


def listing_ref(record: Record[Listing]) -> ListingRef:
    return ListingRef(record.body.id, record.seq, listing_hash(record))


# -- before an offer --------------------------------------------------------------------------


class Inquiry(MessageBodyBase, frozen=True, tag="inquiry"):
    """The buyer asks the seller about one of its listings before any offer. It opens the
    conversation `conversation` (a fresh random id, like a negotiation id, never one of them);
    every later line in it, from either side, is a `messages.Chat` with that id."""

    conversation: ObjectId
    listing: ObjectId  # the seller's listing id
    text: ChatText


# -- negotiation messages ----------------------------------------------------------------------


class Offer(MessageBodyBase, frozen=True, tag="offer"):
    """The buyer opens a negotiation. `rating_key` is the buyer's fresh per-negotiation review key
    (one negotiation makes at most one order), so the seller can grant it when accepting."""

    negotiation: ObjectId
    proposal: ObjectId
    listing: ListingRef
    quantity: Quantity
    price: Price  # the total for `quantity` items, shipping included, in the listing's currency
    rating_key: Key32
    note: Note = ""


class Counter(MessageBodyBase, frozen=True, tag="counter"):
    """A later proposal by either side; a seller's counter may rebind to a newer listing seq."""

    negotiation: ObjectId
    proposal: ObjectId
    listing: ListingRef
    quantity: Quantity
    price: Price
    note: Note = ""


class Accept(MessageBodyBase, frozen=True, tag="accept"):
    """Accept the other side's proposal. The seller's accept carries the order's first signed step
    (`step`); the buyer's carries none and the seller's node answers with its own accept."""

    negotiation: ObjectId
    proposal: ObjectId
    step: Annotated[bytes, Meta(max_length=MAX_STEP)] | None = None


class Decline(MessageBodyBase, frozen=True, tag="decline"):
    """Refuse and end the negotiation (either side)."""

    negotiation: ObjectId
    reason: Note = ""


class Withdraw(MessageBodyBase, frozen=True, tag="withdraw"):
    """Take one's proposals back and end the negotiation (either side)."""

    negotiation: ObjectId
    reason: Note = ""


class OrderStep(MessageBodyBase, frozen=True, tag="order-step"):
    """One signed step of an order's log (after the first, which rides the seller's Accept)."""

    order: ObjectId
    step: Annotated[bytes, Meta(max_length=MAX_STEP)]


NegotiationBody = Offer | Counter | Accept | Decline | Withdraw
MarketBody = NegotiationBody | OrderStep


def order_id_for(negotiation: str, proposal: str) -> str:
    """The order an accepted proposal becomes: both sides derive the same id."""
    digest = hashlib.sha256(_ORDER_ID_DOMAIN + _encoder.encode((negotiation, proposal))).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


# -- order steps -------------------------------------------------------------------------------


class _Action(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    pass


class Opened(_Action, frozen=True, tag="opened"):
    """The first step, by the seller: the agreed terms and the grant of the buyer's rating key."""

    negotiation: ObjectId
    proposal: ObjectId
    listing: ListingRef
    title: Annotated[str, Meta(max_length=120)]
    quantity: Quantity
    price: Price
    buyer: Key32
    seller: Key32
    rating_key: Key32
    grant: Sig64


class AddressSent(_Action, frozen=True, tag="address"):
    """The buyer's shipping address, sealed to the seller's X25519 key (`node.p2p.seal`)."""

    ephemeral: Key32
    nonce: Annotated[bytes, Meta(min_length=12, max_length=12)]
    ciphertext: Annotated[bytes, Meta(min_length=16, max_length=4096)]


PaymentMethod = Literal["manual", "escrow"]


class PaymentConfirmed(_Action, frozen=True, tag="paid"):
    """The seller confirms the payment: received off-platform ("manual") or the escrow funded
    (`reference` = funding txid). The escrow driver authors it through the seller's node."""

    method: PaymentMethod
    reference: Annotated[str, Meta(max_length=200)] = ""


class Shipped(_Action, frozen=True, tag="shipped"):
    carrier: Annotated[str, Meta(min_length=1, max_length=64)]
    tracking: Annotated[str, Meta(min_length=1, max_length=128)]


class Received(_Action, frozen=True, tag="received"):
    note: Note = ""


class Settled(_Action, frozen=True, tag="settled"):
    """The seller closes the order: the escrow released (`reference` = txid), or nothing was left
    to settle (manual payment)."""

    reference: Annotated[str, Meta(max_length=200)] = ""


class Cancelled(_Action, frozen=True, tag="cancelled"):
    reason: Note = ""


Action = Opened | AddressSent | PaymentConfirmed | Shipped | Received | Settled | Cancelled


class Step(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One entry of an order's log; `prev` is the hash of the entry before (zeros for the first)."""

    order: ObjectId
    index: Annotated[int, Meta(ge=0, lt=MAX_STEPS)]
    prev: Hash32
    author: Key32
    at_ms: Annotated[int, Meta(ge=0)]
    action: Action


# the wire form of a signed step: [payload, sig], payload the canonical msgpack of `Step`
SignedStep = SignedPayload


# -- review grants -----------------------------------------------------------------------------


def grant_payload(order_id: str, seller: bytes, rating_key: bytes) -> bytes:
    return GRANT_DOMAIN + _encoder.encode((order_id, seller, rating_key))


def sign_grant(seller: Identity, order_id: str, rating_key: bytes) -> bytes:
    """The seller's permission for `rating_key` to review order `order_id`."""
    return seller.sign(grant_payload(order_id, seller.public, rating_key))


def verify_grant(seller: bytes, order_id: str, rating_key: bytes, grant: bytes) -> bool:
    """True when `grant` is `seller`'s grant of `rating_key` for `order_id`; never raises."""
    return verify(seller, grant, grant_payload(order_id, seller, rating_key))
