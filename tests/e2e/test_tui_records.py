"""The Profile screen's "My records" (p): each record's expiry and last publication from
`GET /records`, and a record no DHT node stored clearly marked, with the reason."""

from __future__ import annotations

from textual.widgets import DataTable

from tests.support.tui import fake_app, settle, text
from tui.screens.profile import ProfileScreen
from tui.screens.records import NOT_STORED, RecordsScreen


async def test_my_records_show_expiry_publication_and_what_is_stored_nowhere() -> None:
    app, fake = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f7")
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, RecordsScreen)
        assert fake.calls[-1][0] == "list_my_records"
        table = app.screen.query_one("#my-records", DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows == [
            ["profile", "—", "2025-07-15", "2025-06-15 15:07"],
            ["listing", fake.mine[0].id, "2025-07-15", NOT_STORED],
            ["review", "order-0001", "2026-06-15", "2025-06-15 15:08"],
        ]
        assert "1 of 3 not stored anywhere" in text(app, "#records-status")
        await pilot.press("down")  # the listing: its error in full
        await pilot.pause()
        assert "no DHT node stored it (no peers)" in text(app, "#records-status")

        fake.records = fake.records[:1]  # stored since: refresh shows it
        await pilot.press("r")
        await settle(pilot)
        assert table.row_count == 1
        assert "all stored in the DHT" in text(app, "#records-status")
        await pilot.press("escape")
        assert isinstance(app.screen, ProfileScreen)
