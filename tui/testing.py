"""A fake of `p2pmarket.client.Client` for the TUI's tests: fixed wire objects, in-memory state
for the actions, and a list of calls made. `make_app(FakeClient())` gives a deterministic app."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any

import msgspec
from PIL import Image, ImageDraw

from p2pmarket import geohash
from p2pmarket.api.schemas import (
    ArbiterOut,
    ChainStatusOut,
    DhtStatusOut,
    ImageRef,
    ListingFields,
    ListingOut,
    NodeStatus,
    OwnRecordOut,
    Page,
    PeerOut,
    ProfileFields,
    ProfileOut,
    ReviewOut,
    SearchHit,
    SearchPage,
)
from p2pmarket.api.schemas_trade import (
    AddressOut,
    ArbiterFields,
    CaseFileOut,
    CaseStepOut,
    ChatOut,
    ConversationOut,
    DisputeOut,
    EscrowOut,
    ListingRefOut,
    OfferOut,
    Opened,
    OrderOut,
    OutboxOut,
    ProposalOut,
    RulingOut,
    ShippedOut,
    StatementOut,
    StepOut,
    WalletOut,
)
from p2pmarket.api.wallet import SendOut, SendPreviewOut, WalletTxOut, WalletTxPage
from p2pmarket.client import ApiError, Event, NodeUnreachable
from p2pmarket.taxonomy import all_paths, is_category
from p2pmarket.wire.bodies import EscrowTerms, Location, Mime, Price, ShippingOption

ME = "12D3KooWMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMe"
SELLER = "12D3KooWSe11erSe11erSe11erSe11erSe11erSe11erSe11er"
BUYER = "12D3KooWBuyerBuyerBuyerBuyerBuyerBuyerBuyerBuyerBuy"
CREATED = 1_750_000_000
HASH = "ab" * 32


def png(n: int) -> bytes:
    """A small PNG made with Pillow: a phone on a ground of the nth colour."""
    picture = Image.new("RGB", (48, 64), ((230, 120, 40), (60, 160, 90), (70, 90, 200))[n % 3])
    draw = ImageDraw.Draw(picture)
    draw.rounded_rectangle((12, 6, 36, 58), radius=5, fill=(25, 25, 25))
    draw.rectangle((15, 11, 33, 51), fill=(150, 210, 240))
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def image_ref(n: int) -> ImageRef:
    """The ref of `png(n)`; its hash names the picture, not the bytes the zlib build makes."""
    return ImageRef(sha256=hashlib.sha256(f"picture {n}".encode()).hexdigest(), mime="image/png",
                    size=len(png(n)))


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


def dispute_case() -> DisputeOut:
    """A dispute the fake node arbitrates: both logs arrived, the buyer says it never came."""
    def steps(party: str, kinds: list[str]) -> CaseFileOut:
        return CaseFileOut(
            party=party, head=("ee" if party == "buyer" else "ef") * 32,  # type: ignore[arg-type]
            steps=[CaseStepOut(index=i, by="seller" if k in ("shipped",) else "buyer",
                               at_ms=(CREATED + i * 86400) * 1000, kind=k)
                   for i, k in enumerate(kinds)],
            listing_title="Fairphone 4, 256 GB", listing_description="A fairphone 4, works.",
            listing_matches=True, received=CREATED + 4 * 86400)
    return DisputeOut(
        order_id="order-0042", state="disputed", amount_sat=250_000, max_fee_sat=3_500,
        buyer=BUYER, seller=SELLER, opened_by="buyer", heard=["buyer", "seller"],
        ruling_due=CREATED + 7 * 86400, can_rule=True, network_fee_min_sat=110,
        network_fee_max_sat=20_000,
        statements=[
            StatementOut(by="buyer", kind="dispute_opened", text="Nothing arrived in 3 weeks.",
                         attachments=[]),
            StatementOut(by="seller", kind="evidence", text="Shipped with DHL, 00340434.",
                         attachments=[HASH])],
        cases=[steps("buyer", ["opened", "address", "paid"]),
               steps("seller", ["opened", "address", "paid", "shipped"])],
        ruling=None)


class FakeClient:
    """Implements the client methods the TUI calls; `calls` records (name, args)."""

    def __init__(self, *, events: Iterable[Event] = (), unreachable: bool = False,
                 escrow: bool = True) -> None:
        now = time.time()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.unreachable = unreachable
        self.events_to_send = list(events)
        self.market = [
            listing(1, "Fairphone 4, 256 GB", 34900),
            listing(2, "Pixel 7a with case", 27500, condition="like-new"),
            listing(3, "Nokia 3310 (2000)", 2500, condition="fair", publisher=BUYER),
            msgspec.structs.replace(  # in Munich, ~500 km from the others: radius filters it
                listing(4, "Gravel bike, 54 cm", 89000, category="sports/bikes"),
                location=Location("DE", "u281z")),
        ]
        self.mine = [listing(9, "Road bike, 56 cm", 42000, publisher=ME, mine=True,
                             category="sports/bikes")]
        self.images = {image_ref(n).sha256: png(n) for n in (1, 2)}  # what get_image finds
        self.market[0] = msgspec.structs.replace(self.market[0],
                                                 images=[image_ref(1), image_ref(2)])
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
        self.escrow_on = escrow
        self.confirmed_sat = 150_000
        self.addresses = 0
        self.wallet_txs = [WalletTxOut(
            txid="ab" * 32, direction="in", net_sat=150_000, sent_sat=0, received_sat=150_000,
            fee_sat=None, confirmations=12, height=1192, time=CREATED)]
        self.inquiries: list[ConversationOut] = []
        self.escrows = {"order-0001": EscrowOut(
            order_id="order-0001", state="funded", address="bcrt1qescrowaddressfake0000000000",
            amount_sat=400_000, funding_txid="cd" * 32, deadline=None,
            can=["refund", "dispute"])}
        self.advert: ArbiterOut | None = ArbiterOut(
            peer=ME, name="Fair Fred", description="English, German. Rules within a day.",
            fee_percent_bp=100, fee_fixed_sat=1000, expires=CREATED + 30 * 86400)
        self.disputes = [dispute_case()]
        self.my_profile = ProfileOut(peer=ME, found=True, name="Me, a seller",
                                     bio="Bikes and parts, Berlin.",
                                     location=Location("DE", "u33db"), seq=1, reviews=2,
                                     rating=4.5, avatar=image_ref(2))
        self.records = [  # what GET /records answers: one listing that no DHT node stored
            OwnRecordOut(kind="profile", id="", key="01" * 20, seq=2,
                         expires=CREATED + 30 * 86400, published_at=CREATED + 60),
            OwnRecordOut(kind="listing", id=self.mine[0].id, key="02" * 20, seq=1,
                         expires=CREATED + 30 * 86400, published_at=None,
                         error="no DHT node stored it (no peers)"),
            OwnRecordOut(kind="review", id="order-0001", key="03" * 20, seq=1,
                         expires=CREATED + 365 * 86400, published_at=CREATED + 120)]
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
                                                            bootstrapped=True,
                                                            bootstrap_addrs=2),
                          chain=ChainStatusOut(network="regtest",
                                               backend="http://127.0.0.1:3002",
                                               tip_height=1203) if self.escrow_on else None,
                          connected_peers=3, my_listings=1, cached_listings=3, offers=1,
                          orders=1, escrow=self.escrow_on)

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

    async def get_wallet(self, *, refresh: bool = False) -> WalletOut:
        self._call("get_wallet", refresh)
        return WalletOut(network="regtest", confirmed_sat=self.confirmed_sat, pending_sat=0,
                         synced_at=time.time() - 30)

    async def new_receive_address(self) -> AddressOut:
        self._call("new_receive_address")
        self.addresses += 1
        return AddressOut(address=f"bcrt1qfakereceive{self.addresses:04d}000000000000000000000")

    async def list_wallet_transactions(self, **kw: Any) -> WalletTxPage:
        self._call("list_wallet_transactions")
        return WalletTxPage(items=list(self.wallet_txs))

    def _payment(self, address: str, sats: int | None, fee_rate: int | None
                 ) -> SendPreviewOut:
        if not address.startswith("bcrt1"):
            raise ApiError(422, "urn:p2pmarket:problem:validation", "Invalid input",
                           "not a valid regtest address",
                           [{"pointer": "/address", "detail": "not a valid regtest address"}])
        rate = fee_rate or 2
        fee = 141 * rate
        amount = self.confirmed_sat - fee if sats is None else sats
        if amount + fee > self.confirmed_sat:
            raise ApiError(409, "urn:p2pmarket:problem:insufficient-funds",
                           "The wallet's confirmed coins do not cover it",
                           f"{self.confirmed_sat} sat confirmed do not cover it")
        return SendPreviewOut(address=address, network="regtest", amount_sat=amount,
                              fee_sat=fee, fee_rate_sat_vb=rate, total_sat=amount + fee,
                              change_sat=self.confirmed_sat - amount - fee, vsize=141,
                              spendable_sat=self.confirmed_sat, sweep=sats is None)

    async def preview_wallet_send(self, address: str, amount_sat: int | None = None, *,
                                  sweep: bool = False, fee_rate_sat_vb: int | None = None,
                                  idempotency_key: str | None = None) -> SendPreviewOut:
        self._call("preview_wallet_send", address, amount_sat, sweep, fee_rate_sat_vb)
        return self._payment(address, amount_sat, fee_rate_sat_vb)

    async def send_from_wallet(self, address: str, amount_sat: int, *, max_fee_sat: int,
                               fee_rate_sat_vb: int | None = None,
                               idempotency_key: str | None = None) -> SendOut:
        self._call("send_from_wallet", address, amount_sat, max_fee_sat, idempotency_key)
        p = self._payment(address, amount_sat, fee_rate_sat_vb)
        if p.fee_sat > max_fee_sat:
            raise ApiError(409, "urn:p2pmarket:problem:fee-changed", "Fee changed")
        txid = hashlib.sha256(f"{idempotency_key}".encode()).hexdigest()
        if all(t.txid != txid for t in self.wallet_txs):
            self.confirmed_sat -= p.total_sat
            self.wallet_txs.insert(0, WalletTxOut(
                txid=txid, direction="out", net_sat=-p.total_sat, sent_sat=p.total_sat,
                received_sat=p.change_sat, fee_sat=p.fee_sat, confirmations=0, height=None,
                time=int(time.time()), address=address))
        return SendOut(txid=txid, address=address, amount_sat=p.amount_sat, fee_sat=p.fee_sat,
                       total_sat=p.total_sat, change_sat=p.change_sat,
                       fee_rate_sat_vb=p.fee_rate_sat_vb, idempotency_key=idempotency_key)

    # -- market ------------------------------------------------------------------------------

    async def search(self, q: str = "", **kw: Any) -> SearchPage:
        self._call("search", q, kw)
        words = q.lower().split()
        near, radius, category = kw.get("near"), kw.get("radius_km"), kw.get("category")
        if kw.get("sort") == "distance" and near is None:  # the API's 422
            raise ApiError(422, "urn:p2pmarket:problem:validation", "Invalid input",
                           "sort=distance needs near", [{"parameter": "sort",
                                                         "detail": "give near=lat,lon"}])

        def distance(item: ListingOut) -> float | None:
            return None if near is None else geohash.distance_km(
                near, geohash.decode(item.location.geohash))
        hits = [SearchHit(listing=item, distance_km=distance(item),
                          rank=1.0) for item in self.market
                if all(w in item.title.lower() for w in words)
                and (not kw.get("condition") or item.condition in kw["condition"])
                and (kw.get("price_max") is None or item.price.amount <= kw["price_max"])
                and (not category or f"{item.category}/".startswith(f"{category}/"))
                and (near is None or radius is None or (distance(item) or 0.0) <= radius)]
        if kw.get("sort") == "price":
            hits.sort(key=lambda h: h.listing.price.amount)
        elif kw.get("sort") == "distance":
            hits.sort(key=lambda h: h.distance_km or 0.0)
        size, start = kw.get("page_size") or 50, int(kw.get("page_token") or 0)
        more = str(start + size) if start + size < len(hits) else None
        return SearchPage(items=hits[start:start + size], total=len(hits),
                          next_page_token=more)

    async def list_categories(self) -> list[str]:
        self._call("list_categories")
        return all_paths()

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

    async def list_conversations(self, **kw: Any) -> Page[ConversationOut]:
        self._call("list_conversations")
        out = []
        for o in self.offers:
            chat = self.messages.get(o.id, [])
            out.append(ConversationOut(
                id=o.id, peer=o.seller if o.role == "buyer" else o.buyer,
                listing_id=o.listing.id, title=o.title, offer_state=o.state,
                messages=len(chat), last=chat[-1] if chat else None))
        return Page(items=out + list(self.inquiries))

    async def start_conversation(self, seller: str, listing_id: str, text: str
                                 ) -> ConversationOut:
        self._call("start_conversation", seller, listing_id, text)
        item = next((i for i in self.market if i.id == listing_id and i.publisher == seller),
                    None)
        if item is None:
            raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found",
                           f"no listing {listing_id} of that seller is known")
        chat = ChatOut(sender=ME, mine=True, text=text, at=time.time(), delivery="queued")
        conv = ConversationOut(id=f"ask-{len(self.inquiries) + 1:04d}", peer=seller,
                               listing_id=listing_id, title=item.title, offer_state=None,
                               messages=1, last=chat, kind="inquiry")
        self.inquiries.append(conv)
        self.messages[conv.id] = [chat]
        return conv

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
        escrow = self.escrows.get(order_id)
        if escrow is None:  # like the node: no escrow was proposed for this order
            raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found",
                           f"no escrow for order {order_id}")
        return escrow

    def _escrow(self, order_id: str, **changes: Any) -> EscrowOut:
        escrow = self.escrows.get(order_id)
        if escrow is None:
            raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found", "no escrow")
        self.escrows[order_id] = msgspec.structs.replace(escrow, **changes)
        return self.escrows[order_id]

    async def fund_escrow(self, order_id: str, **kw: Any) -> EscrowOut:
        self._call("fund_escrow", order_id)
        if order_id not in self.escrows:  # the buyer proposes it; its node pays once agreed
            self.escrows[order_id] = EscrowOut(order_id=order_id, state="proposed", can=[])
            return self.escrows[order_id]
        return self._escrow(order_id, state="funded", can=["release", "dispute"])

    async def release_escrow(self, order_id: str) -> EscrowOut:
        self._call("release_escrow", order_id)
        return self._escrow(order_id, can=["dispute"])

    async def refund_escrow(self, order_id: str) -> EscrowOut:
        self._call("refund_escrow", order_id)
        return self._escrow(order_id, can=["dispute"])

    async def open_dispute(self, order_id: str, reason: str) -> EscrowOut:
        self._call("open_dispute", order_id, reason)
        return self._escrow(order_id, state="disputed", can=["evidence", "accept-ruling"])

    async def add_evidence(self, order_id: str, text: str) -> EscrowOut:
        self._call("add_evidence", order_id, text)
        return self._escrow(order_id)

    async def accept_ruling(self, order_id: str) -> EscrowOut:
        self._call("accept_ruling", order_id)
        return self._escrow(order_id, state="resolved", can=[])

    async def review_order(self, order_id: str, stars: int, text: str = "") -> ReviewOut:
        self._call("review_order", order_id, stars, text)
        if not 1 <= stars <= 5:
            raise ApiError(422, "urn:p2pmarket:problem:validation", "Invalid input",
                           "Expected `int` <= 5", [{"pointer": "/stars",
                                                   "detail": "Expected `int` <= 5"}])
        return ReviewOut(seller=SELLER, order_id=order_id, rating=stars, text=text,
                         created=CREATED, rating_key=HASH)

    # -- arbitration -------------------------------------------------------------------------

    async def get_arbiter_advert(self) -> ArbiterOut:
        self._call("get_arbiter_advert")
        if not self.escrow_on:
            raise ApiError(501, "urn:p2pmarket:problem:not-implemented", "Not implemented",
                           "escrow and wallet are not available on this node")
        if self.advert is None:
            raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found",
                           "this node does not arbitrate")
        return self.advert

    async def publish_arbiter_advert(self, fields: ArbiterFields) -> ArbiterOut:
        self._call("publish_arbiter_advert", fields)
        self.advert = ArbiterOut(peer=ME, name=fields.name, description=fields.description,
                                 fee_percent_bp=fields.fee_percent_bp,
                                 fee_fixed_sat=fields.fee_fixed_sat, expires=CREATED + 30 * 86400)
        return self.advert

    async def withdraw_arbiter_advert(self) -> None:
        self._call("withdraw_arbiter_advert")
        self.advert = None

    async def list_disputes(self, **kw: Any) -> Page[DisputeOut]:
        self._call("list_disputes")
        if not self.escrow_on:
            raise ApiError(501, "urn:p2pmarket:problem:not-implemented", "Not implemented",
                           "escrow and wallet are not available on this node")
        return Page(items=list(self.disputes))

    async def rule_case(self, order_id: str, buyer_sat: int, seller_sat: int,
                        note: str = "") -> DisputeOut:
        self._call("rule_case", order_id, buyer_sat, seller_sat, note)
        for n, d in enumerate(self.disputes):
            if d.order_id == order_id:
                fee = d.max_fee_sat
                self.disputes[n] = msgspec.structs.replace(
                    d, state="resolved", can_rule=False,
                    ruling=RulingOut(buyer_sat=buyer_sat, seller_sat=seller_sat, fee_sat=fee,
                                     note=note))
                return self.disputes[n]
        raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found", "no such dispute")

    async def get_my_profile(self) -> ProfileOut:
        self._call("get_my_profile")
        return self.my_profile

    async def list_my_records(self, **kw: Any) -> Page[OwnRecordOut]:
        self._call("list_my_records", kw)
        return Page(items=list(self.records))

    async def put_my_profile(self, fields: Mapping[str, Any]) -> ProfileOut:
        self._call("put_my_profile", fields)
        try:
            body = msgspec.convert(fields, ProfileFields)
        except msgspec.ValidationError as exc:
            raise validation(exc) from None
        self.my_profile = ProfileOut(peer=ME, found=True, name=body.name, bio=body.bio,
                                     location=body.location, avatar=body.avatar, seq=2,
                                     reviews=2, rating=4.5)
        return self.my_profile

    # -- images ------------------------------------------------------------------------------

    async def get_image(self, sha256: str, *, peer: str | None = None) -> bytes:
        self._call("get_image", sha256, peer)
        if sha256 not in self.images:
            raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found",
                           "this node does not have that image")
        return self.images[sha256]

    async def upload_image(self, data: bytes, mime: Mime) -> ImageRef:
        self._call("upload_image", data, mime)
        sha = hashlib.sha256(data).hexdigest()
        self.images[sha] = data
        return ImageRef(sha256=sha, mime=mime, size=len(data))

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
        item = msgspec.structs.replace(item, images=list(body.images))
        self.mine.append(item)
        return item

    async def edit_listing(self, listing_id: str, changes: Mapping[str, Any]) -> ListingOut:
        self._call("edit_listing", listing_id, changes)
        for n, item in enumerate(self.mine):
            if item.id == listing_id:
                price = changes.get("price")
                if "category" in changes and not is_category(changes["category"]):
                    raise ApiError(422, "urn:p2pmarket:problem:validation", "Invalid input",
                                   "unknown category",
                                   [{"pointer": "/category",
                                     "detail": f"unknown category {changes['category']!r}"}])
                self.mine[n] = msgspec.structs.replace(
                    item, title=changes.get("title", item.title),
                    category=changes.get("category", item.category),
                    condition=changes.get("condition", item.condition),
                    description=changes.get("description", item.description),
                    quantity=changes.get("quantity", item.quantity),
                    images=msgspec.convert(changes.get("images", item.images), list[ImageRef]),
                    price=Price(price["amount"], price["currency"]) if price else item.price)
                return self.mine[n]
        raise ApiError(404, "urn:p2pmarket:problem:not-found", "Not found", "no such listing")

    async def delete_listing(self, listing_id: str) -> None:
        self._call("delete_listing", listing_id)
        self.mine = [i for i in self.mine if i.id != listing_id]
