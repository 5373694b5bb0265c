"""The engine under the trade service: received messages, our own steps, caches and events.

`TradeEngine` feeds the peer's messages to the sans-IO `Negotiation` and `Order` machines, signs
and sends our own steps, and keeps the machines, the database (`TradeStore`) and the listeners in
step. Received messages are handled synchronously inside the messenger's callback, right after
the messenger stored them, so nothing waits in memory. The public API is `trade.Trade`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Protocol, TypeVar

from dht.server import DhtNode
from node.p2p.messenger import MessageReceived, Messenger, MessengerEvent
from node.p2p.peers import PeerDirectory
from node.trade.errors import (
    IllegalEvent,
    LocalProtocolError,
    NotFound,
    RemoteProtocolError,
    TradeError,
    WrongRole,
)
from node.trade.inquiries import InquiryStore
from node.trade.negotiation import Negotiation, NegotiationState, check_fresh, check_terms
from node.trade.orders import Applied, Order, OrderState, Role
from node.trade.store import (
    ChatReceived,
    NegotiationChanged,
    OrderChanged,
    PeerViolation,
    TradeEvent,
    TradeStore,
)
from p2pmarket.identity import Identity
from p2pmarket.storage import Database, StorageError
from p2pmarket.wire.bodies import Listing, Price
from p2pmarket.wire.market import (
    Accept,
    Action,
    Cancelled,
    Counter,
    Decline,
    Inquiry,
    NegotiationBody,
    Offer,
    Opened,
    OrderStep,
    PaymentConfirmed,
    Settled,
    Withdraw,
    listing_ref,
    order_id_for,
    sign_grant,
)
from p2pmarket.wire.messages import Chat, Message, MessageBody, MessageError
from p2pmarket.wire.order_steps import Entry
from p2pmarket.wire.records import Record, RecordError

log = logging.getLogger(__name__)

B, S = Role.BUYER, Role.SELLER
N = NegotiationState
ListingSource = Callable[[str], Record[Listing] | None]
SaleHook = Callable[[str, int], object]  # (listing id, quantity); may return an awaitable
_T = TypeVar("_T")


class TradeNode(Protocol):
    """What the service needs of a node (`node.app.Node` is one)."""

    @property
    def identity(self) -> Identity: ...
    @property
    def db(self) -> Database: ...
    @property
    def messenger(self) -> Messenger: ...
    @property
    def peers(self) -> PeerDirectory: ...
    @property
    def dht(self) -> DhtNode | None: ...


def new_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(15)).decode()


class TradeEngine:
    """`own_listing(listing_id)` gives the current record of one of our listings (the listings
    service); without it, the records passed to `Trade.listing_updated` are used. `on_sold` /
    `on_unsold` tell the listings service about stock (see `Trade.run`)."""

    def __init__(self, node: TradeNode, *, own_listing: ListingSource | None = None,
                 on_sold: SaleHook | None = None, on_unsold: SaleHook | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.node, self.identity = node, node.identity
        self.store = TradeStore(node.db)
        self.inquiries = InquiryStore(self.store)
        self.own_listing, self.on_sold, self.on_unsold = own_listing, on_sold, on_unsold
        self.clock = clock
        self.listeners: list[Callable[[TradeEvent], None]] = []
        self.violations: Tally[bytes] = Tally()
        self._negotiations: dict[str, Negotiation] = {}
        self._orders: dict[str, Order] = {}
        self._listings: dict[tuple[bytes, str], Record[Listing]] = {}
        self._wake = asyncio.Event()
        node.messenger.listeners.append(self._on_messenger_event)

    # -- receiving -----------------------------------------------------------------------------

    def _on_messenger_event(self, event: MessengerEvent) -> None:
        if not isinstance(event, MessageReceived):
            return
        message = event.message
        try:
            self._dispatch(message)
        except RemoteProtocolError as exc:
            self.violations[message.sender] += 1
            log.info("dropped %s from %s: %s", message.body.__class__.__name__,
                     message.sender.hex()[:16], exc)
            self._emit(PeerViolation(peer=message.sender, reason=str(exc)))
        except (TradeError, StorageError, RecordError) as exc:
            log.warning("could not handle %s %s: %s", type(message.body).__name__, message.id,
                        exc)
        except Exception:  # a bug here must not stop the messenger's receive loop
            log.exception("trade failed on message %s", message.id)

    def _dispatch(self, message: Message) -> None:
        body, sender = message.body, message.sender
        match body:
            case Offer():
                self._receive_offer(sender, body)
            case Counter() | Accept() | Decline() | Withdraw():
                self._receive_negotiation(sender, body)
            case OrderStep():
                self._receive_step(sender, body)
            case Inquiry():
                if self.inquiries.admit(sender, body, self._current_own(body.listing),
                                        self.clock()):
                    self._emit(ChatReceived(conversation=body.conversation, sender=sender,
                                            text=body.text))
            case Chat():  # only from the other side of an offer's or an inquiry's conversation
                if (self.store.has_negotiation_with(body.conversation, sender)
                        or self.inquiries.has_with(body.conversation, sender)):
                    self.inquiries.add_line(body.conversation, sender, body.text, self.clock(),
                                            ours=False)
                    self._emit(ChatReceived(conversation=body.conversation, sender=sender,
                                            text=body.text))

    def _receive_offer(self, buyer: bytes, offer: Offer) -> None:
        if (self.store.has_negotiation(offer.negotiation)
                or self.inquiries.get(offer.negotiation) is not None):
            raise RemoteProtocolError(f"negotiation id {offer.negotiation} is already used")
        current = self._current_own(offer.listing.id)
        if current is None:  # not ours (or gone): say so, keep nothing
            self._send(buyer, Decline(negotiation=offer.negotiation,
                                      reason=f"no listing {offer.listing.id} here"))
            return
        offered_on = None  # the version the offer names: an arbiter may need it later
        if listing_ref(current) == offer.listing:
            self._remote_terms(current.body, offer.quantity, offer.price)
            offered_on = current.raw
        neg = Negotiation(offer, seller=self.identity.public, buyer=buyer, our_role=S)
        with self.store.db.transaction():
            self.store.add_negotiation(neg, offered_on, self.clock())
            self.store.add_event(neg, offer, "received", self.clock())
        self._negotiations[neg.id] = neg
        self._emit_negotiation(neg, offer, B)

    def _receive_negotiation(self, sender: bytes, body: NegotiationBody) -> None:
        try:
            neg = self._negotiation(body.negotiation)
        except NotFound as exc:
            raise RemoteProtocolError(str(exc)) from exc
        if sender != (neg.buyer if neg.our_role is S else neg.seller):
            raise RemoteProtocolError("message from a peer outside the negotiation")
        order: Order | None = None
        if isinstance(body, Counter):
            current = (self._current_own(neg.listing_id) if neg.our_role is S
                       else self._known(neg.seller, neg.listing_id))
            if current is not None and listing_ref(current) == body.listing:
                self._remote_terms(current.body, body.quantity, body.price)
        if isinstance(body, Accept) and body.step is not None and neg.our_role is B:
            order = Order.from_genesis(body.step, self.identity.public)
            _check_genesis(neg, order.terms, body)
        ended_by_us = neg.state in (N.DECLINED, N.WITHDRAWN)
        try:
            if not neg.receive(body):
                log.debug("negotiation %s: %s crossed ours; dropped", neg.id, type(body))
                return
        except RemoteProtocolError:
            self._negotiations.pop(neg.id, None)  # reload: the machine may be half-changed
            raise
        try:
            with self.store.db.transaction():
                self.store.add_event(neg, body, "received", self.clock())
                if order is not None:
                    self.store.add_order(order, self.clock())
        except BaseException:
            self._negotiations.pop(neg.id, None)
            raise
        self._emit_negotiation(neg, body, neg.our_role.other)
        if order is not None:
            self._orders[order.id] = order
            self._emit_order(order, order.log.entries[0])
            if ended_by_us:  # the seller accepted while our withdraw/decline was on its way
                self._act(order, Cancelled(reason=f"the buyer had {neg.state} the negotiation"))
        elif isinstance(body, Accept) and neg.our_role is S and neg.state is N.ACCEPTING:
            self._confirm(neg)

    def _confirm(self, neg: Negotiation) -> None:
        """The buyer accepted our proposal: make the order, or say why not."""
        assert neg.accepted is not None
        proposal = neg.proposal(neg.accepted)
        assert proposal is not None
        current = self._current_own(neg.listing_id)
        try:
            check_fresh(proposal.listing, current)
            assert current is not None
            check_terms(current.body, proposal.quantity, proposal.price)
        except LocalProtocolError as exc:
            self._send_negotiation(neg, Decline(negotiation=neg.id, reason=str(exc)[:1000]))
            return
        self._open_order(neg, proposal.id, current)

    def _resume(self) -> None:
        """Answer what arrived just before a crash: accepts to confirm, receipts to settle."""
        for negotiation_id in self.store.negotiations_in("seller", N.ACCEPTING):
            self._guarded(self._confirm, self._negotiation(negotiation_id))
        for order_id in self.store.orders_in("seller", OrderState.RECEIVED):
            self._guarded(self._settle_manual, self._order(order_id))

    def _guarded(self, fn: Callable[[_T], None], arg: _T) -> None:
        try:
            fn(arg)
        except (TradeError, StorageError) as exc:
            log.warning("could not resume %s: %s", getattr(arg, "id", arg), exc)

    def _receive_step(self, sender: bytes, body: OrderStep) -> None:
        try:
            order = self._order(body.order)
        except NotFound as exc:
            raise RemoteProtocolError(str(exc)) from exc
        if sender != (order.buyer if order.our_role is S else order.seller):
            raise RemoteProtocolError("order step from a peer outside the order")
        before, length = order.state, len(order.log)
        try:
            outcome = order.receive(body.step)
        except RemoteProtocolError:
            self._orders.pop(order.id, None)
            raise
        if not isinstance(outcome, Applied):
            log.debug("order %s: step ignored (%s)", order.id, outcome.reason)
            return
        try:
            self.store.save_steps(order, min(length, outcome.entries[0].step.index), before,
                                  self.clock())
        except BaseException:
            self._orders.pop(order.id, None)
            raise
        dropped = tuple(e.hash.hex() for e in outcome.dropped)
        for entry in outcome.entries:
            self._emit_order(order, entry, dropped)
        self._wake.set()
        self._settle_manual(order)

    def _settle_manual(self, order: Order) -> None:
        """With payment outside escrow nothing is left to release once the buyer has the goods."""
        payment = order.last(PaymentConfirmed)
        if (order.our_role is S and order.state is OrderState.RECEIVED and payment is not None
                and isinstance(payment.action, PaymentConfirmed)
                and payment.action.method == "manual"):
            self._act(order, Settled(reference="paid outside escrow"))

    def _remote_terms(self, listing: Listing, quantity: int, price: Price) -> None:
        # a wrong currency is nonsense; quantity and stock can race, so `accept` judges them
        if price.currency != listing.price.currency:
            raise RemoteProtocolError(f"proposal in {price.currency} on a listing in "
                                      f"{listing.price.currency}")

    # -- acting --------------------------------------------------------------------------------

    def _open_order(self, neg: Negotiation, proposal_id: str, listing: Record[Listing]) -> None:
        """As the seller: sign the order's first step (with the review grant) and send it."""
        proposal = neg.proposal(proposal_id)
        assert proposal is not None
        order_id = order_id_for(neg.id, proposal_id)
        terms = Opened(negotiation=neg.id, proposal=proposal_id, listing=proposal.listing,
                       title=listing.body.title, quantity=proposal.quantity,
                       price=proposal.price, buyer=neg.buyer, seller=self.identity.public,
                       rating_key=neg.rating_key,
                       grant=sign_grant(self.identity, order_id, neg.rating_key))
        order = Order.create(self.identity, terms, self._ms())
        self._send_negotiation(neg, Accept(negotiation=neg.id, proposal=proposal_id,
                                           step=order.log.entries[0].raw), order=order)
        self._orders[order.id] = order
        self._emit_order(order, order.log.entries[0])
        self._wake.set()

    def _send_negotiation(self, neg: Negotiation, body: NegotiationBody,
                          order: Order | None = None) -> None:
        neg.send(body)  # raises before anything is stored or sent
        try:
            with self.store.db.transaction():
                self._record(neg, body)
                if order is not None:
                    self.store.add_order(order, self.clock())
        except BaseException:
            self._negotiations.pop(neg.id, None)
            raise
        self._emit_negotiation(neg, body, neg.our_role)

    def _record(self, neg: Negotiation, body: NegotiationBody) -> None:
        """Store and send our message (inside the caller's transaction)."""
        self.store.add_event(neg, body, "sent", self.clock())
        self._send(neg.seller if neg.our_role is B else neg.buyer, body)

    def _emit_negotiation(self, neg: Negotiation, body: NegotiationBody, by: Role) -> None:
        self._emit(NegotiationChanged(negotiation=neg.id, state=neg.state,
                                      kind=str(body.__struct_config__.tag), by=by))

    def _precheck(self, order: Order, kind: type[Action]) -> None:
        if kind not in order.allowed(order.our_role):
            if kind in order.allowed(order.our_role.other):
                raise WrongRole(f"only the {order.our_role.other} can do that now")
            raise IllegalEvent(f"not possible in an order that is {order.state}")

    def _act(self, order: Order, action: Action, *, address: str | None = None) -> Entry:
        before = order.state
        entry = order.send(self.identity, action, self._ms())
        try:
            with self.store.db.transaction():
                self.store.save_steps(order, entry.step.index, before, self.clock())
                if address is not None:
                    self.store.set_address(order.id, address)
                self._send(order.buyer if order.our_role is S else order.seller,
                           OrderStep(order=order.id, step=entry.raw))
        except BaseException:
            self._orders.pop(order.id, None)
            raise
        self._emit_order(order, entry)
        self._wake.set()
        return entry

    def _send(self, peer: bytes, body: MessageBody) -> None:
        try:
            self.node.messenger.send(peer, body)
        except MessageError as exc:  # a field over its limit (a note, an address)
            raise LocalProtocolError(str(exc)) from exc

    # -- plumbing ------------------------------------------------------------------------------

    def _negotiation(self, negotiation_id: str) -> Negotiation:
        neg = self._negotiations.get(negotiation_id)
        if neg is None:
            neg = self.store.load_negotiation(negotiation_id)
            self._negotiations[negotiation_id] = neg
        return neg

    def _order(self, order_id: str) -> Order:
        order = self._orders.get(order_id)
        if order is None:
            order = self.store.load_order(order_id)
            self._orders[order_id] = order
        return order

    def listing_updated(self, record: Record[Listing]) -> None:
        """Tell the service about a listing version (ours or one seen); newer seqs win."""
        key = (record.publisher, record.body.id)
        known = self._listings.get(key)
        if known is None or record.seq > known.seq:
            self._listings[key] = record

    def _current_own(self, listing_id: str) -> Record[Listing] | None:
        if self.own_listing is not None:
            return self.own_listing(listing_id)
        return self._listings.get((self.identity.public, listing_id))

    def _known(self, seller: bytes, listing_id: str) -> Record[Listing] | None:
        stored = self.store.listing(seller, listing_id)
        if stored is not None:
            self.listing_updated(stored)
        return self._listings.get((seller, listing_id))

    def _ms(self) -> int:
        return int(self.clock() * 1000)

    def _emit_order(self, order: Order, entry: Entry, dropped: tuple[str, ...] = ()) -> None:
        role = order.role_of(entry.author)
        self._emit(OrderChanged(order=order.id, state=order.state, by=role or "",
                                kind=str(entry.action.__struct_config__.tag),
                                superseded=dropped))

    def _emit(self, event: TradeEvent) -> None:
        for listener in list(self.listeners):
            listener(event)


def _check_genesis(neg: Negotiation, terms: Opened, accept: Accept) -> None:
    """The seller's opening step must restate the accepted proposal exactly."""
    proposal = neg.proposal(accept.proposal)
    if proposal is None or (terms.negotiation, terms.proposal) != (neg.id, accept.proposal):
        raise RemoteProtocolError("the order does not open on the accepted proposal")
    if (terms.listing, terms.quantity, terms.price, terms.rating_key, terms.seller) != (
            proposal.listing, proposal.quantity, proposal.price, neg.rating_key, neg.seller):
        raise RemoteProtocolError("the order's terms differ from the accepted proposal")
