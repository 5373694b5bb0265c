"""Wire schemas of the local HTTP API for trading: offers, orders, conversations, messages,
escrow and wallet. Same conventions as `client_schemas` (peer ids for nodes, hex for hashes).

States and roles are spelled out as literals here (the core does not import the node's
machines); the API's tests check they match `node.market`'s enums.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from p2pmarket.bodies import Amount, ObjectId, Price
from p2pmarket.client_schemas import Hex32, Page, Paging, PeerId, Wire
from p2pmarket.market_messages import Note, PaymentMethod, Quantity

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
    id: str  # the offer (negotiation) id
    peer: PeerId
    title: str
    offer_state: OfferState
    messages: int
    last: ChatOut | None


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
    network: str
    confirmed_sat: int
    pending_sat: int


class AddressOut(Wire, frozen=True):
    address: str
