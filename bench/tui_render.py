"""The TUI's own cost: time to the first Market screen, and time from Enter in the search box
until N results are in the table, against a bare Textual app that puts the same N rows in a
DataTable of the same columns (the baseline, measured in the same run).

    .venv/bin/python bench/tui_render.py [--rows 100] [--runs 7]   # rows: one page of results

Headless (`App.run_test`, 80x24), over the fake client (no node: this measures the TUI, not
the network; bench/search.py measures search). One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from tui.app import make_app
from tui.screens.market import PAGE, MarketScreen
from tui.testing import FakeClient, listing

SIZE = (80, 24)


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


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(samples), 2), "min_ms": round(min(samples), 2),
            "max_ms": round(max(samples), 2)}


async def main(rows: int, runs: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    start = [await first_screen() for _ in range(runs)]
    tui = [await search_to_table(rows) for _ in range(runs)]
    bare = [await bare_table(rows) for _ in range(runs)]
    return {"rows": rows, "runs": runs, "first_screen": summary(start),
            "search_to_table": summary(tui), "baseline_bare_table": summary(bare),
            "ratio_p50": round(statistics.median(tui) / statistics.median(bare), 2),
            "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=PAGE)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rows, args.runs))))
