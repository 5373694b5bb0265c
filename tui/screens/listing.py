"""Listing screen: one listing's details, its seller's profile, rating and latest reviews, a
preview of its images (`[` and `]` step through them), with "make offer" and "message seller"
(messages travel in the negotiation's conversation)."""

from __future__ import annotations

from datetime import UTC, datetime

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Header, Static

from p2pmarket.api.schemas import ListingOut, ProfileOut, ReviewOut
from p2pmarket.api.schemas_trade import OfferOut
from tui.base import BaseScreen
from tui.format import esc, money, short, to_int, to_minor
from tui.widgets.forms import Field, FieldInvalid, FormScreen
from tui.widgets.images import ImagePreview


def listing_text(item: ListingOut) -> str:
    ships = esc(", ".join(o.region for o in item.shipping) or "pickup only")
    when = datetime.fromtimestamp(item.created, UTC).strftime("%Y-%m-%d")
    lines = [
        f"[b]{esc(item.title)}[/b]",
        f"[b]{money(item.price)}[/b] · {item.condition} · {item.quantity} available",
        f"{item.category} · {item.location.country} ({item.location.geohash}) · listed {when}",
        f"Ships to: {ships}",
        "",
        esc(item.description) if item.description else "[dim](no description)[/dim]",
    ]
    if item.tags:
        lines += ["", "Tags: " + esc(", ".join(item.tags))]
    return "\n".join(lines)


def seller_text(peer: str, profile: ProfileOut | None, reviews: list[ReviewOut]) -> str:
    if profile is None:
        return f"Seller {short(peer)}: loading…"
    name = esc(profile.name or "(no profile)")
    rating = (f"★ {profile.rating:.1f} from {profile.reviews} review(s)"
              if profile.rating is not None else "no reviews yet")
    lines = [f"[b]Seller[/b] {name} · {short(peer)} · {rating}"]
    if profile.bio:
        lines.append(esc(profile.bio))
    for review in reviews[:3]:
        lines.append(f"  {'★' * review.rating}{'☆' * (5 - review.rating)} {esc(review.text)}")
    return "\n".join(lines)


class ListingScreen(BaseScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="listing.back"),
        Binding("o", "offer", "Make offer", id="listing.offer"),
        Binding("m", "message", "Message", id="listing.message"),
        Binding("left_square_bracket", "step_image(-1)", "Prev image", id="listing.prev_image"),
        Binding("right_square_bracket", "step_image(1)", "Next image", id="listing.next_image"),
        Binding("r", "refresh", "Refresh", id="listing.refresh"),
    ]

    def __init__(self, listing: ListingOut) -> None:
        super().__init__()
        self.listing = listing
        self.profile: ProfileOut | None = None
        self.reviews: list[ReviewOut] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="listing-main"):
            with VerticalScroll(id="listing-body"):
                yield Static(listing_text(self.listing), id="listing-details")
                yield Static(seller_text(self.listing.publisher, None, []), id="listing-seller")
            yield ImagePreview(self.client, self.listing.images, self.listing.publisher,
                               id="listing-images")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.load_seller()

    def reload(self) -> None:
        pass

    def action_refresh(self) -> None:
        self.load_listing()
        self.load_seller()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "step_image":  # only a listing with images to step through has the keys
            return len(self.listing.images) > 1
        return True

    def action_step_image(self, delta: int) -> None:
        self.query_one("#listing-images", ImagePreview).step(delta)

    @work(exclusive=True, group="listing")
    async def load_listing(self) -> None:
        item = await self.call(self.client.get_listing(
            self.listing.publisher, self.listing.id, refresh=True), "Listing")
        if item is not None:
            self.listing = item
            self.query_one("#listing-details", Static).update(listing_text(item))
            self.query_one("#listing-images", ImagePreview).set_images(item.images,
                                                                       item.publisher)
            self.refresh_bindings()

    @work(exclusive=True, group="seller")
    async def load_seller(self) -> None:
        peer = self.listing.publisher
        profile = await self.call(self.client.get_profile(peer), "Seller profile")
        page = await self.call(self.client.list_reviews(peer, page_size=5), "Reviews")
        self.profile = profile or ProfileOut(peer=peer, found=False)
        self.reviews = page.items if page else []
        self.query_one("#listing-seller", Static).update(
            seller_text(peer, self.profile, self.reviews))

    def action_offer(self) -> None:
        item = self.listing
        if item.mine:
            self.notify("This is your own listing.", severity="warning")
            return
        currency = item.price.currency

        async def submit(values: dict[str, str]) -> None:
            try:
                amount = to_minor(values["amount"], currency)
            except ValueError as exc:
                raise FieldInvalid("amount", str(exc)) from None
            try:
                quantity = to_int(values["quantity"], "a quantity")
            except ValueError as exc:
                raise FieldInvalid("quantity", str(exc)) from None
            await self.client.make_offer(item.publisher, item.id, amount, quantity=quantity,
                                         note=values["note"])

        fields = [
            Field("amount", f"Total {currency}", money(item.price).split()[0]),
            Field("quantity", "Quantity", "1"),
            Field("note", "Note", placeholder="optional message to the seller"),
        ]
        self.app.push_screen(
            FormScreen(f"Offer on {item.title}", fields, submit,
                       note=f"Asking {money(item.price)} each; shipping included in the total."),
            self._offer_done)

    def _offer_done(self, sent: bool | None) -> None:
        if sent:
            self.notify("Offer sent; follow it in the Inbox (F3).", title="Offer")

    def action_message(self) -> None:
        self.send_message()

    @work(exclusive=True, group="message")
    async def send_message(self) -> None:
        """In the negotiation on this listing if there is one, else in the questions asked
        before any offer (a new conversation with the seller the first time)."""
        item = self.listing
        if item.mine:
            self.notify("This is your own listing.", severity="warning")
            return
        offers = await self.call(self.client.list_offers(page_size=200), "Offers")
        talks = await self.call(self.client.list_conversations(page_size=200), "Conversations")
        if offers is None or talks is None:
            return
        mine: list[OfferOut] = [o for o in offers.items if o.listing.id == item.id
                                and item.publisher in (o.seller, o.buyer)]
        asked = [c for c in talks.items if c.kind == "inquiry" and c.listing_id == item.id
                 and c.peer == item.publisher]
        if mine:
            offer = max(mine, key=lambda o: o.updated)
            conversation: str | None = offer.id
            title, note = f"Message about {offer.title}", "Goes with your negotiation."
        else:
            conversation = asked[0].id if asked else None
            title = f"Ask the seller about {item.title}"
            note = "Before any offer; the seller answers in your Inbox (F3)."

        async def submit(values: dict[str, str]) -> None:
            if not values["text"].strip():
                raise FieldInvalid("text", "write something first")
            if conversation is None:
                await self.client.start_conversation(item.publisher, item.id, values["text"])
            else:
                await self.client.send_message(conversation, values["text"])

        self.app.push_screen(FormScreen(title, [Field("text", "Message")], submit,
                                        note=note, submit_label="Send"),
                             lambda sent: self.notify("Message queued.") if sent else None)
