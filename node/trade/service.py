"""The trade service: inquiries, negotiations, orders and reviews between nodes, for the API.

`Trade` turns API calls into messages and signed order steps (through `Outbound`), answers
queries with views, and tells listeners of every change; what peers send is handled by its
`Inbound` handler. Everything lives in SQLite (components "negotiation" and "orders") and survives
a restart. `run()` belongs in the node's TaskGroup: it reports sales and cancellations to the
listings service (`on_sold` / `on_unsold`), retrying from the database until they succeed.

Wiring: `Trade(node, own_listing=..., on_sold=listings.sold)`; `node` needs `identity`, `db`,
`messenger`, `peers` and `dht` (`node.app.Node` has them).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Protocol

from dht.server import DhtError, DhtNode
from node.market.owned import OwnRecords, put_error
from node.p2p.messenger import Messenger
from node.p2p.peers import PeerDirectory
from node.p2p.seal import SealError, seal
from node.trade.errors import (
    IllegalEvent,
    LocalProtocolError,
    NotFound,
    StaleOffer,
    TradeError,
    Unavailable,
    WrongRole,
)
from node.trade.events import (
    Listeners,
    OrderChanged,
    ReviewPublished,
    TradeEvent,
    negotiation_changed,
)
from node.trade.inbound import Inbound
from node.trade.inquiries import InquiryStore, InquiryView
from node.trade.negotiation import Negotiation, NegotiationState, check_fresh, check_terms
from node.trade.orders import Order, OrderState, Role
from node.trade.outbound import Clock, KnownListings, ListingSource, Machines, Outbound, new_id
from node.trade.reviews import ReviewReader, build_review, rating_identity
from node.trade.store import NegotiationView, OrderView, TradeStore, negotiation_view, order_view
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Listing, Price, Review
from p2pmarket.wire.market import (
    Accept,
    Action,
    AddressSent,
    Cancelled,
    Counter,
    Decline,
    Inquiry,
    Offer,
    PaymentConfirmed,
    PaymentMethod,
    Received,
    Settled,
    Shipped,
    Withdraw,
    listing_ref,
)
from p2pmarket.wire.messages import Chat
from p2pmarket.wire.records import Record, RecordError

log = logging.getLogger(__name__)

B, S = Role.BUYER, Role.SELLER
N = NegotiationState
HOOK_RETRY = 30.0
SaleHook = Callable[[str, int], object]  # (listing id, quantity); may return an awaitable
__all__ = ["ListingSource", "SaleHook", "Trade", "TradeNode", "new_id"]


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


class Trade:
    """Buying and selling with other nodes: the API the HTTP layer calls.

    `own_listing(listing_id)` gives the current record of one of our listings (the listings
    service); without it, the records passed to `listing_updated` are used. `on_sold` /
    `on_unsold` tell the listings service about stock (see `run`). Shared with the `inbound`
    handler: `store`, `inquiries`, `machines`, `known_listings`, `outbound`, `events`."""

    def __init__(self, node: TradeNode, *, own_listing: ListingSource | None = None,
                 on_sold: SaleHook | None = None, on_unsold: SaleHook | None = None,
                 owned: OwnRecords | None = None, clock: Clock = time.time) -> None:
        self.node, self.identity = node, node.identity
        # where the reviews I write are kept and renewed (with the rating key that signed them)
        self.owned = owned or OwnRecords(node.identity, node.db, node.dht, clock=clock,
                                         derive=self.rating_key)
        self.own_listing, self.on_sold, self.on_unsold = own_listing, on_sold, on_unsold
        self.clock = clock
        self.store = TradeStore(node.db)
        self.inquiries = InquiryStore(self.store)
        self.events = Listeners()
        self.listeners = self.events.listeners
        self.machines = Machines(self.store)
        self.known_listings = KnownListings(self.identity.public, self.store, own_listing)
        self.outbound = Outbound(self.identity, self.store, self.machines,
                                 send=node.messenger.send, emit=self.events.emit, clock=clock)
        self.inbound = Inbound(self.identity.public, self.store, self.inquiries, self.machines,
                               self.known_listings, self.outbound, emit=self.events.emit,
                               clock=clock)
        self._wake = asyncio.Event()  # an order changed: a listings hook may be due
        # asked before we ship: each may name a reason not to (the escrow: funding not there)
        self.ship_checks: list[Callable[[str], str | None]] = []
        self.listeners.append(self._on_event)
        node.messenger.listeners.append(self.inbound.on_messenger_event)

    @property
    def violations(self) -> Tally[bytes]:
        """Protocol violations per peer (see `Inbound`)."""
        return self.inbound.violations

    def listing_updated(self, record: Record[Listing]) -> None:
        """Tell the service about a listing version (ours or one seen); newer seqs win."""
        self.known_listings.updated(record)

    # -- negotiation API -----------------------------------------------------------------------

    async def make_offer(self, listing: Record[Listing], quantity: int, amount: int,
                         note: str = "") -> NegotiationView:
        """Open a negotiation on `listing` (or revise our open one): `amount` is the total for
        `quantity` items in the listing's currency, minor units."""
        if listing.publisher == self.identity.public:
            raise LocalProtocolError("you cannot make an offer on your own listing")
        self.listing_updated(listing)
        for open_id in self.store.open_negotiations(listing.publisher, listing.body.id):
            return await self.counter(open_id, quantity, amount, note)
        price = Price(amount, listing.body.price.currency)
        check_terms(listing.body, quantity, price)
        neg_id = new_id()
        offer = Offer(negotiation=neg_id, proposal=new_id(), listing=listing_ref(listing),
                      quantity=quantity, price=price, note=note,
                      rating_key=rating_identity(self.identity, neg_id).public)
        neg = Negotiation(offer, seller=listing.publisher, buyer=self.identity.public,
                          our_role=B)
        with self.store.db.transaction():
            self.store.add_negotiation(neg, listing.raw, self.clock())
            self.outbound.record(neg, offer)
        self.machines.keep_negotiation(neg)
        self.events.emit(negotiation_changed(neg, offer, B))
        return self.negotiation(neg.id)

    async def counter(self, negotiation_id: str, quantity: int, amount: int,
                      note: str = "") -> NegotiationView:
        neg = self.machines.negotiation(negotiation_id)
        listing: Listing | None
        if neg.our_role is S:
            current = self.known_listings.own(neg.listing_id)
            if current is None:
                raise StaleOffer(f"listing {neg.listing_id} no longer exists")
            ref, listing = listing_ref(current), current.body
        else:
            known = self.known_listings.known(neg.seller, neg.listing_id)
            fresh = known is not None and known.seq >= neg.listing.seq
            ref = listing_ref(known) if fresh and known else neg.listing
            listing = known.body if fresh and known else None
        price = Price(amount, listing.price.currency if listing else neg.proposals[-1].price
                      .currency)
        if listing is not None:
            check_terms(listing, quantity, price)
        body = Counter(negotiation=neg.id, proposal=new_id(), listing=ref, quantity=quantity,
                       price=price, note=note)
        self.outbound.negotiate(neg, body)
        return self.negotiation(neg.id)

    async def accept(self, negotiation_id: str) -> NegotiationView:
        """Accept the other side's latest proposal. As the seller this makes the order; as the
        buyer it waits for the seller's node to confirm (state ACCEPTING)."""
        neg = self.machines.negotiation(negotiation_id)
        proposal = neg.latest(neg.our_role.other)
        if proposal is None or neg.state not in (N.OPEN, N.COUNTERED):
            raise IllegalEvent(f"nothing to accept in a negotiation that is {neg.state}")
        if neg.our_role is S:
            current = self.known_listings.own(neg.listing_id)
            check_fresh(proposal.listing, current)
            assert current is not None
            check_terms(current.body, proposal.quantity, proposal.price)
            self.outbound.open_order(neg, proposal.id, current)
        else:
            known = self.known_listings.known(neg.seller, neg.listing_id)
            if known is not None and known.seq > proposal.listing.seq:
                raise StaleOffer(f"the listing changed since this proposal (it is on version "
                                 f"{proposal.listing.seq}, the listing is at {known.seq})")
            self.outbound.negotiate(neg, Accept(negotiation=neg.id, proposal=proposal.id))
        return self.negotiation(neg.id)

    async def decline(self, negotiation_id: str, reason: str = "") -> NegotiationView:
        neg = self.machines.negotiation(negotiation_id)
        self.outbound.negotiate(neg, Decline(negotiation=neg.id, reason=reason))
        return self.negotiation(neg.id)

    async def withdraw(self, negotiation_id: str, reason: str = "") -> NegotiationView:
        neg = self.machines.negotiation(negotiation_id)
        self.outbound.negotiate(neg, Withdraw(negotiation=neg.id, reason=reason))
        return self.negotiation(neg.id)

    async def ask(self, seller: bytes, listing_id: str, text: str) -> InquiryView:
        """Ask a seller about a listing before any offer. The listing must be known here (a copy
        passed to `listing_updated` or offered on), for its title. A second question about the
        same listing goes into the same conversation, again as an `Inquiry`, so a seller that
        dropped the first (over its caps) can still take it."""
        if seller == self.identity.public:
            raise LocalProtocolError("you cannot ask about your own listing")
        listing = self.known_listings.known(seller, listing_id)
        if listing is None:
            raise NotFound(f"no listing {listing_id} of that seller is known here")
        now = self.clock()
        view = self.inquiries.mine_about(seller, listing_id)
        with self.store.db.transaction():
            if view is None:
                view = InquiryView(id=new_id(), role=B, peer=seller, listing_id=listing_id,
                                   title=listing.body.title, created=now, updated=now)
                self.inquiries.add(view)
            self.inquiries.add_line(view.id, self.identity.public, text, now, ours=True)
            self.outbound.send(seller, Inquiry(conversation=view.id, listing=listing_id, text=text))
        return self.inquiries.view(view.id)

    async def chat(self, conversation_id: str, text: str) -> None:
        """A chat line in an inquiry's or a negotiation's conversation (which continues after
        the order)."""
        peer = self.conversation_peer(conversation_id)
        with self.store.db.transaction():
            self.inquiries.add_line(conversation_id, self.identity.public, text, self.clock(),
                                    ours=True)
            self.outbound.send(peer, Chat(conversation=conversation_id, text=text))

    # -- order API -----------------------------------------------------------------------------

    async def send_address(self, order_id: str, text: str) -> OrderView:
        """The buyer's shipping address, sealed to the seller's encryption key."""
        order = self.machines.order(order_id)
        _precheck(order, AddressSent)
        info = await self.node.peers.resolve(order.seller)
        if info is None:
            raise Unavailable("the seller's encryption key is unknown (no peer record found)")
        if not 1 <= len(text) <= 2000:
            raise LocalProtocolError("an address has 1..2000 characters")
        try:
            ephemeral, nonce, ciphertext = seal(info.enc_key, text.encode())
        except SealError as exc:
            raise Unavailable(f"cannot seal to the seller's key: {exc}") from exc
        self.outbound.act(order, AddressSent(ephemeral=ephemeral, nonce=nonce,
                                             ciphertext=ciphertext), address=text)
        return self.order(order_id)

    async def confirm_payment(self, order_id: str, method: PaymentMethod = "manual",
                              reference: str = "") -> OrderView:
        """The payment hook (seller): money received off-platform, or the escrow funded."""
        return self._step(order_id, PaymentConfirmed(method=method, reference=reference))

    async def mark_shipped(self, order_id: str, carrier: str, tracking: str) -> OrderView:
        for check in self.ship_checks:
            reason = check(order_id)
            if reason is not None:
                raise IllegalEvent(f"do not ship yet: {reason}")
        return self._step(order_id, Shipped(carrier=carrier, tracking=tracking))

    async def confirm_received(self, order_id: str, note: str = "") -> OrderView:
        return self._step(order_id, Received(note=note))

    async def settle(self, order_id: str, reference: str = "") -> OrderView:
        """The release hook (seller): the escrow paid out; completes the order."""
        return self._step(order_id, Settled(reference=reference))

    async def cancel(self, order_id: str, reason: str = "") -> OrderView:
        return self._step(order_id, Cancelled(reason=reason))

    def _step(self, order_id: str, action: Action) -> OrderView:
        self.outbound.act(self.machines.order(order_id), action)
        return self.order(order_id)

    async def review(self, order_id: str, stars: int, text: str = "") -> Record[Review]:
        """Publish (or, called again, replace) the buyer's review of the order's seller."""
        order = self.machines.order(order_id)
        if order.our_role is not B:
            raise WrongRole("only the buyer reviews an order")
        if order.state not in (OrderState.RECEIVED, OrderState.COMPLETED):
            raise IllegalEvent(f"an order can be reviewed once received; it is {order.state}")
        if self.node.dht is None:
            raise Unavailable("no DHT to publish the review in")
        rating = self.rating_key(order.terms.negotiation)
        if rating.public != order.terms.rating_key:
            raise TradeError("the order's rating key is not ours")
        try:
            record = build_review(rating, seller=order.seller, order_id=order.id, stars=stars,
                                  text=text, grant=order.terms.grant,
                                  seq=self.store.review_seq(order.id) + 1,
                                  created=int(self.clock()))
        except RecordError as exc:
            raise LocalProtocolError(str(exc)) from exc
        # kept (and its seq used up) before the put: a review stored nowhere now goes out
        # with the next renewal round, and a new one never reuses its seq
        self.store.set_review_seq(order.id, record.seq)
        try:
            report = await self.owned.publish(record, order.id, signer=order.terms.negotiation)
        except DhtError as exc:
            raise Unavailable(f"cannot publish the review: {exc}") from exc
        if not report.ok:
            raise Unavailable(f"{put_error(report)}; the node keeps trying")
        self.events.emit(ReviewPublished(order=order.id, seller=order.seller, stars=stars))
        return record

    def rating_key(self, negotiation_id: str) -> Identity:
        """My rating key for one negotiation (so for its order's review)."""
        return rating_identity(self.identity, negotiation_id)

    async def reviews_for(self, seller: bytes) -> list[Record[Review]]:
        return await self._reviews().reviews_for(seller)

    async def reputation(self, seller: bytes) -> tuple[int, float]:
        return await self._reviews().reputation(seller)

    def _reviews(self) -> ReviewReader:
        if self.node.dht is None:
            raise Unavailable("no DHT to read reviews from")
        return ReviewReader(self.node.dht)

    # -- queries -------------------------------------------------------------------------------

    def negotiations(self) -> list[NegotiationView]:
        return [self.negotiation(i) for i in self.store.negotiation_ids()]

    def negotiation(self, negotiation_id: str) -> NegotiationView:
        neg = self.machines.negotiation(negotiation_id)
        current = (self.known_listings.own(neg.listing_id) if neg.our_role is S
                   else self.known_listings.known(neg.seller, neg.listing_id))
        return negotiation_view(neg, current, self.store.updated(neg.id))

    def orders(self) -> list[OrderView]:
        return [self.order(i) for i in self.store.order_ids()]

    def order(self, order_id: str) -> OrderView:
        order = self.machines.order(order_id)
        return order_view(order, self.identity, self.store.address(order.id))

    def conversations(self) -> list[tuple[str, str]]:
        """(id, "offer" or "inquiry") of every conversation, latest change first."""
        return self.inquiries.conversation_ids()

    def conversation_peer(self, conversation_id: str) -> bytes:
        """The other side of an inquiry's or a negotiation's conversation (NotFound: neither)."""
        inquiry = self.inquiries.get(conversation_id)
        if inquiry is not None:
            return inquiry.peer
        neg = self.machines.negotiation(conversation_id)
        return neg.seller if neg.our_role is B else neg.buyer

    def chat_log(self, conversation_id: str) -> list[tuple[bytes, str, float]]:
        return self.store.chat(conversation_id)

    # -- hooks ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Finish what a restart interrupted, then call the listings hooks for sales and
        cancellations as they happen, until cancelled."""
        self.inbound.resume()
        while True:
            self._wake.clear()
            failed = await self._run_hooks()
            try:
                await asyncio.wait_for(self._wake.wait(), HOOK_RETRY if failed else None)
            except TimeoutError:
                pass

    async def _run_hooks(self) -> bool:
        failed = False
        for order_id, hook, listing_id, quantity in self.store.due_hooks():
            fn = self.on_sold if hook == "sold" else self.on_unsold
            try:
                result = fn(listing_id, quantity) if fn is not None else None
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # the listings service's failure: retried later
                log.warning("%s hook for order %s failed: %s", hook, order_id, exc)
                failed = True
                continue
            self.store.hook_done(order_id, hook)
        return failed

    def _on_event(self, event: TradeEvent) -> None:
        if isinstance(event, OrderChanged):
            self._wake.set()


def _precheck(order: Order, kind: type[Action]) -> None:
    """Refuse a step we may not take now, before any work (sealing an address) is done."""
    if kind not in order.allowed(order.our_role):
        if kind in order.allowed(order.our_role.other):
            raise WrongRole(f"only the {order.our_role.other} can do that now")
        raise IllegalEvent(f"not possible in an order that is {order.state}")
