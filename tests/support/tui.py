"""The TUI over a fake client (tui.testing.FakeClient), as the e2e TUI tests drive and draw it."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static

from tui.app import MarketApp, make_app
from tui.testing import FakeClient

SIZE = (80, 24)  # the snapshot tests' terminal


def app(client: FakeClient | None = None) -> MarketApp:
    """An app over a fake client, offline (as the snapshot tests draw it)."""
    return make_app(client or FakeClient(), live=False)  # type: ignore[arg-type]


def fake_app(fake: FakeClient | None = None, *, live: bool = False
             ) -> tuple[MarketApp, FakeClient]:
    """An app and the fake client it talks to."""
    fake = fake or FakeClient()
    return make_app(fake, live=live), fake  # type: ignore[arg-type]


async def settle(pilot: Pilot[Any]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def text(app: MarketApp, selector: str) -> str:
    """What the `Static` at `selector` on the current screen shows ("" when there is none)."""
    try:
        return str(app.screen.query_one(selector, Static).render())
    except Exception:
        return ""
