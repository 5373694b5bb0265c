"""Market screen: a search box with filters and a results table that fills in as the network
answers (`listing.found` events re-read the node's cache); Enter opens a listing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast, get_args

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Footer, Header, Input, Select, Static

from p2pmarket.bodies import Condition
from p2pmarket.client import Event
from p2pmarket.client_schemas import SearchHit, SortOrder
from p2pmarket.taxonomy import TAXONOMY
from tui.base import BaseScreen
from tui.format import money, short, to_minor

if TYPE_CHECKING:
    from p2pmarket.bodies import Condition as ConditionT

SORTS: tuple[SortOrder, ...] = get_args(SortOrder)
CONDITIONS: tuple[str, ...] = get_args(Condition)


def category_options() -> list[tuple[str, str]]:
    options: list[tuple[str, str]] = []
    for top, subs in TAXONOMY.items():
        options.append((top, top))
        options.extend((f"  {sub}", f"{top}/{sub}") for sub in subs)
    return options


class MarketScreen(BaseScreen):
    BINDINGS = [
        Binding("slash", "focus_search", "Search", id="market.search"),
        Binding("ctrl+o", "cycle_sort", "Sort", id="market.sort"),
        Binding("ctrl+r", "search", "Refresh", id="market.refresh", show=False),
        Binding("ctrl+x", "clear_filters", "Clear", id="market.clear", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort: SortOrder = "relevance"
        self.hits: dict[str, SearchHit] = {}
        self.near: tuple[float, float] | None = None
        self.searched = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filters"):
            yield Input(placeholder="search the market…", id="q")
            yield Select(category_options(), prompt="category", id="category", compact=True)
            yield Input(placeholder="min", id="price-min", restrict=r"[0-9.]*")
            yield Input(placeholder="max", id="price-max", restrict=r"[0-9.]*")
            yield Select([(c, c) for c in CONDITIONS], prompt="condition", id="condition",
                         compact=True)
        table: DataTable[str] = DataTable(id="results", cursor_type="row", zebra_stripes=True)
        table.add_column("Title", key="title", width=28)
        table.add_column("Price", key="price", width=14)
        table.add_column("Condition", key="condition", width=9)
        table.add_column("Seller", key="seller", width=15)
        table.add_column("Dist", key="distance", width=6)
        yield table
        yield Static("Type words and press Enter to search.", id="market-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#q", Input).focus()

    def on_screen_resume(self) -> None:
        pass  # keep the results and cursor when coming back from a listing

    # -- search ----------------------------------------------------------------------------

    def filters(self) -> dict[str, Any]:
        """The search's keyword arguments; raises ValueError for a bad price."""
        category = self.query_one("#category", Select).value
        condition = self.query_one("#condition", Select).value
        lo = self.query_one("#price-min", Input).value.strip()
        hi = self.query_one("#price-max", Input).value.strip()
        return {
            "category": category if isinstance(category, str) else None,
            "condition": [cast("ConditionT", condition)] if isinstance(condition, str) else [],
            "price_min": to_minor(lo) if lo else None,
            "price_max": to_minor(hi) if hi else None,
            "near": self.near,
            "sort": self.sort,
        }

    def action_search(self) -> None:
        self.run_search("background")

    @work(exclusive=True, group="search")
    async def run_search(self, mode: str = "background") -> None:
        status = self.query_one("#market-status", Static)
        try:
            kw = self.filters()
        except ValueError as exc:
            self.notify(str(exc), title="Price filter", severity="error")
            return
        q = self.query_one("#q", Input).value.strip()
        self.searched = True
        if mode != "cache":
            status.update(f"Searching for {q!r}…" if q else "Searching…")
        page = await self.call(self.client.search(q, mode=cast(Any, mode), **kw), "Search")
        if page is None:
            status.update("Search failed; see the notification.")
            return
        self.show(page.items, page.total)

    def show(self, hits: list[SearchHit], total: int) -> None:
        table = self.query_one("#results", DataTable)
        current = None
        if table.row_count and table.cursor_row >= 0:
            current = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        table.clear()
        self.hits = {}
        for hit in hits:
            item = hit.listing
            key = f"{item.publisher}/{item.id}"
            self.hits[key] = hit
            dist = "—" if hit.distance_km is None else f"{hit.distance_km:.0f}km"
            table.add_row(item.title, money(item.price), item.condition,
                          short(item.publisher), dist, key=key)
        if current in self.hits:
            table.move_cursor(row=table.get_row_index(current))
        shown = f"{len(hits)} of {total}" if total > len(hits) else f"{len(hits)}"
        self.query_one("#market-status", Static).update(
            f"{shown} results · sort: {self.sort} · Enter opens · ctrl+o sorts")

    @on(Input.Submitted, "#filters Input")
    def _submitted(self) -> None:
        self.action_search()
        if self.query_one("#q", Input).has_focus:
            self.query_one("#results", DataTable).focus()

    @on(Select.Changed, "#filters Select")
    def _filter_changed(self) -> None:
        if self.searched:
            self.action_search()

    @on(DataTable.RowSelected, "#results")
    def _open(self, event: DataTable.RowSelected) -> None:
        hit = self.hits.get(str(event.row_key.value))
        if hit is not None:
            from tui.screens.listing import ListingScreen
            self.app.push_screen(ListingScreen(hit.listing))

    def action_focus_search(self) -> None:
        self.query_one("#q", Input).focus()

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.notify(f"Sorted by {self.sort}", timeout=2)
        self.action_search()

    def action_clear_filters(self) -> None:
        for name in ("#price-min", "#price-max"):
            self.query_one(name, Input).value = ""
        self.query_one("#category", Select).clear()
        self.query_one("#condition", Select).clear()

    def live(self, event: Event) -> None:
        if event.type == "listing.found" and self.searched:
            self.run_search("cache")
