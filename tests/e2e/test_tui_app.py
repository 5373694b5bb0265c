"""Pilot tests of the TUI against a fake client: search and open a listing, make an offer,
act on orders and negotiations, create a listing with inline validation errors, live events."""

from __future__ import annotations

from textual.widgets import DataTable, Input, Static

from p2pmarket.client import Event
from tests.support.tui import fake_app
from tui.app import MarketApp
from tui.screens.listing import ListingScreen
from tui.screens.market import MarketScreen
from tui.testing import SELLER, FakeClient
from tui.widgets.forms import FormScreen


async def settle(app: MarketApp, pilot: object) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()  # type: ignore[attr-defined]


async def test_search_and_open_listing() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*"pixel", "enter")
        await settle(app, pilot)
        table = app.screen.query_one("#results", DataTable)
        assert table.row_count == 1
        assert fake.calls[-1][0] == "search" and fake.calls[-1][1][0] == "pixel"
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, ListingScreen)
        assert app.screen.listing.title == "Pixel 7a with case"
        assert "Ada's Phones" in str(app.screen.query_one("#listing-seller", Static).render())
        await pilot.press("escape")
        assert isinstance(app.screen, MarketScreen)


async def test_make_offer_from_listing() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")  # empty search: everything
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)
        app.screen.query_one("#f-amount", Input).value = "330.50"
        app.screen.query_one("#f-quantity", Input).value = "0"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)  # the API's 422 shows under the field
        error = app.screen.query_one("#err-quantity", Static)
        assert "Expected" in str(error.render()) and error.has_class("shown")
        app.screen.query_one("#f-quantity", Input).value = "1"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ListingScreen)
        assert fake.calls[-1] == ("make_offer", (SELLER, "listing-0001", 33050, 1, ""))


async def test_ship_an_order() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(app, pilot)
        assert app.screen.query_one("#orders", DataTable).row_count == 1
        assert app.screen.check_action("ship", ()) is True
        assert app.screen.check_action("confirm", ()) is False  # not in the order's `can`
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "required" in str(app.screen.query_one("#err-carrier", Static).render())
        await pilot.press(*"DHL", "tab", *"JJD0001", "enter")
        await settle(app, pilot)
        assert ("ship_order", ("order-0001", "DHL", "JJD0001")) in fake.calls
        assert fake.orders[0].state == "shipped"
        assert "shipped" in str(app.screen.query_one("#order-detail", Static).render())


async def test_accept_a_counter_offer() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await settle(app, pilot)
        detail = str(app.screen.query_one("#offer-detail", Static).render())
        assert "320 and it's yours" in detail and "Still available!" in detail
        await pilot.press("a")
        await settle(app, pilot)
        assert ("accept_offer", ("offer-0001",)) in fake.calls
        assert fake.offers[0].state == "accepted"


async def test_create_listing_shows_inline_errors() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await settle(app, pilot)
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FormScreen)
        values = {"title": "Desk lamp", "price": "15", "category": "home/nowhere",
                  "country": "DE", "geohash": "u33db"}
        for name, value in values.items():
            form.query_one(f"#f-{name}", Input).value = value
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "unknown category" in str(form.query_one("#err-category", Static).render())
        form.query_one("#f-category", Input).value = "home/decor"
        form.query_one("#f-country", Input).value = "Germany"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert form.query_one("#err-country", Static).has_class("shown")
        form.query_one("#f-country", Input).value = "DE"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert not isinstance(app.screen, FormScreen)
        assert [i.title for i in fake.mine] == ["Road bike, 56 cm", "Desk lamp"]
        assert app.screen.query_one("#my-listings", DataTable).row_count == 2


async def test_unreachable_node_is_a_notification() -> None:
    app, _ = fake_app(FakeClient(unreachable=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await settle(app, pilot)
        messages = [n.message for n in app._notifications]
        assert any("does not answer" in m for m in messages)


async def test_a_node_that_stops_and_comes_back_shows_in_the_header() -> None:
    """The header says the node stopped; when it answers again the app says so, and the
    screen reads its data again by itself."""
    fake = FakeClient()
    app, _ = fake_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")  # Orders: a screen that reads the node when (re)loaded
        await settle(app, pilot)
        assert app.sub_title.endswith("· running")
        fake.unreachable = True
        app.check_node()
        await settle(app, pilot)
        assert app.node_down and app.sub_title.endswith("node stopped — waiting")
        assert any("Waiting for it" in n.message for n in app._notifications)
        fake.unreachable = False
        before = len(fake.calls)
        app.check_node()
        await settle(app, pilot)
        assert not app.node_down and app.sub_title.endswith("· running")
        assert any("back" in n.message for n in app._notifications)
        # the screen asked the node again (more than the status check)
        assert len([c for c in fake.calls[before:] if c[0] != "get_status"]) > 0


async def test_live_events_notify_and_refresh() -> None:
    event = Event(8, "order.changed", {"order": "order-0001", "state": "shipped",
                                       "kind": "shipped", "by": "seller"})
    app, fake = fake_app(FakeClient(events=[event]), live=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        for _ in range(20):
            await pilot.pause(0.05)
        messages = [n.message for n in app._notifications]
        assert any("Order step: shipped" in m for m in messages)
        assert [c[0] for c in fake.calls].count("list_orders") >= 1
