"""A fake of `p2pmarket.client.Client` for the TUI's tests: fixed wire objects, in-memory state
for the actions, and a list of calls made. `make_app(FakeClient())` gives a deterministic app."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any

import msgspec

from p2pmarket.bodies import EscrowTerms, Location, Price, ShippingOption
from p2pmarket.client import ApiError, Event, NodeUnreachable
from p2pmarket.client_schemas import (
    DhtStatusOut,
    ListingFields,
    ListingOut,
    NodeStatus,
    Page,
    PeerOut,
    ProfileOut,
    ReviewOut,
    SearchHit,
    SearchPage,
)
from p2pmarket.client_schemas_trade import (
    ChatOut,
    EscrowOut,
    ListingRefOut,
    OfferOut,
    Opened,
    OrderOut,
    OutboxOut,
    ProposalOut,
    ShippedOut,
    StepOut,
    WalletOut,
)
from p2pmarket.taxonomy import is_category

ME = "12D3KooWMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMe"
SELLER = "12D3KooWSe11erSe11erSe11erSe11erSe11erSe11erSe11er"
BUYER = "12D3KooWBuyerBuyerBuyerBuyerBuyerBuyerBuyerBuyerBuy"
CREATED = 1_750_000_000
HASH = "ab" * 32


def listing(n: int, title: str, amount: int, *, condition: str = "good",
            publisher: str = SELLER, mine: bool = False, category: str = "electronics/phones"
            ) -> ListingOut:
    return ListingOut(
        publisher=publisher, id=f"listing-{n:04d}", seq=1, created=CREATED, expires=CREATED + 86400,
        hash=f"{n:02x}" * 32, mine=mine, title=title, description=f"A {title.lower()}, works.",
        price=Price(amount, "EUR"), category=category, condition=condition,  # type: ignore[arg-type]
        quantity=2, location=Location("DE", "u33db"), shipping=[ShippingOption("DE", 490, 1, 3)],
        images=[], tags=["demo"], arbiters=[], escrow=EscrowTerms())


def ref(item: ListingOut) -> ListingRefOut:
    return ListingRefOut(id=item.id, seq=item.seq, hash=item.hash)


def validation(exc: msgspec.ValidationError) -> ApiError:
    """The 422 the API answers for a body msgspec refuses (pointer from `- at $.a.b`)."""
    msg, _, path = str(exc).partition(" - at `$")
    pointer = "".join(f"/{a or b}" for a, b in re.findall(r"\.([^.\[`]+)|\[(\d+)\]", path))
    return ApiError(422, "urn:p2pmarket:problem:validation", "Invalid input", msg,
                    [{"pointer": pointer, "detail": msg}])


class FakeClient:
    """Implements the client methods the TUI calls; `calls` records (name, args)."""

    def __init__(self, *, events: Iterable[Event] = (), unreachable: bool = False) -> None:
        now = time.time()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.unreachable = unreachable
        self.events_to_send = list(events)
        self.market = [
            listing(1, "Fairphone 4, 256 GB", 34900),
            listing(2, "Pixel 7a with case", 27500, condition="like-new"),
            listing(3, "Nokia 3310 (2000)", 2500, condition="fair", publisher=BUYER),
        ]
        self.mine = [listing(9, "Road bike, 56 cm", 42000, publisher=ME, mine=True,
                             category="sports/bikes")]
        item = self.market[0]
        self.offers = [OfferOut(
            id="offer-0001", role="buyer", state="countered", seller=SELLER, buyer=ME,
            listing=ref(item), title=item.title, stale=False, order_id=None, reason="",
            updated=now - 3600, proposals=[
                ProposalOut(id="p1", by="buyer", listing=ref(item), quantity=1,
                            price=Price(30000, "EUR"), note="would you take 300?"),
                ProposalOut(id="p2", by="seller", listing=ref(item), quantity=1,
                            price=Price(32000, "EUR"), note="320 and it's yours")])]
        bike = self.mine[0]
        opened = Opened(offer="offer-0009", proposal="p9", listing=ref(bike), title=bike.title,
                        quantity=1, price=Price(40000, "EUR"), buyer=BUYER, seller=ME)
        self.orders = [OrderOut(
            id="order-0001", offer="offer-0009", role="seller", state="paid", seller=ME,
            buyer=BUYER, listing=ref(bike), title=bike.title, quantity=1,
            price=Price(40000, "EUR"), payment=None, shipment=None, address="Hauptstr. 1, Berlin",
            can=["shipped", "cancelled"],
            log=[StepOut(index=0, hash=HASH, by="buyer", at_ms=CREATED * 1000, action=opened)])]
        self.messages: dict[str, list[ChatOut]] = {"offer-0001": [
            ChatOut(sender=SELLER, mine=False, text="Still available!", at=now - 4000)]}

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.unreachable:
            raise NodeUnreachable("cannot reach the node at http://127.0.0.1:1: refused")

    async def close(self) -> None:
        pass

    # -- node --------------------------------------------------------------------------------

    async def get_status(self) -> NodeStatus:
        self._call("get_status")
        return NodeStatus(peer_id=ME, version="0.1.0", state="running", uptime=42.0,
                          last_event_id=7, dht=DhtStatusOut(listening="127.0.0.1:8468",
                                                            contacts=12, records_held=40,
                                                            bootstrapped=True),
                          connected_peers=3, my_listings=1, cached_listings=3, offers=1,
                          orders=1, escrow=False)

    async def events(self, *, last_event_id: int | None = None, types: Iterable[str] = (),
                     reconnect: bool = False) -> AsyncGenerator[Event, None]:
        for event in self.events_to_send:
            yield event
        await asyncio.Event().wait()  # like a quiet stream: until the worker is cancelled

    async def list_peers(self, *, page_size: int = 50, page_token: str | None = None
                         ) -> Page[PeerOut]:
        self._call("list_peers")
        return Page(items=[PeerOut(peer=SELLER, connected=True),
                           PeerOut(peer=BUYER, connected=False)])

    async def list_outbox(self, **kw: Any) -> Page[OutboxOut]:
        self._call("list_outbox")
        now = time.time()
        return Page(items=[OutboxOut(id="m1", recipient=SELLER, seq=3, kind="offer",
                                     state="delivered", via="direct", attempts=1,
                                     next_attempt=0, created=now - 3600, updated=now - 3600,
                                     error="")])

    async def get_wallet(self) -> WalletOut:
        self._call("get_wallet")
        return WalletOut(network="regtest", confirmed_sat=150000, pending_sat=0)

    # -- market ------------------------------------------------------------------------------

    async def search(self, q: str = "", **kw: Any) -> SearchPage:
        self._call("search", q, kw)
        words = q.lower().split()
        hits = [SearchHit(listing=item, distance_km=12.0 if item.publisher == SELLER else None,
                          rank=1.0) for item in self.market
                if all(w in item.title.lower() for w in words)
                and (not kw.get("condition") or item.condition in kw["condition"])
                and (kw.get("price_max") is None or item.price.amount <= kw["price_max"])]
        if kw.get("sort") == "price":
            hits.sort(key=lambda h: h.listing.price.amount)
        return SearchPage(items=hits, total=len(hits))

    async def get_listing(self, peer_id: str, listing_id: str, *, refresh: bool = False
                          ) -> ListingOut:
        self._call("get_listing", peer_id, listing_id)
        for item in self.market + self.mine:
            if item.publisher == peer_id and item.id == listing_id:
                return item
        raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found", "no such listing")

    async def get_profile(self, peer_id: str) -> ProfileOut:
        self._call("get_profile", peer_id)
        return ProfileOut(peer=peer_id, found=True, name="Ada's Phones", bio="Refurbished phones.",
                          reviews=2, rating=4.5)

    async def list_reviews(self, peer_id: str, **kw: Any) -> Page[ReviewOut]:
        self._call("list_reviews", peer_id)
        return Page(items=[ReviewOut(seller=peer_id, order_id="o1", rating=5, text="Fast, nice.",
                                     created=CREATED, rating_key=HASH)])

    # -- offers and messages -----------------------------------------------------------------

    async def list_offers(self, **kw: Any) -> Page[OfferOut]:
        self._call("list_offers")
        return Page(items=list(self.offers))

    async def make_offer(self, seller: str, listing_id: str, amount: int, *, quantity: int = 1,
                         note: str = "") -> OfferOut:
        self._call("make_offer", seller, listing_id, amount, quantity, note)
        if quantity < 1:
            raise ApiError(422, "urn:p2pmarket:problem:validation", "Invalid input",
                           "Expected `int` >= 1", [{"pointer": "/quantity",
                                                   "detail": "Expected `int` >= 1"}])
        item = next(i for i in self.market if i.id == listing_id)
        offer = OfferOut(id=f"offer-{len(self.offers) + 1:04d}", role="buyer", state="open",
                         seller=seller, buyer=ME, listing=ref(item), title=item.title,
                         proposals=[ProposalOut(id="px", by="buyer", listing=ref(item),
                                                quantity=quantity, price=Price(amount, "EUR"),
                                                note=note)],
                         stale=False, order_id=None, reason="", updated=time.time())
        self.offers.append(offer)
        return offer

    def _offer(self, offer_id: str, **changes: Any) -> OfferOut:
        for n, offer in enumerate(self.offers):
            if offer.id == offer_id:
                self.offers[n] = msgspec.structs.replace(offer, **changes)
                return self.offers[n]
        raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found", "no such offer")

    async def accept_offer(self, offer_id: str) -> OfferOut:
        self._call("accept_offer", offer_id)
        return self._offer(offer_id, state="accepted", order_id="order-0002")

    async def decline_offer(self, offer_id: str, reason: str = "") -> OfferOut:
        self._call("decline_offer", offer_id, reason)
        return self._offer(offer_id, state="declined", reason=reason)

    async def withdraw_offer(self, offer_id: str, reason: str = "") -> OfferOut:
        self._call("withdraw_offer", offer_id, reason)
        return self._offer(offer_id, state="withdrawn", reason=reason)

    async def counter_offer(self, offer_id: str, amount: int, *, quantity: int = 1,
                            note: str = "") -> OfferOut:
        self._call("counter_offer", offer_id, amount, quantity, note)
        return self._offer(offer_id, state="countered")

    async def list_messages(self, conversation_id: str, **kw: Any) -> Page[ChatOut]:
        self._call("list_messages", conversation_id)
        return Page(items=list(self.messages.get(conversation_id, [])))

    async def send_message(self, conversation_id: str, text: str) -> ChatOut:
        self._call("send_message", conversation_id, text)
        chat = ChatOut(sender=ME, mine=True, text=text, at=time.time(), delivery="queued")
        self.messages.setdefault(conversation_id, []).append(chat)
        return chat

    # -- orders ------------------------------------------------------------------------------

    async def list_orders(self, **kw: Any) -> Page[OrderOut]:
        self._call("list_orders")
        return Page(items=list(self.orders))

    def _order(self, order_id: str, **changes: Any) -> OrderOut:
        for n, order in enumerate(self.orders):
            if order.id == order_id:
                self.orders[n] = msgspec.structs.replace(order, **changes)
                return self.orders[n]
        raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found", "no such order")

    async def ship_order(self, order_id: str, carrier: str, tracking: str) -> OrderOut:
        self._call("ship_order", order_id, carrier, tracking)
        return self._order(order_id, state="shipped", can=[],
                           shipment=ShippedOut(carrier=carrier, tracking=tracking))

    async def confirm_received(self, order_id: str, note: str = "") -> OrderOut:
        self._call("confirm_received", order_id)
        return self._order(order_id, state="received", can=[])

    async def cancel_order(self, order_id: str, reason: str = "") -> OrderOut:
        self._call("cancel_order", order_id, reason)
        return self._order(order_id, state="cancelled", can=[])

    async def confirm_payment(self, order_id: str, reference: str = "") -> OrderOut:
        self._call("confirm_payment", order_id)
        return self._order(order_id, state="paid")

    async def send_address(self, order_id: str, address: str) -> OrderOut:
        self._call("send_address", order_id, address)
        return self._order(order_id, address=address)

    async def settle_order(self, order_id: str, reference: str = "") -> OrderOut:
        self._call("settle_order", order_id)
        return self._order(order_id, state="completed", can=[])

    async def get_escrow(self, order_id: str) -> EscrowOut:
        self._call("get_escrow", order_id)
        return EscrowOut(order_id=order_id, state="none", can=[])

    # -- my listings -------------------------------------------------------------------------

    async def list_my_listings(self, **kw: Any) -> Page[ListingOut]:
        self._call("list_my_listings")
        return Page(items=list(self.mine))

    async def create_listing(self, fields: Mapping[str, Any] | ListingFields) -> ListingOut:
        self._call("create_listing", fields)
        try:
            body = msgspec.convert(fields, ListingFields)
        except msgspec.ValidationError as exc:
            raise validation(exc) from None
        if not is_category(body.category):
            raise ApiError(422, "urn:p2pmarket:problem:validation", "Invalid input",
                           "unknown category", [{"pointer": "/category",
                                                 "detail": f"unknown category {body.category!r}"}])
        item = listing(10 + len(self.mine), body.title, body.price.amount, publisher=ME,
                       mine=True, category=body.category, condition=body.condition)
        self.mine.append(item)
        return item

    async def edit_listing(self, listing_id: str, changes: Mapping[str, Any]) -> ListingOut:
        self._call("edit_listing", listing_id, changes)
        for n, item in enumerate(self.mine):
            if item.id == listing_id:
                price = changes.get("price")
                self.mine[n] = msgspec.structs.replace(
                    item, title=changes.get("title", item.title),
                    quantity=changes.get("quantity", item.quantity),
                    price=Price(price["amount"], price["currency"]) if price else item.price)
                return self.mine[n]
        raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found", "no such listing")

    async def delete_listing(self, listing_id: str) -> None:
        self._call("delete_listing", listing_id)
        self.mine = [i for i in self.mine if i.id != listing_id]
