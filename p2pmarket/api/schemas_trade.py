"""Wire schemas of the local HTTP API for trading: offers, orders, conversations, messages,
escrow and wallet. Same conventions as `schemas` (peer ids for nodes, hex for hashes).

States and roles are spelled out as literals here (the core does not import the node's
machines); the API's tests check they match `node.market`'s enums.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from p2pmarket.api.schemas import Hex32, Page, Paging, PeerId, Wire
from p2pmarket.wire.bodies import Amount, ObjectId, Price
from p2pmarket.wire.market import Note, PaymentMethod, Quantity

Role = Literal["buyer", "seller"]
OfferState = Literal["open", "countered", "accepting", "accepted", "declined", "withdrawn"]
OrderState = Literal["created", "awaiting_payment", "paid", "shipped", "received", "completed",
                     "cancelled"]

# -- offers (negotiations) -----------------------------------------------------------------------


class OfferFields(Wire, frozen=True):
    """An offer on someone's listing: `amount` is the total for `quantity` items, shipping
    included, in the listing's currency (minor units). An open offer of mine on the same
    listing is revised (countered) instead of opening a second one."""

    seller: PeerId
    listing_id: ObjectId
    amount: Amount
    quantity: Quantity = 1
    note: Note = ""


class CounterFields(Wire, frozen=True):
    amount: Amount
    quantity: Quantity = 1
    note: Note = ""


class ListingRefOut(Wire, frozen=True):
    """One version of a listing: id, seq and the hash of its content."""

    id: str
    seq: int
    hash: Hex32


class ProposalOut(Wire, frozen=True):
    id: str
    by: Role
    listing: ListingRefOut
    quantity: int
    price: Price
    note: str


class OfferOut(Wire, frozen=True):
    """A negotiation seen from this node (`role` is ours). Its id is also the id of the
    conversation that goes with it."""

    id: str
    role: Role
    state: OfferState
    seller: PeerId
    buyer: PeerId
    listing: ListingRefOut
    title: str
    proposals: list[ProposalOut]
    stale: bool  # the listing changed since the proposal we could accept
    order_id: str | None
    reason: str
    updated: float


OfferPage = Page[OfferOut]

# -- orders --------------------------------------------------------------------------------------


class Opened(Wire, frozen=True, tag="opened", tag_field="kind"):
    offer: str
    proposal: str
    listing: ListingRefOut
    title: str
    quantity: int
    price: Price
    buyer: PeerId
    seller: PeerId


class AddressGiven(Wire, frozen=True, tag="address", tag_field="kind"):
    """The buyer's address, sealed to the seller (the plaintext is in `OrderOut.address`)."""


class Paid(Wire, frozen=True, tag="paid", tag_field="kind"):
    method: PaymentMethod
    reference: str


class ShippedOut(Wire, frozen=True, tag="shipped", tag_field="kind"):
    carrier: str
    tracking: str


class ReceivedOut(Wire, frozen=True, tag="received", tag_field="kind"):
    note: str


class SettledOut(Wire, frozen=True, tag="settled", tag_field="kind"):
    reference: str


class CancelledOut(Wire, frozen=True, tag="cancelled", tag_field="kind"):
    reason: str


StepAction = Opened | AddressGiven | Paid | ShippedOut | ReceivedOut | SettledOut | CancelledOut


class StepOut(Wire, frozen=True):
    """One signed step of the order's hash-chained log."""

    index: int
    hash: Hex32
    by: Role
    at_ms: int
    action: StepAction


class OrderOut(Wire, frozen=True):
    id: str
    offer: str  # the negotiation (and conversation) it came from
    role: Role
    state: OrderState
    seller: PeerId
    buyer: PeerId
    listing: ListingRefOut
    title: str
    quantity: int
    price: Price
    payment: Paid | None
    shipment: ShippedOut | None
    address: str | None  # the buyer's copy, or unsealed by the seller
    can: list[str]  # the steps this node may take now (kinds of `StepAction`)
    log: list[StepOut]


OrderPage = Page[OrderOut]
StepPage = Page[StepOut]


class OrderQuery(Paging, frozen=True):
    state: OrderState | None = None
    role: Role | None = None


class AddressFields(Wire, frozen=True):
    address: Annotated[str, Meta(min_length=1, max_length=2000)]


class PaymentFields(Wire, frozen=True):
    """The seller confirms the payment arrived outside escrow (`manual`)."""

    method: Literal["manual"] = "manual"
    reference: Annotated[str, Meta(max_length=200)] = ""


class ShipFields(Wire, frozen=True):
    carrier: Annotated[str, Meta(min_length=1, max_length=64)]
    tracking: Annotated[str, Meta(min_length=1, max_length=128)]


class ConfirmFields(Wire, frozen=True):
    note: Note = ""


class SettleFields(Wire, frozen=True):
    reference: Annotated[str, Meta(max_length=200)] = ""


class ReviewFields(Wire, frozen=True):
    stars: Annotated[int, Meta(ge=1, le=5)]
    text: Annotated[str, Meta(max_length=2000)] = ""


# -- conversations and messages ------------------------------------------------------------------

DeliveryState = Literal["queued", "sent", "delivered", "failed"]


class ChatOut(Wire, frozen=True):
    sender: PeerId
    mine: bool
    text: str
    at: float  # unix seconds
    message_id: str | None = None  # mine: the outbox id
    delivery: DeliveryState | None = None  # mine: how far it got
    via: str = ""  # mine: "direct" or "mailbox"


class ConversationOut(Wire, frozen=True):
    """An offer's chat (`kind` "offer", same id as the offer) or a buyer's questions about a
    listing before any offer (`kind` "inquiry", no `offer_state`)."""

    id: str  # the offer (negotiation) id, or the inquiry's own id
    peer: PeerId
    listing_id: str
    title: str
    offer_state: OfferState | None  # None for an inquiry
    messages: int
    last: ChatOut | None
    kind: Literal["offer", "inquiry"] = "offer"


class ConversationFields(Wire, frozen=True):
    """A question to a seller about one of its listings, before any offer. Asking again about
    the same listing adds to the conversation already open."""

    seller: PeerId
    listing_id: ObjectId
    text: Annotated[str, Meta(min_length=1, max_length=4000)]


class ChatFields(Wire, frozen=True):
    text: Annotated[str, Meta(min_length=1, max_length=4000)]


class OutboxOut(Wire, frozen=True):
    """A message this node sent, with its delivery state."""

    id: str
    recipient: PeerId
    seq: int
    kind: str
    state: DeliveryState
    via: str
    attempts: int
    next_attempt: float
    created: float
    updated: float
    error: str


class InboxOut(Wire, frozen=True):
    id: str
    sender: PeerId
    kind: str
    received: float
    via: str


class OutboxQuery(Paging, frozen=True):
    state: DeliveryState | None = None
    peer: PeerId | None = None


class InboxQuery(Paging, frozen=True):
    peer: PeerId | None = None


# -- escrow and wallet ---------------------------------------------------------------------------


class EscrowOut(Wire, frozen=True):
    order_id: str
    state: str
    address: str | None = None
    amount_sat: int | None = None
    funding_txid: str | None = None
    deadline: float | None = None
    can: list[str] = []


class FundFields(Wire, frozen=True):
    fee_rate_sat_vb: Annotated[int, Meta(ge=1, le=10_000)] | None = None


class EvidenceFields(Wire, frozen=True):
    text: Annotated[str, Meta(min_length=1, max_length=4000)]


class DisputeFields(Wire, frozen=True):
    reason: Annotated[str, Meta(min_length=1, max_length=1000)]


class RulingFields(Wire, frozen=True):
    """The arbiter's split of the escrow: sats to each party (the arbiter's fee and the
    transaction fee come out of what is left)."""

    buyer_sat: Annotated[int, Meta(ge=0)]
    seller_sat: Annotated[int, Meta(ge=0)]
    note: Note = ""


class WalletOut(Wire, frozen=True):
    """The balance as of the last sync with the chain (`synced_at`, unix time; null: not yet
    synced since the node started), plus what the node itself sent since. `confirmed_sat` is
    spendable; `pending_sat` is unconfirmed, in or out. `sync_error`: why the last sync failed."""

    network: str
    confirmed_sat: int
    pending_sat: int
    synced_at: float | None = None
    sync_error: str | None = None


class AddressOut(Wire, frozen=True):
    address: str


# -- arbitration (this node as an arbiter) -------------------------------------------------------

Party = Literal["buyer", "seller", "arbiter"]


class ArbiterFields(Wire, frozen=True):
    """This node's advert in the DHT's arbiter directory; `description` carries languages and
    terms. The fee is `fee_percent_bp` basis points of the escrowed amount plus `fee_fixed_sat`."""

    name: Annotated[str, Meta(min_length=1, max_length=64)]
    description: Annotated[str, Meta(max_length=1000)] = ""
    fee_percent_bp: Annotated[int, Meta(ge=0, le=2000)] = 0  # the advert record's limits
    fee_fixed_sat: Annotated[int, Meta(ge=0, le=10_000_000)] = 0


class CaseStepOut(Wire, frozen=True):
    index: int
    by: Role
    at_ms: int
    kind: str  # opened, address, paid, shipped, received, settled, cancelled


class CaseFileOut(Wire, frozen=True):
    """One party's signed copy of the order log (verified on arrival) and the listing copy it
    sent; two copies agree up to where their `head`s differ."""

    party: Role
    steps: list[CaseStepOut]
    head: str
    listing_title: str
    listing_description: str
    listing_matches: bool  # the listing copy is the version the order was made on
    received: float


class StatementOut(Wire, frozen=True):
    by: Party
    kind: str  # dispute_opened or evidence
    text: str
    attachments: list[str]  # image sha256s (hex)


class RulingOut(Wire, frozen=True):
    buyer_sat: int
    seller_sat: int
    fee_sat: int
    note: str


class DisputeOut(Wire, frozen=True):
    """A dispute this node arbitrates: both parties' logs, every statement, the ruling."""

    order_id: str
    state: str  # the escrow state: disputed, then settled/refunded/... after the ruling
    amount_sat: int
    max_fee_sat: int  # the arbiter fee agreed in the escrow terms
    buyer: PeerId
    seller: PeerId
    opened_by: Party | None
    heard: list[Party]
    ruling_due: float | None
    can_rule: bool
    statements: list[StatementOut]
    cases: list[CaseFileOut]
    ruling: RulingOut | None
    # the miner fee is what a ruling's split leaves after my fee; the terms bound it
    network_fee_min_sat: int = 0
    network_fee_max_sat: int = 0
