"""The inbound handler: what peers send us in a trade (offers, negotiation messages, order steps,
inquiries, chats), checked against the machines, stored, announced and answered.

Received messages are handled synchronously inside the messenger's callback, right after the
messenger stored them, so nothing waits in memory. A peer that breaks the protocol has its
message dropped, counted in `violations` and reported (`PeerViolation`). The trade service
(`node.trade.service.Trade`) builds one and registers `on_messenger_event` with the messenger.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable
from typing import TypeVar

from node.p2p.messenger import MessageReceived, MessengerEvent
from node.trade.errors import LocalProtocolError, NotFound, RemoteProtocolError, TradeError
from node.trade.events import ChatReceived, Emit, PeerViolation, negotiation_changed, order_changed
from node.trade.inquiries import InquiryStore
from node.trade.negotiation import Negotiation, NegotiationState, check_fresh, check_terms
from node.trade.orders import Applied, Order, OrderState, Role
from node.trade.outbound import Clock, KnownListings, Machines, Outbound
from node.trade.store import TradeStore
from p2pmarket.storage import StorageError
from p2pmarket.wire.bodies import Listing, Price
from p2pmarket.wire.market import (
    Accept,
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
)
from p2pmarket.wire.messages import Chat, Message
from p2pmarket.wire.records import RecordError

log = logging.getLogger(__name__)

B, S = Role.BUYER, Role.SELLER
N = NegotiationState
_T = TypeVar("_T")


class Inbound:
    """Handles one node's incoming trade messages. `me` is the node's public key; `machines`,
    `listings` and `outbound` are shared with the service, which acts through the same
    `outbound` when it answers (a decline, an order's first step, a cancellation)."""

    def __init__(self, me: bytes, store: TradeStore, inquiries: InquiryStore,
                 machines: Machines, listings: KnownListings, outbound: Outbound, *,
                 emit: Emit, clock: Clock) -> None:
        self.me, self.store, self.inquiries = me, store, inquiries
        self.machines, self.listings, self.outbound = machines, listings, outbound
        self.emit, self.clock = emit, clock
        self.violations: Tally[bytes] = Tally()

    def on_messenger_event(self, event: MessengerEvent) -> None:
        if isinstance(event, MessageReceived):
            self.handle(event.message)

    def handle(self, message: Message) -> None:
        """Take one received message; never raises (a failure is logged, a violation counted)."""
        try:
            self._dispatch(message)
        except RemoteProtocolError as exc:
            self.violations[message.sender] += 1
            log.info("dropped %s from %s: %s", message.body.__class__.__name__,
                     message.sender.hex()[:16], exc)
            self.emit(PeerViolation(peer=message.sender, reason=str(exc)))
        except StorageError:
            raise  # ours (a full disk...): the messenger rolls the message back and does not ack
        except (TradeError, RecordError) as exc:
            log.warning("could not handle %s %s: %s", type(message.body).__name__, message.id,
                        exc)
        except Exception:  # a bug here must not stop the messenger's receive loop
            log.exception("trade failed on message %s", message.id)

    def resume(self) -> None:
        """Answer what arrived just before a crash: accepts to confirm, receipts to settle."""
        for negotiation_id in self.store.negotiations_in("seller", N.ACCEPTING):
            self._guarded(self._confirm, self.machines.negotiation(negotiation_id))
        for order_id in self.store.orders_in("seller", OrderState.RECEIVED):
            self._guarded(self._settle_manual, self.machines.order(order_id))

    def _guarded(self, fn: Callable[[_T], None], arg: _T) -> None:
        try:
            fn(arg)
        except (TradeError, StorageError) as exc:
            log.warning("could not resume %s: %s", getattr(arg, "id", arg), exc)

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
                if self.inquiries.admit(sender, body, self.listings.own(body.listing),
                                        self.clock()):
                    self.emit(ChatReceived(conversation=body.conversation, sender=sender,
                                           text=body.text))
            case Chat():  # only from the other side of an offer's or an inquiry's conversation
                if (self.store.has_negotiation_with(body.conversation, sender)
                        or self.inquiries.has_with(body.conversation, sender)):
                    self.inquiries.add_line(body.conversation, sender, body.text, self.clock(),
                                            ours=False)
                    self.emit(ChatReceived(conversation=body.conversation, sender=sender,
                                           text=body.text))

    def _receive_offer(self, buyer: bytes, offer: Offer) -> None:
        if (self.store.has_negotiation(offer.negotiation)
                or self.inquiries.get(offer.negotiation) is not None):
            raise RemoteProtocolError(f"negotiation id {offer.negotiation} is already used")
        current = self.listings.own(offer.listing.id)
        if current is None:  # not ours (or gone): say so, keep nothing
            self.outbound.send(buyer, Decline(negotiation=offer.negotiation,
                                              reason=f"no listing {offer.listing.id} here"))
            return
        offered_on = None  # the version the offer names: an arbiter may need it later
        if listing_ref(current) == offer.listing:
            _remote_terms(current.body, offer.quantity, offer.price)
            offered_on = current.raw
        neg = Negotiation(offer, seller=self.me, buyer=buyer, our_role=S)
        with self.store.db.transaction():
            self.store.add_negotiation(neg, offered_on, self.clock())
            self.store.add_event(neg, offer, "received", self.clock())
        self.machines.keep_negotiation(neg)
        self.emit(negotiation_changed(neg, offer, B))

    def _receive_negotiation(self, sender: bytes, body: NegotiationBody) -> None:
        try:
            neg = self.machines.negotiation(body.negotiation)
        except NotFound as exc:
            raise RemoteProtocolError(str(exc)) from exc
        if sender != (neg.buyer if neg.our_role is S else neg.seller):
            raise RemoteProtocolError("message from a peer outside the negotiation")
        order: Order | None = None
        if isinstance(body, Counter):
            current = (self.listings.own(neg.listing_id) if neg.our_role is S
                       else self.listings.known(neg.seller, neg.listing_id))
            if current is not None and listing_ref(current) == body.listing:
                _remote_terms(current.body, body.quantity, body.price)
        if isinstance(body, Accept) and body.step is not None and neg.our_role is B:
            order = Order.from_genesis(body.step, self.me)
            _check_genesis(neg, order.terms, body)
        ended_by_us = neg.state in (N.DECLINED, N.WITHDRAWN)
        try:
            if not neg.receive(body):
                log.debug("negotiation %s: %s crossed ours; dropped", neg.id, type(body))
                return
        except RemoteProtocolError:
            self.machines.forget_negotiation(neg.id)  # reload: it may be half-changed
            raise
        try:
            with self.store.db.transaction():
                self.store.add_event(neg, body, "received", self.clock())
                if order is not None:
                    self.store.add_order(order, self.clock())
        except BaseException:
            self.machines.forget_negotiation(neg.id)
            raise
        self.emit(negotiation_changed(neg, body, neg.our_role.other))
        if order is not None:
            self.machines.keep_order(order)
            self.emit(order_changed(order, order.log.entries[0]))
            if ended_by_us:  # the seller accepted while our withdraw/decline was on its way
                self.outbound.act(order, Cancelled(
                    reason=f"the buyer had {neg.state} the negotiation"))
        elif isinstance(body, Accept) and neg.our_role is S and neg.state is N.ACCEPTING:
            self._confirm(neg)

    def _confirm(self, neg: Negotiation) -> None:
        """The buyer accepted our proposal: make the order, or say why not."""
        assert neg.accepted is not None
        proposal = neg.proposal(neg.accepted)
        assert proposal is not None
        current = self.listings.own(neg.listing_id)
        try:
            check_fresh(proposal.listing, current)
            assert current is not None
            check_terms(current.body, proposal.quantity, proposal.price)
        except LocalProtocolError as exc:
            self.outbound.negotiate(neg, Decline(negotiation=neg.id, reason=str(exc)[:1000]))
            return
        self.outbound.open_order(neg, proposal.id, current)

    def _receive_step(self, sender: bytes, body: OrderStep) -> None:
        try:
            order = self.machines.order(body.order)
        except NotFound as exc:
            raise RemoteProtocolError(str(exc)) from exc
        if sender != (order.buyer if order.our_role is S else order.seller):
            raise RemoteProtocolError("order step from a peer outside the order")
        before, length = order.state, len(order.log)
        try:
            outcome = order.receive(body.step)
        except RemoteProtocolError:
            self.machines.forget_order(order.id)
            raise
        if not isinstance(outcome, Applied):
            log.debug("order %s: step ignored (%s)", order.id, outcome.reason)
            return
        try:
            self.store.save_steps(order, min(length, outcome.entries[0].step.index), before,
                                  self.clock())
        except BaseException:
            self.machines.forget_order(order.id)
            raise
        dropped = tuple(e.hash.hex() for e in outcome.dropped)
        for entry in outcome.entries:
            self.emit(order_changed(order, entry, dropped))
        self._settle_manual(order)

    def _settle_manual(self, order: Order) -> None:
        """With payment outside escrow nothing is left to release once the buyer has the goods."""
        payment = order.last(PaymentConfirmed)
        if (order.our_role is S and order.state is OrderState.RECEIVED and payment is not None
                and isinstance(payment.action, PaymentConfirmed)
                and payment.action.method == "manual"):
            self.outbound.act(order, Settled(reference="paid outside escrow"))


def _remote_terms(listing: Listing, quantity: int, price: Price) -> None:
    # a wrong currency is nonsense; quantity and stock can race, so `accept` judges them
    if price.currency != listing.price.currency:
        raise RemoteProtocolError(f"proposal in {price.currency} on a listing in "
                                  f"{listing.price.currency}")


def _check_genesis(neg: Negotiation, terms: Opened, accept: Accept) -> None:
    """The seller's opening step must restate the accepted proposal exactly."""
    proposal = neg.proposal(accept.proposal)
    if proposal is None or (terms.negotiation, terms.proposal) != (neg.id, accept.proposal):
        raise RemoteProtocolError("the order does not open on the accepted proposal")
    if (terms.listing, terms.quantity, terms.price, terms.rating_key, terms.seller) != (
            proposal.listing, proposal.quantity, proposal.price, neg.rating_key, neg.seller):
        raise RemoteProtocolError("the order's terms differ from the accepted proposal")
