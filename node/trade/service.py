"""The trade service: inquiries, negotiations, orders and reviews between nodes, for the API.

`Trade` turns API calls into messages and signed order steps (through `TradeEngine`, which also
handles what peers send), answers queries with views, and tells listeners of every change.
Everything lives in SQLite (components "negotiation" and "orders") and survives a restart.
`run()` belongs in the node's TaskGroup: it reports sales and cancellations to the listings
service (`on_sold` / `on_unsold`), retrying from the database until they succeed.

Wiring: `Trade(node, own_listing=..., on_sold=listings.sold)`; `node` needs `identity`, `db`,
`messenger`, `peers` and `dht` (`node.app.Node` has them).
"""

from __future__ import annotations

import asyncio
import inspect
import logging

from dht.server import DhtError
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
from node.trade.inbound import ListingSource, SaleHook, TradeEngine, TradeNode, new_id
from node.trade.inquiries import InquiryView
from node.trade.negotiation import Negotiation, NegotiationState, check_fresh, check_terms
from node.trade.orders import OrderState, Role
from node.trade.reviews import ReviewReader, build_review, rating_identity
from node.trade.store import (
    NegotiationView,
    OrderView,
    ReviewPublished,
    negotiation_view,
    order_view,
)
from p2pmarket.wire.bodies import Listing, Price, Review
from p2pmarket.wire.market import (
    Accept,
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
__all__ = ["ListingSource", "SaleHook", "Trade", "TradeNode"]


class Trade(TradeEngine):
    """Buying and selling with other nodes: the API the HTTP layer calls."""

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
            self._record(neg, offer)
        self._negotiations[neg.id] = neg
        self._emit_negotiation(neg, offer, B)
        return self.negotiation(neg.id)

    async def counter(self, negotiation_id: str, quantity: int, amount: int,
                      note: str = "") -> NegotiationView:
        neg = self._negotiation(negotiation_id)
        listing: Listing | None
        if neg.our_role is S:
            current = self._current_own(neg.listing_id)
            if current is None:
                raise StaleOffer(f"listing {neg.listing_id} no longer exists")
            ref, listing = listing_ref(current), current.body
        else:
            known = self._known(neg.seller, neg.listing_id)
            fresh = known is not None and known.seq >= neg.listing.seq
            ref = listing_ref(known) if fresh and known else neg.listing
            listing = known.body if fresh and known else None
        price = Price(amount, listing.price.currency if listing else neg.proposals[-1].price
                      .currency)
        if listing is not None:
            check_terms(listing, quantity, price)
        body = Counter(negotiation=neg.id, proposal=new_id(), listing=ref, quantity=quantity,
                       price=price, note=note)
        self._send_negotiation(neg, body)
        return self.negotiation(neg.id)

    async def accept(self, negotiation_id: str) -> NegotiationView:
        """Accept the other side's latest proposal. As the seller this makes the order; as the
        buyer it waits for the seller's node to confirm (state ACCEPTING)."""
        neg = self._negotiation(negotiation_id)
        proposal = neg.latest(neg.our_role.other)
        if proposal is None or neg.state not in (N.OPEN, N.COUNTERED):
            raise IllegalEvent(f"nothing to accept in a negotiation that is {neg.state}")
        if neg.our_role is S:
            current = self._current_own(neg.listing_id)
            check_fresh(proposal.listing, current)
            assert current is not None
            check_terms(current.body, proposal.quantity, proposal.price)
            self._open_order(neg, proposal.id, current)
        else:
            known = self._known(neg.seller, neg.listing_id)
            if known is not None and known.seq > proposal.listing.seq:
                raise StaleOffer(f"the listing changed since this proposal (it is on version "
                                 f"{proposal.listing.seq}, the listing is at {known.seq})")
            self._send_negotiation(neg, Accept(negotiation=neg.id, proposal=proposal.id))
        return self.negotiation(neg.id)

    async def decline(self, negotiation_id: str, reason: str = "") -> NegotiationView:
        neg = self._negotiation(negotiation_id)
        self._send_negotiation(neg, Decline(negotiation=neg.id, reason=reason))
        return self.negotiation(neg.id)

    async def withdraw(self, negotiation_id: str, reason: str = "") -> NegotiationView:
        neg = self._negotiation(negotiation_id)
        self._send_negotiation(neg, Withdraw(negotiation=neg.id, reason=reason))
        return self.negotiation(neg.id)

    async def ask(self, seller: bytes, listing_id: str, text: str) -> InquiryView:
        """Ask a seller about a listing before any offer. The listing must be known here (a copy
        passed to `listing_updated` or offered on), for its title. A second question about the
        same listing goes into the same conversation, again as an `Inquiry`, so a seller that
        dropped the first (over its caps) can still take it."""
        if seller == self.identity.public:
            raise LocalProtocolError("you cannot ask about your own listing")
        listing = self._known(seller, listing_id)
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
            self._send(seller, Inquiry(conversation=view.id, listing=listing_id, text=text))
        return self.inquiries.view(view.id)

    async def chat(self, conversation_id: str, text: str) -> None:
        """A chat line in an inquiry's or a negotiation's conversation (which continues after
        the order)."""
        peer = self.conversation_peer(conversation_id)
        with self.store.db.transaction():
            self.inquiries.add_line(conversation_id, self.identity.public, text, self.clock(),
                                    ours=True)
            self._send(peer, Chat(conversation=conversation_id, text=text))

    # -- order API -----------------------------------------------------------------------------

    async def send_address(self, order_id: str, text: str) -> OrderView:
        """The buyer's shipping address, sealed to the seller's encryption key."""
        order = self._order(order_id)
        self._precheck(order, AddressSent)
        info = await self.node.peers.resolve(order.seller)
        if info is None:
            raise Unavailable("the seller's encryption key is unknown (no peer record found)")
        if not 1 <= len(text) <= 2000:
            raise LocalProtocolError("an address has 1..2000 characters")
        try:
            ephemeral, nonce, ciphertext = seal(info.enc_key, text.encode())
        except SealError as exc:
            raise Unavailable(f"cannot seal to the seller's key: {exc}") from exc
        self._act(order, AddressSent(ephemeral=ephemeral, nonce=nonce, ciphertext=ciphertext),
                  address=text)
        return self.order(order_id)

    async def confirm_payment(self, order_id: str, method: PaymentMethod = "manual",
                              reference: str = "") -> OrderView:
        """The payment hook (seller): money received off-platform, or the escrow funded."""
        self._act(self._order(order_id), PaymentConfirmed(method=method, reference=reference))
        return self.order(order_id)

    async def mark_shipped(self, order_id: str, carrier: str, tracking: str) -> OrderView:
        self._act(self._order(order_id), Shipped(carrier=carrier, tracking=tracking))
        return self.order(order_id)

    async def confirm_received(self, order_id: str, note: str = "") -> OrderView:
        self._act(self._order(order_id), Received(note=note))
        return self.order(order_id)

    async def settle(self, order_id: str, reference: str = "") -> OrderView:
        """The release hook (seller): the escrow paid out; completes the order."""
        self._act(self._order(order_id), Settled(reference=reference))
        return self.order(order_id)

    async def cancel(self, order_id: str, reason: str = "") -> OrderView:
        self._act(self._order(order_id), Cancelled(reason=reason))
        return self.order(order_id)

    async def review(self, order_id: str, stars: int, text: str = "") -> Record[Review]:
        """Publish (or, called again, replace) the buyer's review of the order's seller."""
        order = self._order(order_id)
        if order.our_role is not B:
            raise WrongRole("only the buyer reviews an order")
        if order.state not in (OrderState.RECEIVED, OrderState.COMPLETED):
            raise IllegalEvent(f"an order can be reviewed once received; it is {order.state}")
        if self.node.dht is None:
            raise Unavailable("no DHT to publish the review in")
        rating = rating_identity(self.identity, order.terms.negotiation)
        if rating.public != order.terms.rating_key:
            raise TradeError("the order's rating key is not ours")
        try:
            record = build_review(rating, seller=order.seller, order_id=order.id, stars=stars,
                                  text=text, grant=order.terms.grant,
                                  seq=self.store.review_seq(order.id) + 1)
        except RecordError as exc:
            raise LocalProtocolError(str(exc)) from exc
        try:
            report = await self.node.dht.put(record)
        except DhtError as exc:
            raise Unavailable(f"cannot publish the review: {exc}") from exc
        if not report.ok:
            raise Unavailable(f"no DHT node stored the review: {report.refused}")
        self.store.set_review_seq(order.id, record.seq)
        self._emit(ReviewPublished(order=order.id, seller=order.seller, stars=stars))
        return record

    async def reviews_for(self, seller: bytes) -> list[Record[Review]]:
        if self.node.dht is None:
            raise Unavailable("no DHT to read reviews from")
        return await ReviewReader(self.node.dht).reviews_for(seller)

    async def reputation(self, seller: bytes) -> tuple[int, float]:
        if self.node.dht is None:
            raise Unavailable("no DHT to read reviews from")
        return await ReviewReader(self.node.dht).reputation(seller)

    # -- queries -------------------------------------------------------------------------------

    def negotiations(self) -> list[NegotiationView]:
        return [self.negotiation(i) for i in self.store.negotiation_ids()]

    def negotiation(self, negotiation_id: str) -> NegotiationView:
        neg = self._negotiation(negotiation_id)
        current = (self._current_own(neg.listing_id) if neg.our_role is S
                   else self._known(neg.seller, neg.listing_id))
        return negotiation_view(neg, current, self.store.updated(neg.id))

    def orders(self) -> list[OrderView]:
        return [self.order(i) for i in self.store.order_ids()]

    def order(self, order_id: str) -> OrderView:
        order = self._order(order_id)
        return order_view(order, self.identity, self.store.address(order.id))

    def conversations(self) -> list[tuple[str, str]]:
        """(id, "offer" or "inquiry") of every conversation, latest change first."""
        return self.inquiries.conversation_ids()

    def conversation_peer(self, conversation_id: str) -> bytes:
        """The other side of an inquiry's or a negotiation's conversation (NotFound: neither)."""
        inquiry = self.inquiries.get(conversation_id)
        if inquiry is not None:
            return inquiry.peer
        neg = self._negotiation(conversation_id)
        return neg.seller if neg.our_role is B else neg.buyer

    def chat_log(self, conversation_id: str) -> list[tuple[bytes, str, float]]:
        return self.store.chat(conversation_id)

    # -- hooks ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Finish what a restart interrupted, then call the listings hooks for sales and
        cancellations as they happen, until cancelled."""
        self._resume()
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
