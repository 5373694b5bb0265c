"""My records in the DHT (opened from the Profile screen): each one's expiry and when a DHT node
last stored it; a record stored nowhere is marked, with the reason, never shown as published."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from p2pmarket.api.schemas import OwnRecordOut
from p2pmarket.client import Client
from tui.base import data_table, guarded
from tui.format import esc

NOT_STORED = "✗ NOT STORED"
HINT = "r refresh · Esc close · each is renewed 7 days before it expires"


def when(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def record_cells(r: OwnRecordOut) -> list[Text]:
    published = (Text(NOT_STORED, style="bold red") if r.published_at is None
                 else Text(when(r.published_at)))
    return [Text(r.kind), Text(r.id.rsplit("/", 1)[-1] or "—"), Text(when(r.expires)[:10]),
            published]


def records_status(items: list[OwnRecordOut]) -> str:
    failed = [r for r in items if r.published_at is None]
    if not items:
        return "Nothing published yet."
    if not failed:
        return f"{len(items)} record(s), all stored in the DHT."
    first = failed[0]
    return (f"[b red]{len(failed)} of {len(items)} not stored anywhere[/]: {first.kind} "
            f"{esc(first.id.rsplit('/', 1)[-1])}: {esc(first.error or 'not stored')}")


class RecordsScreen(ModalScreen[None]):
    """`push_screen(RecordsScreen())`: a table of `GET /records`, read when it opens."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="records.close"),
        Binding("r", "refresh", "Refresh", id="records.refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.items: list[OwnRecordOut] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="records-dialog"):
            yield Label("My records in the DHT", id="records-title")
            yield data_table("my-records", (("Kind", "kind", 8), ("Id", "id", 20),
                                            ("Expires", "expires", 10),
                                            ("Last stored", "published", 16)))
            yield Static("Loading…", id="records-status")
            yield Static(HINT, id="records-hint")

    def on_mount(self) -> None:
        self.load()

    @property
    def client(self) -> Client:
        return cast("Client", getattr(self.app, "client"))  # noqa: B009 - app type is circular

    @work(exclusive=True, group="records")
    async def load(self) -> None:
        page = await guarded(self, self.client.list_my_records(page_size=200), "My records")
        status = self.query_one("#records-status", Static)
        if page is None:
            status.update("The node does not answer.")
            return
        self.items = page.items
        table = self.query_one("#my-records", DataTable)
        table.clear()
        for n, r in enumerate(page.items):
            table.add_row(*record_cells(r), key=f"{r.kind}-{r.id}-{n}")
        status.update(records_status(page.items))

    @on(DataTable.RowHighlighted, "#my-records")
    def show_error(self, event: DataTable.RowHighlighted) -> None:
        """The highlighted record's error in full, or the summary again."""
        row = event.cursor_row
        r = self.items[row] if 0 <= row < len(self.items) else None
        self.query_one("#records-status", Static).update(
            f"[b red]{r.kind} {esc(r.id)} is stored nowhere[/]: {esc(r.error or '')}"
            if r is not None and r.published_at is None else records_status(self.items))

    def action_refresh(self) -> None:
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)
