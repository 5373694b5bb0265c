"""Snapshot tests of the Market screen's filters at 80x24 over the fake client: the category
picker, a filtered tree, and results within a radius. Record with `--snapshot-update`."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from tests.support.tui import SIZE, app, settle


class TestMarketFilters:
    def test_category_picker(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await settle(pilot)
            await pilot.press("ctrl+t")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)

    def test_category_picker_filtered(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await settle(pilot)
            await pilot.press("ctrl+t")
            await settle(pilot)
            await pilot.press(*"ik")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)

    def test_results_within_radius(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await settle(pilot)
            await pilot.press("ctrl+g", *"50", "enter")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)

    def test_results_in_category_by_distance(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await settle(pilot)
            await pilot.press("ctrl+t")
            await settle(pilot)
            await pilot.press(*"sports", "enter")
            await settle(pilot)
            for _ in range(3):  # relevance -> price -> newest -> distance
                await pilot.press("ctrl+o")
                await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)
