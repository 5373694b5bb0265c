"""Pilot tests of the Disputes (arbiter), Profile and escrow parts of Orders over the fake
client: what the screens show, what they send, and how they refuse bad input."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import msgspec
from rich.console import Console
from textual.widgets import DataTable, Input, Static

from p2pmarket.client import Event
from p2pmarket.wire.bodies import Price
from tests.support.tui import fake_app
from tui.app import MarketApp
from tui.screens.disputes import DisputesScreen, case_table
from tui.screens.profile import ProfileScreen
from tui.testing import FakeClient, listing, png
from tui.widgets.forms import FormScreen
from tui.widgets.nav import NavBar


async def settle(app: MarketApp, pilot: object) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()  # type: ignore[attr-defined]


def text(app: MarketApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def test_dispute_shows_both_logs_and_statements() -> None:
    app, _ = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f6")
        await settle(app, pilot)
        assert isinstance(app.screen, DisputesScreen)
        assert app.screen.query_one("#disputes", DataTable).row_count == 1
        summary = text(app, "#dispute-summary")
        assert "Nothing arrived in 3 weeks." in summary and "Shipped with DHL" in summary
        assert "Ready for your ruling" in summary
        assert "Fair Fred" in text(app, "#arbiter-advert")
        assert isinstance(app.screen, DisputesScreen) and app.screen.current is not None
        console = Console(width=80, record=True, file=io.StringIO())
        console.print(case_table(app.screen.current.cases))
        lines = console.export_text().splitlines()
        assert "buyer's log" in lines[0] and "seller's log" in lines[0]
        shipped = next(line for line in lines if "shipped" in line)
        assert shipped.index("shipped") > 40  # only in the seller's copy (right column)
        assert "(differ)" in lines[-1]


async def test_rule_with_a_split() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f6")
        await settle(app, pilot)
        await pilot.press("u")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)
        form = app.screen
        form.query_one("#f-buyer_sat", Input).value = "200000"
        form.query_one("#f-seller_sat", Input).value = "60000"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form  # more than the escrow holds: refused before any call
        assert "more than the 250000 sat" in str(form.query_one("#err-seller_sat",
                                                                 Static).render())
        form.query_one("#f-seller_sat", Input).value = "1000"  # 45500 sat to the miners
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "leaves 45500 sat for the network fee" in str(
            form.query_one("#err-seller_sat", Static).render())
        assert not [c for c in fake.calls if c[0] == "rule_case"]
        form.query_one("#f-seller_sat", Input).value = "x"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "'x' is not a number of sat" in str(form.query_one("#err-seller_sat",
                                                                  Static).render())
        form.query_one("#f-seller_sat", Input).value = ""  # the rest: 250000-200000-3500-2000
        form.query_one("#f-note", Input).value = "tracking shows delivery to a neighbour"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, DisputesScreen)
        assert ("rule_case", ("order-0042", 200000, 44500,
                              "tracking shows delivery to a neighbour")) in fake.calls
        assert "Ruled" in text(app, "#dispute-summary")
        # once ruled, the rule key is gone from the footer
        assert app.screen.check_action("rule", ()) is False


async def test_advertise_and_withdraw() -> None:
    fake = FakeClient()
    fake.advert = None
    app, _ = fake_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f6")
        await settle(app, pilot)
        assert "You do not arbitrate" in text(app, "#arbiter-advert")
        assert app.screen.check_action("withdraw", ()) is False
        await pilot.press("a")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FormScreen)
        form.query_one("#f-name", Input).value = "Judge Judy"
        form.query_one("#f-fee_percent", Input).value = "150"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "between 0 and 100" in str(form.query_one("#err-fee_percent", Static).render())
        form.query_one("#f-fee_percent", Input).value = "1.5"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert fake.advert is not None and fake.advert.fee_percent_bp == 150
        assert "Judge Judy" in text(app, "#arbiter-advert")
        await pilot.press("w")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert fake.advert is None
        assert "You do not arbitrate" in text(app, "#arbiter-advert")


async def test_disputes_without_escrow_say_so() -> None:
    app, _ = fake_app(FakeClient(escrow=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f6")
        await settle(app, pilot)
        assert "Escrow is off on this node" in text(app, "#arbiter-advert")
        assert app.screen.check_action("advertise", ()) is False
        assert not app._notifications  # a node without escrow is not an error


async def test_profile_edit_with_validation() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f7")
        await settle(app, pilot)
        assert isinstance(app.screen, ProfileScreen)
        assert "Me, a seller" in text(app, "#my-profile")
        assert app.screen.query_one("#my-reviews", DataTable).row_count == 1
        await pilot.press("e")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FormScreen)
        form.query_one("#f-name", Input).value = ""
        form.query_one("#f-geohash", Input).value = "u33dbx"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form  # the API's 422 names the field
        assert form.query_one("#err-name", Static).has_class("shown")
        form.query_one("#f-name", Input).value = "Bike Bea"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, ProfileScreen)
        sent = [c for c in fake.calls if c[0] == "put_my_profile"][-1][1][0]
        assert sent["name"] == "Bike Bea" and sent["location"] == {"country": "DE",
                                                                  "geohash": "u33dbx"}
        assert "Bike Bea" in text(app, "#my-profile")


async def test_orders_show_escrow_wallet_and_dispute_flow() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(app, pilot)
        detail = text(app, "#order-detail")
        assert "Escrow: funded · 400000 sat" in detail and "Wallet (regtest): 150000" in detail
        assert app.screen.check_action("evidence", ()) is False
        await pilot.press("d")
        await pilot.pause()
        app.screen.query_one("#f-reason", Input).value = "the buyer's payment bounced"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert ("open_dispute", ("order-0001", "the buyer's payment bounced")) in fake.calls
        assert app.screen.check_action("evidence", ()) is True
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("ctrl+s")  # empty evidence: refused in the form
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)
        app.screen.query_one("#f-text", Input).value = "bank statement attached"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert ("add_evidence", ("order-0001", "bank statement attached")) in fake.calls
        await pilot.press("g")
        await settle(app, pilot)
        assert ("accept_ruling", ("order-0001",)) in fake.calls


async def test_screens_line_names_every_screen_and_switches() -> None:
    app, _ = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        nav = app.screen.query_one(NavBar)
        line = str(nav.render())
        for word in ("F1 Market", "F2 Orders", "F6 Disputes", "F7 Profile"):
            assert word in line
        await pilot.click(NavBar, offset=(72, 0))  # "F7 Profile"
        await settle(app, pilot)
        assert isinstance(app.screen, ProfileScreen)
        assert app.screen.query_one(NavBar).current == "profile"


async def test_category_field_completes_from_the_taxonomy() -> None:
    app, _ = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await settle(app, pilot)
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FormScreen)
        form.query_one("#f-category", Input).focus()
        await pilot.press(*"sports/bi")
        await pilot.pause()
        await pilot.press("right")  # accepts the suggestion
        assert form.query_one("#f-category", Input).value == "sports/bikes"


async def test_ask_the_seller_before_an_offer() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*"pixel", "enter")
        await settle(app, pilot)
        await pilot.press("enter")  # the Pixel: no negotiation on it yet
        await settle(app, pilot)
        await pilot.press("m")
        await settle(app, pilot)
        form = app.screen
        assert isinstance(form, FormScreen)
        assert "Ask the seller" in str(form.query_one("#form-title", Static).render())
        await pilot.press("ctrl+s")  # empty: refused in the form
        await pilot.pause()
        assert app.screen is form
        form.query_one("#f-text", Input).value = "Does it have scratches?"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert ("start_conversation", (fake.market[1].publisher, "listing-0002",
                                       "Does it have scratches?")) in fake.calls
        await pilot.press("m")  # the second question goes into the same conversation
        await settle(app, pilot)
        app.screen.query_one("#f-text", Input).value = "And the battery?"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert ("send_message", ("ask-0001", "And the battery?")) in fake.calls
        await pilot.press("escape", "f3")
        await settle(app, pilot)
        table = app.screen.query_one("#offers", DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert ["ask", "Pixel 7a with case", "question"] in [r[:3] for r in rows]
        table.move_cursor(row=[r[0] for r in rows].index("ask"))
        await settle(app, pilot)
        detail = text(app, "#offer-detail")
        assert "before any offer" in detail and "And the battery?" in detail
        assert app.screen.check_action("accept", ()) is False
        assert app.screen.check_action("message", ()) is True


async def test_the_buyer_starts_the_escrow_of_a_btc_order() -> None:
    fake = FakeClient()
    first = fake.orders[0]
    fake.orders.insert(0, msgspec.structs.replace(
        first, id="order-0003", role="buyer", state="created", can=["address", "cancelled"],
        price=Price(450_000, "BTC"), title="Road bike, steel", log=[]))
    app, _ = fake_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(app, pilot)
        detail = text(app, "#order-detail")
        assert "Escrow: not started · f proposes it" in detail
        assert not app._notifications  # no escrow yet is not an error
        assert app.screen.check_action("fund", ()) is True
        await pilot.press("f")
        await settle(app, pilot)
        assert ("fund_escrow", ("order-0003",)) in fake.calls
        assert "Escrow: proposed" in text(app, "#order-detail")
        assert app.screen.check_action("fund", ()) is False
        await pilot.press("down")  # the seller's order: funded, no fund key
        await settle(app, pilot)
        assert app.screen.check_action("fund", ()) is False


async def test_profile_picture_from_a_file(tmp_path: Path) -> None:
    picture = tmp_path / "me.png"
    picture.write_bytes(png(1))
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f7")
        await settle(app, pilot)
        assert app.screen.query_one("#my-avatar").display  # the current picture is shown
        await pilot.press("e")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FormScreen)
        form.query_one("#f-avatar", Input).value = str(notes)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "is not a JPEG, PNG, WebP or GIF image" in str(
            form.query_one("#err-avatar", Static).render())
        assert not [c for c in fake.calls if c[0] in ("upload_image", "put_my_profile")]
        form.query_one("#f-avatar", Input).value = str(picture)
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, ProfileScreen)
        uploaded = [c for c in fake.calls if c[0] == "upload_image"]
        assert uploaded == [("upload_image", (png(1), "image/png"))]
        sent = [c for c in fake.calls if c[0] == "put_my_profile"][-1][1][0]
        assert sent["avatar"]["sha256"] == hashlib.sha256(png(1)).hexdigest()
        assert fake.my_profile.avatar is not None


async def test_more_results_load_as_the_cursor_nears_the_end() -> None:
    fake = FakeClient()
    fake.market = [listing(n, f"Bike number {n}", 10_000 + n) for n in range(250)]
    app, _ = fake_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await settle(app, pilot)
        table = app.screen.query_one("#results", DataTable)
        assert table.row_count == 100
        assert text(app, "#market-status").startswith("100 of 250 results")
        table.focus()
        for rows in (200, 250):
            table.move_cursor(row=table.row_count - 1)
            await settle(app, pilot)
            assert table.row_count == rows
        assert text(app, "#market-status").startswith("250 results")
        tokens = [c[1][1].get("page_token") for c in fake.calls if c[0] == "search"]
        assert tokens == [None, "100", "200"]
        table.move_cursor(row=table.row_count - 1)  # the end: nothing more to ask for
        await settle(app, pilot)
        assert len([c for c in fake.calls if c[0] == "search"]) == 3


async def test_a_live_refill_keeps_the_rows_and_the_cursor() -> None:
    fake = FakeClient()
    fake.market = [listing(n, f"Bike number {n}", 10_000 + n) for n in range(250)]
    app, _ = fake_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await settle(app, pilot)
        table = app.screen.query_one("#results", DataTable)
        table.move_cursor(row=table.row_count - 1)
        await settle(app, pilot)
        table.move_cursor(row=150)
        await settle(app, pilot)
        app.screen.live(Event(10, "listing.found", {}))  # the network found more
        await settle(app, pilot)
        assert table.row_count == 200 and table.cursor_row == 150
        assert [c[1][1]["page_size"] for c in fake.calls if c[0] == "search"][-1] == 200


async def test_edit_a_listing_description_condition_and_category() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await settle(app, pilot)
        await pilot.press("e")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FormScreen)
        assert form.query_one("#f-category", Input).value == "sports/bikes"
        form.query_one("#f-category", Input).value = "sports/nowhere"
        form.query_one("#f-description", Input).value = "New chain, 2 owners."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form  # the API's 422 under the category field
        assert "unknown category" in str(form.query_one("#err-category", Static).render())
        form.query_one("#f-category", Input).value = "sports/bikes"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert fake.mine[0].description == "New chain, 2 owners."
        sent = [c for c in fake.calls if c[0] == "edit_listing"][-1][1][1]
        assert sent["condition"] == "good" and sent["category"] == "sports/bikes"
