"""Sell screen: my listings, with a create form (inline errors from the API's 422 problem
details, image files checked and uploaded first), an edit form and delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

from textual.binding import Binding

from p2pmarket.api.schemas import ImageRef, ListingOut
from p2pmarket.taxonomy import all_paths
from p2pmarket.wire.bodies import Condition, Currency
from tui.base import ListDetailScreen
from tui.format import money, to_int, to_minor
from tui.widgets.forms import Field, FieldInvalid
from tui.widgets.images import read_image_files

if TYPE_CHECKING:
    from p2pmarket.client import Client

IMAGES_HINT = "~/photos/front.jpg, back.png"


def listing_fields(values: dict[str, str]) -> dict[str, Any]:
    """The create form's values as the API's `ListingFields` (the API validates the rest)."""
    currency = values["currency"]
    try:
        amount = to_minor(values["price"], currency) if values["price"].strip() else -1
    except ValueError as exc:
        raise FieldInvalid("price", str(exc)) from None
    try:
        quantity = to_int(values["quantity"] or "1", "a quantity")
    except ValueError as exc:
        raise FieldInvalid("quantity", str(exc)) from None
    return {
        "title": values["title"].strip(),
        "price": {"amount": amount, "currency": currency},
        "category": values["category"].strip(),
        "condition": values["condition"],
        "quantity": quantity,
        "location": {"country": values["country"].strip().upper(),
                     "geohash": values["geohash"].strip().lower()},
        "description": values["description"],
        "shipping": [{"region": values["country"].strip().upper() or "worldwide", "price": 0,
                      "days_min": 1, "days_max": 7}],
    }


async def upload_images(client: Client, text: str) -> list[ImageRef]:
    """The form's comma-separated image files, all checked first (a bad one is the `images`
    field's error and nothing is uploaded), then uploaded to the node in order."""
    try:
        files = await read_image_files(text)
    except ValueError as exc:
        raise FieldInvalid("images", str(exc)) from None
    return [await client.upload_image(data, mime) for data, mime in files]


class SellScreen(ListDetailScreen[ListingOut]):
    NOTICE = "Sell"
    TABLE_ID = "my-listings"
    COLUMNS = (("Title", "title", 26), ("Price", "price", 14), ("Qty", "qty", 4),
               ("Category", "category", 16), ("Cond.", "condition", 9))
    DETAIL_ID = "sell-status"  # a status line: what the keys do, not the listing itself
    EMPTY = "You sell nothing yet: press n to create a listing."
    BINDINGS = [
        Binding("n", "new", "New", id="sell.new"),
        Binding("e", "edit", "Edit", id="sell.edit"),
        Binding("delete", "delete", "Delete", id="sell.delete"),
        Binding("r", "refresh", "Refresh", id="sell.refresh"),
    ]

    async def rows(self) -> list[ListingOut] | None:
        page = await self.call(self.client.list_my_listings(page_size=200), "My listings")
        return None if page is None else page.items

    def key(self, item: ListingOut) -> str:
        return item.id

    def cells(self, item: ListingOut) -> tuple[object, ...]:
        return item.title, money(item.price), item.quantity, item.category, item.condition

    async def detail(self, item: ListingOut) -> str:
        return f"{len(self.items)} listing(s) · n: new · e: edit · del: delete"

    def action_new(self) -> None:
        async def submit(values: dict[str, str]) -> None:
            fields = listing_fields(values)
            fields["images"] = await upload_images(self.client, values["images"])
            await self.client.create_listing(fields)

        self.open_form("New listing", [
            Field("title", "Title"),
            Field("price", "Price", placeholder="12.50"),
            Field("currency", "Currency", "EUR", choices=get_args(Currency),
                  api="price/currency"),
            Field("category", "Category", placeholder="type: electronics/phones, home, …",
                  suggest=all_paths()),
            Field("condition", "Condition", "good", choices=get_args(Condition)),
            Field("quantity", "Quantity", "1"),
            Field("country", "Country", placeholder="DE", api="location/country"),
            Field("geohash", "Geohash", placeholder="u33db", api="location/geohash"),
            Field("description", "Description"),
            Field("images", "Images", placeholder=IMAGES_HINT),
        ], submit, "Listing published.")

    def action_edit(self) -> None:
        item = self.current
        if item is None:
            return
        currency = item.price.currency

        async def submit(values: dict[str, str]) -> None:
            try:
                amount = to_minor(values["price"], currency)
            except ValueError as exc:
                raise FieldInvalid("price", str(exc)) from None
            try:
                quantity = to_int(values["quantity"], "a quantity")
            except ValueError as exc:
                raise FieldInvalid("quantity", str(exc)) from None
            changes: dict[str, Any] = {"title": values["title"], "quantity": quantity,
                                       "price": {"amount": amount, "currency": currency},
                                       "category": values["category"].strip(),
                                       "condition": values["condition"],
                                       "description": values["description"]}
            if values["images"].strip():  # empty keeps the listing's images
                changes["images"] = await upload_images(self.client, values["images"])
            await self.client.edit_listing(item.id, changes)

        self.open_form(f"Edit {item.title}", [
            Field("title", "Title", item.title),
            Field("price", f"Price {currency}", money(item.price).split()[0]),
            Field("quantity", "Quantity", str(item.quantity)),
            Field("category", "Category", item.category, suggest=all_paths()),
            Field("condition", "Condition", item.condition, choices=get_args(Condition)),
            Field("description", "Description", item.description),
            Field("images", "Images", placeholder=(
                f"{len(item.images)} kept; files given here replace them" if item.images
                else IMAGES_HINT)),
        ], submit, "Listing updated.")

    def action_delete(self) -> None:
        item = self.current
        if item is None:
            return

        async def submit(_values: dict[str, str]) -> None:
            await self.client.delete_listing(item.id)

        self.open_form(f"Delete {item.title}?", [], submit, "Listing deleted.")
