"""The event hub behind `/api/v1/events`: numbered events, a bounded replay buffer, subscribers.

Ids start at the start time in microseconds and grow by one per event, so they only grow, also
across restarts. A subscriber that resumes with `Last-Event-ID` gets what it missed from the
buffer, or one `events.reset` when the buffer no longer reaches back that far. A subscriber
that falls `queue_limit` events behind is dropped (its stream ends; it resumes by id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from node.api.convert import OFFER_STATES, ORDER_STATES, ROLES
from node.api.escrow_view import escrow_event
from node.escrow.book import EscrowUpdate
from node.p2p.messenger import MessageDelivered, MessageFailed, MessageReceived, MessengerEvent
from node.trade.events import (
    ChatReceived,
    NegotiationChanged,
    OrderChanged,
    PeerViolation,
    ReviewPublished,
    TradeEvent,
)
from p2pmarket.api import events as ev
from p2pmarket.identity import peer_id_from_public

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

PEER_POLL = 2.0


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    data: bytes  # JSON


@dataclass(eq=False, slots=True)
class Subscription:
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    dropped: bool = False


class EventHub:
    def __init__(self, *, capacity: int = 2000, queue_limit: int = 5000,
                 clock: float | None = None) -> None:
        self._buffer: deque[Event] = deque(maxlen=capacity)
        self._next = int((time.time() if clock is None else clock) * 1_000_000)
        self._subs: set[Subscription] = set()
        self._queue_limit = queue_limit
        self._encoder = msgspec.json.Encoder()

    @property
    def last_id(self) -> int:
        return self._next - 1

    def publish(self, kind: str, data: msgspec.Struct) -> Event:
        event = Event(self._next, kind, self._encoder.encode(data))
        self._next += 1
        self._buffer.append(event)
        for sub in list(self._subs):
            if sub.queue.qsize() >= self._queue_limit:
                log.warning("an event subscriber fell %d events behind; dropping it",
                            self._queue_limit)
                self._drop(sub)
            else:
                sub.queue.put_nowait(event)
        return event

    def subscribe(self, last_id: int | None = None) -> tuple[Subscription, list[Event]]:
        """A new subscription and the events to send first (what `last_id` missed)."""
        sub = Subscription()
        self._subs.add(sub)
        if last_id is None or last_id == self.last_id:
            return sub, []
        oldest = self._buffer[0].id if self._buffer else self._next
        if oldest - 1 <= last_id < self.last_id:
            return sub, [e for e in self._buffer if e.id > last_id]
        reset = ev.ResetEvent(oldest=oldest)
        return sub, [Event(self.last_id, "events.reset", self._encoder.encode(reset))]

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for sub in list(self._subs):
            self._drop(sub)

    def _drop(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        sub.dropped = True
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)

    # -- node listeners ------------------------------------------------------------------------

    def attach(self, node: Node) -> None:
        node.messenger.listeners.append(self.on_messenger)
        node.trade.listeners.append(self.on_trade)
        if node.escrow is not None:
            node.escrow.listeners.append(self.on_escrow)

    def on_escrow(self, update: EscrowUpdate) -> None:
        event = escrow_event(update)
        if event is not None:
            self.publish("escrow.changed", event)

    def detach(self, node: Node) -> None:
        for listeners, fn in ((node.messenger.listeners, self.on_messenger),
                              (node.trade.listeners, self.on_trade)):
            if fn in listeners:
                listeners.remove(fn)  # type: ignore[arg-type]
        if node.escrow is not None and self.on_escrow in node.escrow.listeners:
            node.escrow.listeners.remove(self.on_escrow)

    def on_messenger(self, event: MessengerEvent) -> None:
        match event:
            case MessageReceived(message, via):
                body = message.body
                conversation = getattr(body, "conversation", None) or getattr(
                    body, "negotiation", None)
                self.publish("message.received", ev.MessageReceivedEvent(
                    id=message.id, sender=peer_id_from_public(message.sender),
                    kind=str(body.__struct_config__.tag), via=via,
                    conversation=conversation if isinstance(conversation, str) else None))
            case MessageDelivered(msg_id, recipient):
                self.publish("message.delivered", ev.MessageDeliveredEvent(
                    id=msg_id, recipient=peer_id_from_public(recipient)))
            case MessageFailed(msg_id, reason):
                self.publish("message.failed", ev.MessageFailedEvent(id=msg_id, reason=reason))

    def on_trade(self, event: TradeEvent) -> None:
        match event:
            case NegotiationChanged():
                self.publish("offer.changed", ev.OfferChangedEvent(
                    offer=event.negotiation, state=OFFER_STATES[event.state], kind=event.kind,
                    by=ROLES[event.by]))
            case OrderChanged():
                self.publish("order.changed", ev.OrderChangedEvent(
                    order=event.order, state=ORDER_STATES[event.state], kind=event.kind,
                    by=event.by,
                    superseded=list(event.superseded)))
            case ChatReceived():
                self.publish("chat.received", ev.ChatReceivedEvent(
                    conversation=event.conversation, sender=peer_id_from_public(event.sender),
                    text=event.text))
            case ReviewPublished():
                self.publish("review.published", ev.ReviewPublishedEvent(
                    order=event.order, seller=peer_id_from_public(event.seller),
                    stars=event.stars))
            case PeerViolation():
                self.publish("peer.violation", ev.PeerViolationEvent(
                    peer=peer_id_from_public(event.peer), reason=event.reason))

    async def watch_peers(self, node: Node, every: float = PEER_POLL) -> None:
        """Publish `peer.connected` / `peer.disconnected` by polling the host (a set diff)."""
        known: set[str] = set()
        while True:
            now = set(node.host.connected_peers())
            for peer in sorted(now - known):
                self.publish("peer.connected", ev.PeerEvent(peer=peer))
            for peer in sorted(known - now):
                self.publish("peer.disconnected", ev.PeerEvent(peer=peer))
            known = now
            await asyncio.sleep(every)
