"""The TUI against real nodes (in-process, in-memory channels): the buyer searches, opens a
listing and makes an offer; the seller accepts; the order appears in the buyer's Orders."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from dht.testing import dht_network
from p2pmarket.client import Client
from tests.integration.test_api_harness import api_node, eventually, memory_hosts
from tui.app import MarketApp, make_app
from tui.forms import FormScreen
from tui.screens.listing import ListingScreen

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def until(pilot: Pilot[None], check: Callable[[], bool], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the app updates from its own workers
            await pilot.pause(0.1)


def rows(app: MarketApp, table: str) -> int:
    try:
        return app.screen.query_one(table, DataTable).row_count
    except Exception:
        return 0


async def test_search_offer_accept_order(tmp_path: Path) -> None:
    hosts = memory_hosts()
    async with dht_network(6) as backbone, \
            api_node(backbone, tmp_path / "seller", host=hosts) as seller, \
            api_node(backbone, tmp_path / "buyer", host=hosts) as buyer:
        await seller.client.create_listing({
            "title": "Road bike", "price": {"amount": 30_000, "currency": "EUR"},
            "category": "sports/bikes", "condition": "good", "id": "road-bike-1",
            "location": {"country": "DE", "geohash": "u33dbfc"}})
        app = make_app(Client.from_datadir(buyer.datadir, timeout=30))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press(*"road bike", "enter")
            await until(pilot, lambda: rows(app, "#results") == 1)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ListingScreen))
            await pilot.press("o")
            await until(pilot, lambda: isinstance(app.screen, FormScreen))
            await pilot.press("ctrl+s")
            await until(pilot, lambda: isinstance(app.screen, ListingScreen))

            async def offer_arrived() -> str | None:
                page = await seller.client.list_offers()
                return page.items[0].id if page.items else None
            offer_id = await eventually(offer_arrived)
            await seller.client.accept_offer(offer_id)
            await pilot.press("f2")
            await until(pilot, lambda: rows(app, "#orders") == 1, timeout=60)
            assert app.screen.query_one("#orders", DataTable).get_row_at(0)[0] == "buyer"
            orders = await seller.client.list_orders()
            assert [o.role for o in orders.items] == ["seller"]
