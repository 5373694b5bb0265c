"""What every TUI screen shares: the API client of the app, API calls whose errors become
notifications, and a hook for live events from the node's SSE stream; and the list-and-detail
screen shape (a table of items, the chosen one's detail below)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from p2pmarket.client import ClientError, Event
from tui.format import describe_error, plain
from tui.widgets.forms import Field, FormScreen, Submit
from tui.widgets.nav import NavBar

if TYPE_CHECKING:
    from rich.console import RenderableType

    from p2pmarket.client import Client

log = logging.getLogger(__name__)
T = TypeVar("T")
ItemT = TypeVar("ItemT")


async def guarded(owner: Any, call: Awaitable[T], what: str = "") -> T | None:
    """Await an API call; a client error becomes an error notification and None."""
    try:
        return await call
    except ClientError as exc:
        log.info("%s failed: %s", what or "API call", exc)
        owner.notify(describe_error(exc), title=what or "Error", severity="error", timeout=8,
                     markup=False)
        return None


def data_table(table_id: str, columns: tuple[tuple[str, str, int], ...]) -> DataTable[str]:
    """A row-cursor table with (label, key, width) columns, as the list screens show."""
    table: DataTable[str] = DataTable(id=table_id, cursor_type="row", zebra_stripes=True)
    for label, key, width in columns:
        table.add_column(label, key=key, width=width)
    return table


class BaseScreen(Screen[None]):
    """A screen of the app. `load()` (a worker in most screens) reads what it shows from the
    API; it runs when the screen is mounted, shown again, refreshed (r) or told by `live()`."""

    @property
    def client(self) -> Client:
        return cast("Client", getattr(self.app, "client"))  # noqa: B009 - app type is circular

    async def call(self, call: Awaitable[T], what: str = "") -> T | None:
        return await guarded(self, call, what)

    def load(self) -> object:
        """Read what the screen shows from the API (screens start a worker here)."""
        return None

    def reload(self) -> None:
        """Re-read when the screen is mounted or shown again (some screens do less)."""
        self.load()

    def action_refresh(self) -> None:
        self.load()

    NOTICE = ""  # the title of the notification a completed form shows

    def open_form(self, title: str, fields: list[Field], submit: Submit, done: str,
                  note: str = "") -> None:
        """A modal form; once `submit` succeeded, `done` is notified and the screen reloads."""
        def after(ok: bool | None) -> None:
            if ok:
                self.notify(done, title=self.NOTICE)
                self.load()
        self.app.push_screen(FormScreen(title, fields, submit, note=note), after)

    def live(self, event: Event) -> None:
        """A live event from the node (screens re-read on the ones that concern them)."""

    def on_mount(self) -> None:
        """Every screen with a header gets the screens line under it, then loads. Textual
        calls a subclass's own `on_mount` too (for what else it needs at start)."""
        headers = self.query(Header)
        if headers:
            mode = getattr(self.app, "current_mode", "") or ""
            self.mount(NavBar(mode), after=headers.first())
        self.reload()

    def on_screen_resume(self) -> None:
        if self.is_mounted:  # the first showing loads from on_mount
            self.reload()


class ListDetailScreen(BaseScreen, Generic[ItemT]):
    """A table of items (`COLUMNS`, read by `rows()`) over the detail of the highlighted one
    (`detail(item)`, or `EMPTY` when there is none). The selected item is kept by its key, so a
    reload leaves the cursor on it; a subclass adds its bindings, actions and `live()`."""

    TABLE_ID: ClassVar[str]
    COLUMNS: ClassVar[tuple[tuple[str, str, int], ...]]  # (label, key, width)
    DETAIL_ID: ClassVar[str] = ""  # the Static the default `show()` fills
    LOADING: ClassVar[str] = ""  # the detail pane until the first load
    EMPTY: ClassVar[str] = ""  # the detail pane when there is no item

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, ItemT] = {}
        self.selected: str | None = None  # the key of the highlighted item

    # -- what a subclass says ---------------------------------------------------------------

    async def rows(self) -> list[ItemT] | None:
        """The items to list, in order, read from the API; None (the call failed) keeps the
        table as it is."""
        raise NotImplementedError

    def key(self, item: ItemT) -> str:
        raise NotImplementedError

    def cells(self, item: ItemT) -> Iterable[object]:
        """The row of `item`, one value per column (shown as plain text, not markup)."""
        raise NotImplementedError

    async def detail(self, item: ItemT) -> RenderableType:
        """What the detail pane shows for `item` (it may read more from the API)."""
        return ""

    def compose_head(self) -> ComposeResult:
        """Widgets between the header and the table."""
        return ()

    def compose_detail(self) -> ComposeResult:
        yield Static(self.LOADING, id=self.DETAIL_ID)

    async def show(self, item: ItemT | None) -> None:
        """Fill the detail pane for `item`, None: the empty state."""
        pane = self.query_one(f"#{self.DETAIL_ID}", Static)
        pane.update(self.EMPTY if item is None else await self.detail(item))

    # -- the shape ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield from self.compose_head()
        yield data_table(self.TABLE_ID, self.COLUMNS)
        yield from self.compose_detail()
        yield Footer(compact=True)

    @property
    def current(self) -> ItemT | None:
        return self.items.get(self.selected or "")

    @work(exclusive=True, group="list")
    async def load(self) -> None:
        items = await self.rows()
        if items is None:
            return
        self.items = {self.key(item): item for item in items}
        table = self.query_one(f"#{self.TABLE_ID}", DataTable)
        table.clear()
        for item in items:
            table.add_row(*plain(*self.cells(item)), key=self.key(item))
        if self.selected in self.items:
            table.move_cursor(row=table.get_row_index(self.selected))
        else:
            self.selected = next(iter(self.items), None)
        await self.show_detail()

    async def show_detail(self) -> None:
        await self.show(self.current)
        self.refresh_bindings()

    @on(DataTable.RowHighlighted)
    async def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = str(event.row_key.value)
        if event.data_table.id == self.TABLE_ID and key != self.selected:
            self.selected = key
            await self.show_detail()
