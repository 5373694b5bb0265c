"""What every TUI screen shares: the API client of the app, API calls whose errors become
notifications, and a hook for live events from the node's SSE stream."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from textual.screen import Screen
from textual.widgets import DataTable, Header

from p2pmarket.client import ClientError, Event
from tui.format import describe_error
from tui.widgets.forms import Field, FormScreen, Submit
from tui.widgets.nav import NavBar

if TYPE_CHECKING:
    from p2pmarket.client import Client

log = logging.getLogger(__name__)
T = TypeVar("T")


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
