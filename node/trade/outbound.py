"""Our side of a trade, shared by the service (API calls) and the inbound handler (answers):
the machines in memory, the listing versions we know, and `Outbound`, which acts for us.

`Outbound` is the one place our negotiation messages and order steps are signed, stored, sent
and announced: a failure before the commit leaves nothing stored, sent or announced, and the
machine it half-changed is forgotten (the next use replays the stored evidence).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

from node.trade.errors import LocalProtocolError
from node.trade.events import Emit, negotiation_changed, order_changed
from node.trade.negotiation import Negotiation
from node.trade.orders import Order, Role
from node.trade.store import TradeStore
from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import Listing
from p2pmarket.wire.market import (
    Accept,
    Action,
    NegotiationBody,
    Opened,
    OrderStep,
    order_id_for,
    sign_grant,
)
from p2pmarket.wire.messages import MessageBody, MessageError
from p2pmarket.wire.order_steps import Entry
from p2pmarket.wire.records import Record

ListingSource = Callable[[str], Record[Listing] | None]
Send = Callable[[bytes, MessageBody], object]  # the messenger's `send`
Clock = Callable[[], float]


def new_id() -> str:
    """A fresh id for something we start (a negotiation, a proposal, a conversation)."""
    return base64.urlsafe_b64encode(os.urandom(15)).decode()


class Machines:
    """The negotiation and order machines in use, rebuilt from the store when missing."""

    def __init__(self, store: TradeStore) -> None:
        self.store = store
        self._negotiations: dict[str, Negotiation] = {}
        self._orders: dict[str, Order] = {}

    def negotiation(self, negotiation_id: str) -> Negotiation:
        """The live machine (NotFound: no such negotiation)."""
        neg = self._negotiations.get(negotiation_id)
        if neg is None:
            neg = self.store.load_negotiation(negotiation_id)
            self._negotiations[negotiation_id] = neg
        return neg

    def order(self, order_id: str) -> Order:
        """The live machine (NotFound: no such order)."""
        order = self._orders.get(order_id)
        if order is None:
            order = self.store.load_order(order_id)
            self._orders[order_id] = order
        return order

    def keep_negotiation(self, neg: Negotiation) -> None:
        self._negotiations[neg.id] = neg

    def keep_order(self, order: Order) -> None:
        self._orders[order.id] = order

    def forget_negotiation(self, negotiation_id: str) -> None:
        """After a failed change: the machine may be half-changed, the store is not."""
        self._negotiations.pop(negotiation_id, None)

    def forget_order(self, order_id: str) -> None:
        self._orders.pop(order_id, None)


class KnownListings:
    """Listing versions this node knows. Our own come from `own_listing` (the listings service)
    or, without one, from the records passed to `updated`; others' from `updated` and from the
    copies we offered on. Newer seqs win."""

    def __init__(self, me: bytes, store: TradeStore,
                 own_listing: ListingSource | None = None) -> None:
        self.me, self.store, self.own_listing = me, store, own_listing
        self._seen: dict[tuple[bytes, str], Record[Listing]] = {}

    def updated(self, record: Record[Listing]) -> None:
        key = (record.publisher, record.body.id)
        known = self._seen.get(key)
        if known is None or record.seq > known.seq:
            self._seen[key] = record

    def own(self, listing_id: str) -> Record[Listing] | None:
        """The current version of one of our listings (None: not ours, or gone)."""
        if self.own_listing is not None:
            return self.own_listing(listing_id)
        return self._seen.get((self.me, listing_id))

    def known(self, seller: bytes, listing_id: str) -> Record[Listing] | None:
        """The newest version of `seller`'s listing seen here."""
        stored = self.store.listing(seller, listing_id)
        if stored is not None:
            self.updated(stored)
        return self._seen.get((seller, listing_id))


class Outbound:
    """Acts for us: signs with `identity`, stores in `store`, sends with `send` (the messenger's)
    and announces with `emit`."""

    def __init__(self, identity: Identity, store: TradeStore, machines: Machines, *,
                 send: Send, emit: Emit, clock: Clock) -> None:
        self.identity, self.store, self.machines = identity, store, machines
        self._send, self.emit, self.clock = send, emit, clock

    def send(self, peer: bytes, body: MessageBody) -> None:
        try:
            self._send(peer, body)
        except MessageError as exc:  # a field over its limit (a note, an address)
            raise LocalProtocolError(str(exc)) from exc

    def negotiate(self, neg: Negotiation, body: NegotiationBody,
                  order: Order | None = None) -> None:
        """Our next message in `neg` (and, with an Accept, the order it opens)."""
        neg.send(body)  # raises before anything is stored or sent
        try:
            with self.store.db.transaction():
                self.record(neg, body)
                if order is not None:
                    self.store.add_order(order, self.clock())
        except BaseException:
            self.machines.forget_negotiation(neg.id)
            raise
        self.emit(negotiation_changed(neg, body, neg.our_role))

    def record(self, neg: Negotiation, body: NegotiationBody) -> None:
        """Store and send our message (inside the caller's transaction)."""
        self.store.add_event(neg, body, "sent", self.clock())
        self.send(neg.seller if neg.our_role is Role.BUYER else neg.buyer, body)

    def open_order(self, neg: Negotiation, proposal_id: str, listing: Record[Listing]) -> None:
        """As the seller: sign the order's first step (with the review grant) and send it."""
        proposal = neg.proposal(proposal_id)
        assert proposal is not None
        order_id = order_id_for(neg.id, proposal_id)
        terms = Opened(negotiation=neg.id, proposal=proposal_id, listing=proposal.listing,
                       title=listing.body.title, quantity=proposal.quantity,
                       price=proposal.price, buyer=neg.buyer, seller=self.identity.public,
                       rating_key=neg.rating_key,
                       grant=sign_grant(self.identity, order_id, neg.rating_key))
        order = Order.create(self.identity, terms, self.ms())
        self.negotiate(neg, Accept(negotiation=neg.id, proposal=proposal_id,
                                   step=order.log.entries[0].raw), order=order)
        self.machines.keep_order(order)
        self.emit(order_changed(order, order.log.entries[0]))

    def act(self, order: Order, action: Action, *, address: str | None = None) -> Entry:
        """Our next step in `order` (`address`: the buyer's plaintext copy, kept with it)."""
        before = order.state
        entry = order.send(self.identity, action, self.ms())
        try:
            with self.store.db.transaction():
                self.store.save_steps(order, entry.step.index, before, self.clock())
                if address is not None:
                    self.store.set_address(order.id, address)
                self.send(order.buyer if order.our_role is Role.SELLER else order.seller,
                          OrderStep(order=order.id, step=entry.raw))
        except BaseException:
            self.machines.forget_order(order.id)
            raise
        self.emit(order_changed(order, entry))
        return entry

    def ms(self) -> int:
        return int(self.clock() * 1000)
