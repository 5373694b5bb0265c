"""Market screen: a search box with filters (category tree, price, condition, radius around a
place) and a results table that fills in as the network answers; Enter opens a listing."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, cast, get_args

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Select, Static

from p2pmarket import geohash
from p2pmarket.api.schemas import SearchHit, SortOrder
from p2pmarket.client import ClientError, Event
from p2pmarket.wire.bodies import Condition
from tui.base import BaseScreen
from tui.format import money, plain, short, to_minor
from tui.widgets.category_tree import CategoryPicker, category_label
from tui.widgets.forms import FieldInvalid

if TYPE_CHECKING:
    from p2pmarket.wire.bodies import Condition as ConditionT

log = logging.getLogger(__name__)

SORTS: tuple[SortOrder, ...] = get_args(SortOrder)
CONDITIONS: tuple[str, ...] = get_args(Condition)
COLUMNS = (("title", "Title", 24), ("price", "Price", 14), ("condition", "Condition", 9),
           ("seller", "Seller", 15), ("distance", "Dist", 6))  # sort keys name their column
PAGE = 100  # results per page; more are read as the cursor nears the end of the table
MAX_PAGE = 500  # the API's largest page
MAX_RADIUS_KM = 20_000.0  # the API's bound: half the globe
TITLES = {"price-min": "Price filter", "price-max": "Price filter", "radius": "Radius",
          "near": "Location"}
NO_PLACE = ("needs a place to measure from: type a geohash or lat,lon after “km of” (ctrl+l), "
            "or set a location in your profile")


def parse_place(text: str) -> tuple[float, float]:
    """`u33db` (a geohash) or `52.52,13.40` -> (lat, lon), rounded so the API's `near` pattern
    (no exponent) holds; ValueError with a message for the user."""
    text = text.strip().lower()
    parts = [p for p in re.split(r"[,;\s]+", text) if p]
    if len(parts) == 2:
        try:
            lat, lon = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"{text!r} is not lat,lon (like 52.52,13.40)") from None
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(f"{text!r}: latitude is -90..90 and longitude -180..180")
    elif geohash.is_geohash(text):
        lat, lon = geohash.decode(text)
    else:
        raise ValueError(f"{text!r} is neither a geohash (like u33db) nor lat,lon")
    return round(lat, 4) + 0.0, round(lon, 4) + 0.0


def parse_radius(text: str) -> float | None:
    """`50` -> 50.0 km, empty -> None; ValueError with a message for the user."""
    text = text.strip()
    if not text:
        return None
    try:
        km = float(text)
    except ValueError:
        raise ValueError(f"radius {text!r} is not a number of km") from None
    if not 0 < km <= MAX_RADIUS_KM:
        raise ValueError(f"radius {text} km: give more than 0 and at most {MAX_RADIUS_KM:.0f}")
    return km


def distance(km: float | None) -> str:
    """A distance for the table: listings publish ~5 km cells, so no decimals."""
    if km is None:
        return "—"
    return "<1km" if km < 1 else f"{km:.0f}km"


class MarketScreen(BaseScreen):
    BINDINGS = [
        Binding("slash", "focus_search", "Search", id="market.search"),
        Binding("ctrl+t", "pick_category", "Category", id="market.category"),
        Binding("ctrl+g", "focus_radius", "Radius", id="market.radius"),
        Binding("ctrl+l", "focus_place", "Place", id="market.place"),
        Binding("ctrl+o", "cycle_sort", "Sort", id="market.sort"),
        Binding("ctrl+r", "search", "Refresh", id="market.refresh", show=False),
        Binding("ctrl+x", "clear_filters", "Clear", id="market.clear", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort: SortOrder = "relevance"
        self.hits: dict[str, SearchHit] = {}
        self.category: str | None = None
        self.categories: list[str] = []  # the node's taxonomy, read once
        self.home = ""  # my profile's geohash, the default place
        self.searched = False
        self.query_args: tuple[str, dict[str, Any]] = ("", {})  # the search shown
        self.next_token: str | None = None  # more results: read when the cursor nears the end
        self.total = 0

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="filter-bar"):
            with Horizontal(id="filters"):
                yield Input(placeholder="search the market…", id="q")
                yield Button(f"{category_label(None)} ▾", id="category", compact=True,
                             tooltip="Choose a category (ctrl+t)")
            with Horizontal(id="filters-more"):
                yield Label("price", classes="filter-label")
                yield Input(placeholder="min", id="price-min", restrict=r"[0-9.]*", compact=True)
                yield Label("–", classes="filter-sep")
                yield Input(placeholder="max", id="price-max", restrict=r"[0-9.]*", compact=True)
                yield Select([(c, c) for c in CONDITIONS], prompt="any condition",
                             id="condition", compact=True)
                yield Label("within", classes="filter-label")
                yield Input(placeholder="any", id="radius", restrict=r"[0-9.]*", compact=True)
                yield Label("km of", classes="filter-label")
                yield Input(placeholder="geohash/lat,lon", id="near", compact=True,
                            tooltip="Where distances are measured from: a geohash (u33db) or "
                                    "lat,lon; your profile's location by default (ctrl+l)")
        table: DataTable[str] = DataTable(id="results", cursor_type="row", zebra_stripes=True)
        self.add_columns(table)
        yield table
        yield Static("Type words and press Enter to search.", id="market-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#q", Input).focus()
        self.load_home()

    def on_screen_resume(self) -> None:
        pass  # keep the results and cursor when coming back from a listing

    @work(exclusive=True, group="market-home")
    async def load_home(self) -> None:
        """The default place: my profile's location, when I published one."""
        try:
            profile = await self.client.get_my_profile()
        except ClientError as exc:  # the app already says when the node is unreachable
            log.info("no default place from my profile: %s", exc)
            return
        if profile.location is None:
            return
        self.home = profile.location.geohash
        place = self.query_one("#near", Input)
        if not place.value:
            place.value = self.home
            if self.searched:  # a search ran before we knew: again, with distances
                self.action_search()

    # -- search ----------------------------------------------------------------------------

    def place(self) -> tuple[float, float] | None:
        """Where distances are measured from: the place box, or None when it is empty."""
        text = self.query_one("#near", Input).value.strip()
        if not text:
            return None
        try:
            return parse_place(text)
        except ValueError as exc:
            raise FieldInvalid("near", str(exc)) from None

    def filters(self) -> dict[str, Any]:
        """The search's keyword arguments; raises FieldInvalid naming the box at fault."""
        condition = self.query_one("#condition", Select).value
        prices: dict[str, int | None] = {}
        for name in ("price-min", "price-max"):
            text = self.query_one(f"#{name}", Input).value.strip()
            try:
                prices[name] = to_minor(text) if text else None
            except ValueError as exc:
                raise FieldInvalid(name, str(exc)) from None
        try:
            radius = parse_radius(self.query_one("#radius", Input).value)
        except ValueError as exc:
            raise FieldInvalid("radius", str(exc)) from None
        near = self.place()
        if near is None and radius is not None:
            raise FieldInvalid("near", f"A radius {NO_PLACE}.")
        if near is None and self.sort == "distance":
            raise FieldInvalid("near", f"Sorting by distance {NO_PLACE}.")
        return {
            "category": self.category,
            "condition": [cast("ConditionT", condition)] if isinstance(condition, str) else [],
            "price_min": prices["price-min"],
            "price_max": prices["price-max"],
            "near": near,
            "radius_km": radius,
            "sort": self.sort,
        }

    def action_search(self) -> None:
        self.run_search("background")

    @work(exclusive=True, group="search")
    async def run_search(self, mode: str = "background") -> None:
        status = self.query_one("#market-status", Static)
        for box in self.query("#filter-bar Input"):
            box.remove_class("-invalid")
        try:
            kw = self.filters()
        except FieldInvalid as exc:
            self.query_one(f"#{exc.field}", Input).add_class("-invalid")
            if mode != "cache":  # live refills stay quiet; the user saw it once
                self.notify(str(exc), title=TITLES[exc.field], severity="error")
                status.update(Text(f"{TITLES[exc.field]}: {exc}"))
                status.add_class("-error")
            return
        status.remove_class("-error")
        q = self.query_one("#q", Input).value.strip()
        self.searched = True
        if mode != "cache":
            status.update(Text(f"Searching for {q!r}…" if q else "Searching…"))
        # a live refill keeps as many rows as are shown, so the cursor stays where it is
        size = min(MAX_PAGE, max(PAGE, len(self.hits))) if mode == "cache" else PAGE
        page = await self.call(self.client.search(q, mode=cast(Any, mode), page_size=size,
                                                  **kw), "Search")
        if page is None:
            status.update("Search failed; see the notification.")
            return
        self.query_args, self.next_token, self.total = (q, kw), page.next_page_token, page.total
        self.show(page.items, kw)

    @work(exclusive=True, group="search-more")
    async def load_more(self) -> None:
        """The next page of the search shown (later pages come from the node's cache)."""
        token = self.next_token
        if token is None:
            return
        self.next_token = None  # one request at a time
        q, kw = self.query_args
        page = await self.call(self.client.search(q, mode="cache", page_size=PAGE,
                                                  page_token=token, **kw), "More results")
        if page is None or self.query_args != (q, kw):
            return  # failed (notified), or a new search replaced this one meanwhile
        self.next_token = page.next_page_token
        self.total = max(page.total, self.total)
        self.show(page.items, kw, append=True)

    def show(self, hits: list[SearchHit], kw: dict[str, Any], *, append: bool = False) -> None:
        table = self.query_one("#results", DataTable)
        current = None
        if not append:
            if table.row_count and table.cursor_row >= 0:
                current = table.coordinate_to_cell_key(
                    Coordinate(table.cursor_row, 0)).row_key.value
            table.clear(columns=True)  # the sorted column's header carries the arrow
            self.add_columns(table)
            self.hits = {}
        for hit in hits:
            item = hit.listing
            key = f"{item.publisher}/{item.id}"
            if key in self.hits:  # the cache changed between pages: shown once
                continue
            self.hits[key] = hit
            dist = distance(hit.distance_km)
            table.add_row(*plain(item.title, money(item.price), item.condition,
                                 short(item.publisher), dist), key=key)
        if current in self.hits:
            table.move_cursor(row=table.get_row_index(current))
        shown, total = len(self.hits), max(self.total, len(self.hits))
        count = f"{shown} of {total}" if total > shown else f"{shown}"
        parts = [f"{count} result{'' if total == 1 else 's'}"]
        if kw["category"]:
            parts.append("in " + kw["category"].replace("/", " › "))
        if kw["radius_km"] is not None:
            parts.append(f"within {kw['radius_km']:g} km")
        parts.append(f"sorted by {self.sort}")
        self.query_one("#market-status", Static).update(" · ".join(parts))

    def add_columns(self, table: DataTable[str]) -> None:
        for key, title, width in COLUMNS:
            table.add_column(f"{title} ▲" if key == self.sort else title, key=key, width=width)

    @on(Input.Submitted, "#filter-bar Input")
    def _submitted(self) -> None:
        self.action_search()
        if self.query_one("#q", Input).has_focus:
            self.query_one("#results", DataTable).focus()

    @on(Input.Changed, "#filter-bar Input")
    def _edited(self, event: Input.Changed) -> None:
        event.input.remove_class("-invalid")

    @on(Select.Changed, "#filter-bar Select")
    def _filter_changed(self) -> None:
        if self.searched:
            self.action_search()

    @on(DataTable.RowHighlighted, "#results")
    def _near_the_end(self, event: DataTable.RowHighlighted) -> None:
        if self.next_token is not None and event.cursor_row >= event.data_table.row_count - 5:
            self.load_more()

    @on(DataTable.RowSelected, "#results")
    def _open(self, event: DataTable.RowSelected) -> None:
        hit = self.hits.get(str(event.row_key.value))
        if hit is not None:
            from tui.screens.listing import ListingScreen
            self.app.push_screen(ListingScreen(hit.listing))

    # -- category ----------------------------------------------------------------------------

    @on(Button.Pressed, "#category")
    def _category_pressed(self) -> None:
        self.action_pick_category()

    def action_pick_category(self) -> None:
        self.open_picker()

    @work(exclusive=True, group="market-category")
    async def open_picker(self) -> None:
        # the node's taxonomy, not the one this TUI was built with: the node checks paths
        if not self.categories:
            paths = await self.call(self.client.list_categories(), "Categories")
            if not paths:
                return
            self.categories = paths
        self.app.push_screen(CategoryPicker(self.categories, self.category), self._chosen)

    def _chosen(self, path: str | None) -> None:
        if path is None:  # cancelled
            return
        self.category = path or None
        self.show_category()
        self.action_search()

    def show_category(self) -> None:
        button = self.query_one("#category", Button)
        button.label = f"{category_label(self.category)} ▾"
        button.refresh(layout=True)  # its width follows the label

    # -- other actions -----------------------------------------------------------------------

    def action_focus_search(self) -> None:
        self.query_one("#q", Input).focus()

    def action_focus_radius(self) -> None:
        self.query_one("#radius", Input).focus()

    def action_focus_place(self) -> None:
        self.query_one("#near", Input).focus()

    def action_cycle_sort(self) -> None:
        try:
            near = self.place()
        except FieldInvalid:
            near = None
        at = SORTS.index(self.sort)
        self.sort = SORTS[(at + 1) % len(SORTS)]
        if self.sort == "distance" and near is None:  # the status line says which sort
            self.sort = SORTS[(at + 2) % len(SORTS)]
            self.notify("Sorting by distance needs a place: type one after “km of” (ctrl+l).",
                        title="Sort", timeout=4)
        self.action_search()

    def action_clear_filters(self) -> None:
        for name in ("#price-min", "#price-max", "#radius"):
            self.query_one(name, Input).value = ""
        self.query_one("#near", Input).value = self.home
        self.query_one("#condition", Select).clear()  # searches again when it changed
        self.category = None
        self.show_category()
        if self.sort == "distance" and not self.home:
            self.sort = "relevance"
        if self.searched:
            self.action_search()

    def live(self, event: Event) -> None:
        if event.type == "listing.found" and self.searched:
            self.run_search("cache")
