"""Wire schemas of the server-sent events at `/api/v1/events`: one data struct per event type.

Each SSE message has `id:` (an integer that only grows, also across restarts), `event:` (a key of
`EVENT_TYPES`) and `data:` (the JSON of that type's struct).
"""

from __future__ import annotations

from p2pmarket.api.schemas import PeerId, Wire
from p2pmarket.api.schemas_trade import OfferState, OrderState, Role
from p2pmarket.wire.bodies import Price


class MessageReceivedEvent(Wire, frozen=True):
    id: str
    sender: PeerId
    kind: str  # chat, offer, counter, accept, decline, withdraw, order-step, ...
    via: str  # direct or mailbox
    conversation: str | None = None


class MessageDeliveredEvent(Wire, frozen=True):
    id: str
    recipient: PeerId


class MessageFailedEvent(Wire, frozen=True):
    id: str
    reason: str


class OfferChangedEvent(Wire, frozen=True):
    offer: str
    state: OfferState
    kind: str  # offer, counter, accept, decline, withdraw
    by: Role


class OrderChangedEvent(Wire, frozen=True):
    order: str
    state: OrderState
    kind: str  # opened, address, paid, shipped, received, settled, cancelled
    by: str
    superseded: list[str] = []  # hashes of our steps that lost a crossing


class ChatReceivedEvent(Wire, frozen=True):
    conversation: str
    sender: PeerId
    text: str


class ReviewPublishedEvent(Wire, frozen=True):
    order: str
    seller: PeerId
    stars: int


class PeerEvent(Wire, frozen=True):
    peer: PeerId


class PeerViolationEvent(Wire, frozen=True):
    peer: PeerId
    reason: str


class ListingFoundEvent(Wire, frozen=True):
    """A search asked the network and found this listing (new, or a newer version)."""

    publisher: PeerId
    listing_id: str
    seq: int
    title: str
    price: Price
    query: str


class EscrowEvent(Wire, frozen=True):
    order: str
    state: str
    step: str


class ResetEvent(Wire, frozen=True):
    """`Last-Event-ID` was older than the buffer (or from another run): events were missed,
    so re-read the state you show."""

    oldest: int


class StoppingEvent(Wire, frozen=True):
    reason: str


EVENT_TYPES: dict[str, type[Wire]] = {
    "message.received": MessageReceivedEvent,
    "message.delivered": MessageDeliveredEvent,
    "message.failed": MessageFailedEvent,
    "offer.changed": OfferChangedEvent,
    "order.changed": OrderChangedEvent,
    "chat.received": ChatReceivedEvent,
    "review.published": ReviewPublishedEvent,
    "peer.connected": PeerEvent,
    "peer.disconnected": PeerEvent,
    "peer.violation": PeerViolationEvent,
    "listing.found": ListingFoundEvent,
    "escrow.changed": EscrowEvent,
    "events.reset": ResetEvent,
    "node.stopping": StoppingEvent,
}
