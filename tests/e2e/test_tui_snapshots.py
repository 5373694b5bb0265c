"""Snapshot tests of every TUI screen at 80x24, grouped per feature, over the fake client.
Record with `pytest tests/e2e/test_tui_snapshots.py --snapshot-update`."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from tests.support.tui import SIZE, app, settle


async def searched(pilot: Pilot[Any]) -> None:
    await pilot.press("enter")
    await settle(pilot)


async def listing_open(pilot: Pilot[Any]) -> None:
    await searched(pilot)
    await pilot.press("enter")
    await settle(pilot)


class TestMarket:
    def test_empty(self, snap_compare: Any) -> None:
        assert snap_compare(app(), terminal_size=SIZE, run_before=settle)

    def test_results(self, snap_compare: Any) -> None:
        assert snap_compare(app(), terminal_size=SIZE, run_before=searched)

    def test_sorted_by_price(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await searched(pilot)
            await pilot.press("ctrl+o")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)


class TestListing:
    def test_details(self, snap_compare: Any) -> None:
        assert snap_compare(app(), terminal_size=SIZE, run_before=listing_open)

    def test_offer_form(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await listing_open(pilot)
            await pilot.press("o")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)


class TestOrders:
    def test_list(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f2")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)

    def test_ship_form(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f2")
            await settle(pilot)
            await pilot.press("s")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)


class TestInbox:
    def test_list(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f3")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)


class TestSell:
    def test_list(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f4")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)

    def test_create_form_with_errors(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f4")
            await settle(pilot)
            await pilot.press("n")
            await settle(pilot)
            await pilot.press(*"Lamp", "tab", *"abc", "ctrl+s")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)


class TestNetwork:
    def test_status(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f5")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)


class TestDisputes:
    def test_case(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f6")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)

    def test_rule_form(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f6")
            await settle(pilot)
            await pilot.press("u")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)


class TestProfile:
    def test_profile_and_reviews(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f7")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)

    def test_edit_form(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f7")
            await settle(pilot)
            await pilot.press("e")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)

    def test_my_records(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f7")
            await settle(pilot)
            await pilot.press("p")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)
