"""Pilot tests of the Market screen's filters over the fake client: the category tree, a radius
around my profile's place or a typed one, sorting by distance, and readable errors for bad input."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from textual.widgets import Button, DataTable, Input, Static, Tree

from tests.support.tui import fake_app, settle
from tui.app import MarketApp
from tui.screens.market import MarketScreen, parse_place, parse_radius
from tui.testing import FakeClient
from tui.widgets.category_tree import CategoryPicker, taxonomy


def searches(fake: FakeClient) -> list[dict[str, Any]]:
    return [args[1] for name, args in fake.calls if name == "search"]


def titles(app: MarketApp) -> list[str]:
    table = app.screen.query_one("#results", DataTable)
    return [str(table.get_row_at(n)[0]) for n in range(table.row_count)]


def status(app: MarketApp) -> str:
    return str(app.screen.query_one("#market-status", Static).render())


def no_location(fake: FakeClient) -> FakeClient:
    fake.my_profile = msgspec.structs.replace(fake.my_profile, location=None)
    return fake


# -- pure helpers ------------------------------------------------------------------------------


def test_taxonomy_groups_paths_in_order() -> None:
    assert taxonomy(["b", "b/x", "a", "a/y", "a/z"]) == {"b": ["x"], "a": ["y", "z"]}


@pytest.mark.parametrize(("text", "expected"), [
    ("52.52,13.405", (52.52, 13.405)), (" 52.52 13.405 ", (52.52, 13.405)),
    ("-0.00001,0", (0.0, 0.0)), ("U33DB", (52.5366, 13.3813))])
def test_parse_place(text: str, expected: tuple[float, float]) -> None:
    assert parse_place(text) == expected


@pytest.mark.parametrize("text", ["hello", "91,0", "1,2,3", "a,b", "nan,nan", ""])
def test_parse_place_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_place(text)


def test_parse_radius() -> None:
    assert parse_radius(" 50 ") == 50.0 and parse_radius("") is None
    for bad in ("1..5", "0", "20001"):
        with pytest.raises(ValueError):
            parse_radius(bad)


# -- category tree -----------------------------------------------------------------------------


async def test_choose_a_subcategory_in_the_tree() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t")
        await settle(pilot)
        picker = app.screen
        assert isinstance(picker, CategoryPicker)
        assert ("list_categories", ()) in fake.calls  # the node's taxonomy
        tree = picker.query_one(Tree)
        assert tree.cursor_node is not None and tree.cursor_node.data == ""  # "any category"
        sports = next(n for n in tree.root.children if n.data == "sports")
        tree.move_cursor(sports)
        await pilot.press("right")  # opens it
        await pilot.pause()
        assert sports.is_expanded
        await pilot.press("down", "enter")  # its first subcategory
        await settle(pilot)
        assert isinstance(app.screen, MarketScreen)
        assert searches(fake)[-1]["category"] == "sports/bikes"
        assert titles(app) == ["Gravel bike, 54 cm"]
        assert "sports › bikes" in str(app.screen.query_one("#category", Button).label)
        assert "in sports › bikes" in status(app)


async def test_type_to_filter_then_a_top_category_means_all_of_it() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t")
        await settle(pilot)
        await pilot.press(*"electro")  # typed on the tree: goes to the filter box
        await pilot.pause()
        picker = app.screen
        assert picker.query_one("#category-filter", Input).value == "electro"
        assert [n.data for n in picker.query_one(Tree).root.children] == ["electronics"]
        await pilot.press("enter")
        await settle(pilot)
        assert searches(fake)[-1]["category"] == "electronics"
        assert len(titles(app)) == 3  # the phones, not the bike
        assert "all of electronics" in str(app.screen.query_one("#category", Button).label)
        # "any category" clears it; Escape keeps the choice
        await pilot.press("ctrl+t")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, MarketScreen)
        assert app.screen.category == "electronics"
        await pilot.press("ctrl+t")
        await settle(pilot)
        tree = app.screen.query_one(Tree)
        tree.move_cursor(tree.root.children[0])
        await pilot.press("enter")
        await settle(pilot)
        assert searches(fake)[-1]["category"] is None
        assert len(titles(app)) == 4


# -- radius and place --------------------------------------------------------------------------


async def test_radius_around_my_profile_place_filters_the_far_listing() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.screen.query_one("#near", Input).value == "u33db"  # from my profile
        await pilot.press("enter")
        await settle(pilot)
        assert "Gravel bike, 54 cm" in titles(app)
        await pilot.press("ctrl+g", *"50", "enter")
        await settle(pilot)
        call = searches(fake)[-1]
        assert call["radius_km"] == 50.0 and call["near"] == pytest.approx((52.54, 13.38), 0.01)
        assert titles(app) == ["Fairphone 4, 256 GB", "Pixel 7a with case", "Nokia 3310 (2000)"]
        assert "within 50 km" in status(app)


async def test_sort_by_distance_needs_a_place_and_works_with_one() -> None:
    app, fake = fake_app(no_location(FakeClient()))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MarketScreen)
        for _ in range(4):  # without a place the cycle skips distance
            await pilot.press("ctrl+o")
            await settle(pilot)
            assert screen.sort != "distance"
        screen.query_one("#near", Input).value = "48.14,11.58"  # typed: Munich
        screen.sort = "newest"
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert screen.sort == "distance"
        call = searches(fake)[-1]
        assert call["sort"] == "distance" and call["near"] == (48.14, 11.58)
        assert titles(app)[0] == "Gravel bike, 54 cm"


async def test_radius_without_a_place_asks_for_one() -> None:
    app, fake = fake_app(no_location(FakeClient()))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.screen.query_one("#near", Input).value == ""
        await pilot.press("ctrl+g", *"50", "enter")
        await settle(pilot)
        assert searches(fake) == []  # not silently searched without the radius
        assert "needs a place" in status(app) and "profile" in status(app)
        assert app.screen.query_one("#near", Input).has_class("-invalid")
        assert any("needs a place" in str(n.message) for n in app._notifications)
        await pilot.press("ctrl+l", *"u281z", "enter")  # type one: Munich
        await settle(pilot)
        assert titles(app) == ["Gravel bike, 54 cm"]
        assert not app.screen.query_one("#near", Input).has_class("-invalid")


@pytest.mark.parametrize(("box", "text", "message"), [
    ("radius", "1..5", "not a number of km"), ("radius", "0", "more than 0"),
    ("near", "hello", "neither a geohash"), ("near", "95,10", "latitude")])
async def test_bad_filter_input_is_a_readable_error(box: str, text: str, message: str) -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.screen.query_one(f"#{box}", Input).value = text
        await pilot.press("enter")  # from the search box
        await settle(pilot)
        assert searches(fake) == []
        assert message in status(app)
        assert app.screen.query_one(f"#{box}", Input).has_class("-invalid")
        assert any(message in str(n.message) for n in app._notifications)


async def test_clear_filters_restores_my_place() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MarketScreen)
        screen.query_one("#near", Input).value = "u281z"
        screen.query_one("#radius", Input).value = "10"
        screen.category = "sports"
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("ctrl+x")  # the table has focus after a search
        await settle(pilot)
        call = searches(fake)[-1]
        assert call["category"] is None and call["radius_km"] is None
        assert screen.query_one("#near", Input).value == "u33db"
        assert len(titles(app)) == 4
