"""Peers' words (titles, descriptions, chats, notes, names) are shown as they are: markup in
them neither styles the screen nor adds click actions."""

from __future__ import annotations

import msgspec
from textual.widgets import DataTable, Static

from p2pmarket.client import Event
from tui.app import MarketApp, make_app
from tui.screens.listing import ListingScreen
from tui.testing import SELLER, FakeClient, listing

EVIL = "[@click=app.quit]Free[/] [b]phone[/b] [red]x"


def evil_client() -> FakeClient:
    fake = FakeClient(events=[Event(9, "chat.received",
                                    {"conversation": "offer-0001", "sender": SELLER,
                                     "text": EVIL})])
    fake.market = [msgspec.structs.replace(listing(1, EVIL, 100), description=EVIL,
                                           tags=["[i]tag"])]
    return fake


async def settle(app: MarketApp, pilot: object) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()  # type: ignore[attr-defined]


async def test_markup_from_peers_is_shown_literally() -> None:
    fake = evil_client()
    app = make_app(fake, live=False)  # type: ignore[arg-type]
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("enter")
        await settle(app, pilot)
        table = app.screen.query_one("#results", DataTable)
        assert str(table.get_row_at(0)[0]) == EVIL
        await pilot.click("#results", offset=(5, 1))  # on the title: no action in it
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, ListingScreen)
        details = app.screen.query_one("#listing-details", Static).render()
        assert EVIL in str(details) and "[i]tag" in str(details)
        await pilot.click("#listing-details", offset=(2, 0))  # the would-be quit link
        await pilot.pause()
        assert app.is_running and app.return_code is None


async def test_a_chat_notification_is_plain_text() -> None:
    fake = evil_client()
    app = make_app(fake, live=True)  # type: ignore[arg-type]
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.5)  # the fake stream's event arrives at once
        messages = [n.message for n in app._notifications]
        assert EVIL[:60] in messages
        assert all(not n.markup for n in app._notifications)
