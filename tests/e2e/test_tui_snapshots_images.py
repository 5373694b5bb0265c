"""Snapshot tests of the TUI's images at 80x24 over the fake client: the listing screen's preview
(half-blocks, as in every headless app) and the Sell forms' Images field.
Record with `pytest tests/e2e/test_tui_snapshots_images.py --snapshot-update`."""

from __future__ import annotations

from typing import Any

import msgspec
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.widgets import Input

from tests.support.tui import SIZE, app, settle
from tui.testing import FakeClient, image_ref


async def listing_open(pilot: Pilot[Any]) -> None:
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press("enter")
    await settle(pilot)
    await settle(pilot)  # the preview's worker


class TestListingImages:
    def test_first_image(self, snap_compare: Any) -> None:
        assert snap_compare(app(), terminal_size=SIZE, run_before=listing_open)

    def test_next_image(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await listing_open(pilot)
            await pilot.press("right_square_bracket")
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)

    def test_image_unavailable(self, snap_compare: Any) -> None:
        client = FakeClient()
        client.images[image_ref(1).sha256] = b"<html>not an image</html>"
        assert snap_compare(app(client), terminal_size=SIZE, run_before=listing_open)


class TestSellImages:
    def test_create_form_with_a_missing_file(self, snap_compare: Any) -> None:
        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f4")
            await settle(pilot)
            await pilot.press("n")
            await settle(pilot)
            await pilot.press(*"Lamp")
            images = pilot.app.screen.query_one("#f-images", Input)
            images.focus()
            await pilot.press(*"no-such-photo.png", "ctrl+s")
            await settle(pilot)
            pilot.app.screen.query_one("#form-fields", VerticalScroll).scroll_end(animate=False)
            await settle(pilot)
        assert snap_compare(app(), terminal_size=SIZE, run_before=run)

    def test_edit_form_keeps_images(self, snap_compare: Any) -> None:
        client = FakeClient()
        client.mine[0] = msgspec.structs.replace(client.mine[0],
                                                 images=[image_ref(1), image_ref(2)])

        async def run(pilot: Pilot[Any]) -> None:
            await pilot.press("f4")
            await settle(pilot)
            await pilot.press("e")
            await settle(pilot)
        assert snap_compare(app(client), terminal_size=SIZE, run_before=run)
