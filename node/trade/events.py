"""What the trade layer tells its listeners (the API's event stream, the escrow driver): one frozen
struct per kind of change, and `Listeners`, which the service and the inbound handler emit to.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from node.trade.negotiation import Negotiation, NegotiationState
from node.trade.orders import Order, OrderState, Role
from p2pmarket.wire.market import NegotiationBody
from p2pmarket.wire.order_steps import Entry


class NegotiationChanged(msgspec.Struct, frozen=True, tag="negotiation"):
    negotiation: str
    state: NegotiationState
    kind: str  # offer, counter, accept, decline, withdraw
    by: Role


class OrderChanged(msgspec.Struct, frozen=True, tag="order"):
    order: str
    state: OrderState
    kind: str  # opened, address, paid, shipped, received, settled, cancelled
    by: str
    superseded: tuple[str, ...] = ()  # hashes of our steps that lost a crossing


class ChatReceived(msgspec.Struct, frozen=True, tag="chat"):
    conversation: str
    sender: bytes
    text: str


class ReviewPublished(msgspec.Struct, frozen=True, tag="review"):
    order: str
    seller: bytes
    stars: int


class PeerViolation(msgspec.Struct, frozen=True, tag="violation"):
    peer: bytes
    reason: str


TradeEvent = NegotiationChanged | OrderChanged | ChatReceived | ReviewPublished | PeerViolation
Listener = Callable[[TradeEvent], None]
Emit = Callable[[TradeEvent], None]


def negotiation_changed(neg: Negotiation, body: NegotiationBody, by: Role) -> NegotiationChanged:
    """`neg` after `body` (sent by `by`) moved it."""
    return NegotiationChanged(negotiation=neg.id, state=neg.state,
                              kind=str(body.__struct_config__.tag), by=by)


def order_changed(order: Order, entry: Entry, dropped: tuple[str, ...] = ()) -> OrderChanged:
    """`order` after `entry` was appended (`dropped`: our steps it superseded)."""
    role = order.role_of(entry.author)
    return OrderChanged(order=order.id, state=order.state, by=role or "",
                        kind=str(entry.action.__struct_config__.tag), superseded=dropped)


class Listeners:
    """Who hears of trade changes. `listeners` is the list callers add themselves to (and remove
    themselves from); `emit` calls each in turn, on a copy, so a listener may remove itself."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def emit(self, event: TradeEvent) -> None:
        for listener in list(self.listeners):
            listener(event)
