"""The TUI's own cost: time to the first Market screen, and time from Enter in the search box
until N results are in the table, against a bare Textual app that puts the same N rows in a
DataTable of the same columns (the baseline, measured in the same run).

    .venv/bin/python bench/tui_render.py [--rows 100] [--runs 7] [--tiny]   # rows: one page

Headless (`App.run_test`, 80x24), over the fake client (no node: this measures the TUI, not
the network; bench/search.py measures search). One JSON object on stdout.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.app import App, ComposeResult  # noqa: E402
from textual.binding import Binding  # noqa: E402
from textual.widgets import DataTable  # noqa: E402

from bench._harness import (  # noqa: E402
    Size,
    emit,
    loadavg,
    parse_sizes,
    ratio,
    summary,
)
from tui.app import make_app  # noqa: E402
from tui.screens.market import PAGE, MarketScreen  # noqa: E402
from tui.testing import FakeClient, listing  # noqa: E402

SIZE = (80, 24)
SIZES = {"rows": Size(PAGE, 5, "rows in the results table (one page of results)"),
         "runs": Size(7, 1, "runs of each measurement (median)")}


def market_of(rows: int) -> FakeClient:
    fake = FakeClient()
    fake.market = [listing(n, f"Bike number {n}", 10_000 + n) for n in range(rows)]
    return fake


async def first_screen() -> float:
    """Milliseconds from the app's start until the Market screen is mounted and idle."""
    app = make_app(FakeClient(), live=False)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, MarketScreen)
        return (time.perf_counter() - t0) * 1000


async def search_to_table(rows: int) -> float:
    """Milliseconds from Enter in the search box until all rows are in the results table."""
    app = make_app(market_of(rows), live=False)  # type: ignore[arg-type]
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one("#results", DataTable)
        t0 = time.perf_counter()
        await pilot.press("enter")
        while table.row_count < rows:  # noqa: ASYNC110 - the search worker fills it
            await asyncio.sleep(0)
        await pilot.pause()  # and painted
        return (time.perf_counter() - t0) * 1000


class Bare(App[None]):
    """The baseline: one DataTable, the Market's columns, filled on a key press."""

    BINDINGS = [Binding("ctrl+f", "fill", "Fill", priority=True)]  # the table keeps Enter

    def __init__(self, data: list[tuple[str, ...]]) -> None:
        super().__init__()
        self.data = data

    def compose(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row")
        for label, width in (("Title", 26), ("Price", 16), ("Condition", 10), ("Seller", 16),
                             ("Dist", 6)):
            table.add_column(label, width=width)
        yield table

    def action_fill(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for n, row in enumerate(self.data):
            table.add_row(*row, key=str(n))


async def bare_table(rows: int) -> float:
    data = [(f"Bike number {n}", f"{100 + n / 100:.2f} EUR", "good", "12D3KooW…Se11er", "—")
            for n in range(rows)]
    app = Bare(data)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one(DataTable)
        t0 = time.perf_counter()
        await pilot.press("ctrl+f")
        while table.row_count < rows:  # noqa: ASYNC110
            await asyncio.sleep(0)
        await pilot.pause()
        return (time.perf_counter() - t0) * 1000


def spread(samples: list[float]) -> dict[str, float | None]:
    return summary(samples, ("p50", "min", "max"), digits=2)


async def main(rows: int, runs: int) -> dict[str, Any]:
    load_before = loadavg()
    start = [await first_screen() for _ in range(runs)]
    tui = spread([await search_to_table(rows) for _ in range(runs)])
    bare = spread([await bare_table(rows) for _ in range(runs)])
    return {"rows": rows, "runs": runs, "first_screen": spread(start),
            "search_to_table": tui, "baseline_bare_table": bare,
            "ratio_p50": ratio(tui["p50_ms"], bare["p50_ms"], 2),
            "loadavg": [load_before, loadavg()]}


if __name__ == "__main__":
    args = parse_sizes(__doc__, SIZES)
    emit(asyncio.run(main(args.rows, args.runs)))
