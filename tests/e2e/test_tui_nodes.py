"""The TUI against real nodes (in-process, in-memory channels), one app per node: the trade from
search to a paid order driven only through the screens, and a node that stops under the app.

The buyer's and the seller's apps run at the same time, each `run_test()` in its own asyncio task
(Textual keeps the active app in context variables, which a task copies when it starts, so the
two never see each other's). They hand over with `asyncio.Event`s; a TaskGroup cancels both
when either fails, and every wait has a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from dht.testing import dht_network
from p2pmarket.client import Client
from tests.support.api import ApiNode, api_node, memory_hosts
from tests.support.tui import text
from tui.app import MarketApp, make_app
from tui.screens.inbox import InboxScreen
from tui.screens.listing import ListingScreen
from tui.screens.network import NetworkScreen
from tui.screens.orders import OrdersScreen
from tui.widgets.forms import FormScreen

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ADDRESS = "Anna Muster Hauptstr 1 10115 Berlin"


async def until(pilot: Pilot[None], check: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the app updates from its own workers
            await pilot.pause(0.1)


def row(app: MarketApp, table: str, index: int = 0) -> list[str]:
    """The cells of one row of a table on the current screen ([] while it is not there)."""
    try:
        grid = app.screen.query_one(table, DataTable)
        return [str(cell) for cell in grid.get_row_at(index)] if grid.row_count > index else []
    except Exception:  # the screen is still switching
        return []


def messages(app: MarketApp) -> list[str]:
    return [n.message for n in app._notifications]


async def publish_bike(seller: ApiNode) -> None:
    await seller.client.create_listing({
        "title": "Road bike", "price": {"amount": 30_000, "currency": "EUR"},
        "category": "sports/bikes", "condition": "good", "id": "road-bike-1",
        "location": {"country": "DE", "geohash": "u33dbfc"}})


async def test_search_offer_accept_order(tmp_path: Path) -> None:
    hosts = memory_hosts()
    async with dht_network(6) as backbone, \
            api_node(backbone, tmp_path / "seller", host=hosts) as seller, \
            api_node(backbone, tmp_path / "buyer", host=hosts) as buyer:
        await publish_bike(seller)
        offered, accepted, address_sent, paid = (asyncio.Event() for _ in range(4))

        async def buyer_side() -> None:
            app = make_app(Client.from_datadir(buyer.datadir, timeout=30))
            async with app.run_test(size=(100, 30)) as pilot:
                await pilot.press(*"road bike", "enter")
                await until(pilot, lambda: row(app, "#results")[:1] == ["Road bike"])
                await pilot.press("enter")
                await until(pilot, lambda: isinstance(app.screen, ListingScreen))
                await pilot.press("o")
                await until(pilot, lambda: isinstance(app.screen, FormScreen))
                await pilot.press("ctrl+s")  # the form starts at the asking price, quantity 1
                await until(pilot, lambda: isinstance(app.screen, ListingScreen))
                offered.set()

                await asyncio.wait_for(accepted.wait(), 30)
                await pilot.press("f2")
                await until(pilot, lambda: row(app, "#orders")[:3]
                            == ["buyer", "Road bike", "created"])
                assert "I am the buyer" in text(app, "#order-detail")
                await until(pilot, lambda: "address" in text(app, "#order-detail"))
                await pilot.press("a")  # a created order waits for the buyer's address
                await until(pilot, lambda: isinstance(app.screen, FormScreen))
                await pilot.press(*ADDRESS, "ctrl+s")
                await until(pilot, lambda: isinstance(app.screen, OrdersScreen))
                await until(pilot, lambda: row(app, "#orders")[2:3] == ["awaiting_payment"])
                address_sent.set()

                await asyncio.wait_for(paid.wait(), 30)
                await until(pilot, lambda: row(app, "#orders")[2:3] == ["paid"])  # live event
                assert "State: paid" in text(app, "#order-detail")
                assert not any("Traceback" in m for m in messages(app))
            assert app._exception is None  # run_test also re-raises a crash of the app

        async def seller_side() -> None:
            app = make_app(Client.from_datadir(seller.datadir, timeout=30))
            async with app.run_test(size=(100, 30)) as pilot:
                await pilot.press("f3")
                await until(pilot, lambda: isinstance(app.screen, InboxScreen))
                await asyncio.wait_for(offered.wait(), 30)
                # no reload: the offer arrives through the node's event stream
                await until(pilot, lambda: row(app, "#offers")[:3]
                            == ["seller", "Road bike", "open"])
                assert "300.00 EUR" in text(app, "#offer-detail")
                await pilot.press("a")
                await until(pilot, lambda: row(app, "#offers")[2:3] == ["accepted"])
                accepted.set()

                await pilot.press("f2")
                await until(pilot, lambda: row(app, "#orders")[:2] == ["seller", "Road bike"])
                await asyncio.wait_for(address_sent.wait(), 30)
                await until(pilot, lambda: ADDRESS in text(app, "#order-detail"))
                assert row(app, "#orders")[2:3] == ["awaiting_payment"]
                await pilot.press("p")  # the seller confirms the payment arrived
                await until(pilot, lambda: row(app, "#orders")[2:3] == ["paid"])
                paid.set()
                assert "State: paid" in text(app, "#order-detail")
            assert app._exception is None  # run_test also re-raises a crash of the app

        async with asyncio.TaskGroup() as group:
            group.create_task(seller_side(), name="seller app")
            group.create_task(buyer_side(), name="buyer app")

        orders = (await seller.client.list_orders()).items
        assert [(o.role, o.state) for o in orders] == [("seller", "paid")]


async def test_node_stops_under_the_app(tmp_path: Path) -> None:
    async with dht_network(3) as backbone, AsyncExitStack() as stack:
        node = await stack.enter_async_context(api_node(backbone, tmp_path / "node"))
        app = make_app(Client.from_datadir(node.datadir, timeout=5))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("f5")
            await until(pilot, lambda: node.peer_id in text(app, "#node-status"))
            await stack.aclose()  # the node stops: API server, node, database
            await pilot.press("r")
            await until(pilot, lambda: "does not answer" in text(app, "#node-status"))
            await until(pilot, lambda: any("The node does not answer" in m
                                           for m in messages(app)))
            await pilot.press("f2")
            await until(pilot, lambda: isinstance(app.screen, OrdersScreen))
            await until(pilot, lambda: sum("does not answer" in m for m in messages(app)) >= 2)
            assert isinstance(app.screen, OrdersScreen) and app.is_running
            assert app.return_code is None and app._exception is None
            assert not any("Traceback" in m for m in messages(app))
            await pilot.press("f5")
            assert isinstance(app.screen, NetworkScreen)
        assert app._exception is None
