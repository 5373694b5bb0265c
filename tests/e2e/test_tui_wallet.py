"""The TUI's wallet (F5, then w) over the fake client: balance, receive address, history, and a
send that signs nothing before its confirmation shows amount, fee, total and destination."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Static

from tests.support.tui import SIZE, fake_app, settle, text
from tui.screens.wallet import WalletScreen
from tui.widgets.forms import FormScreen

pytestmark = pytest.mark.timeout(60)
TO = "bcrt1qrecipient0000000000000000000000000000"


async def test_wallet_shows_balance_address_and_history() -> None:
    app, fake = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert isinstance(app.screen, WalletScreen)
        assert "150000 sat" in text(app, "#wallet-balance") and "synced" in text(app,
                                                                                  "#wallet-balance")
        assert "bcrt1qfakereceive0001" in text(app, "#wallet-receive")
        assert app.screen.query_one("#wallet-history", DataTable).row_count == 1
        await pilot.press("a")  # a new receive address
        await settle(pilot)
        assert "bcrt1qfakereceive0002" in text(app, "#wallet-receive")
        await pilot.press("r")  # sync now
        await settle(pilot)
        assert ("get_wallet", (True,)) in fake.calls
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, WalletScreen)


async def test_send_asks_for_confirmation_with_the_fee() -> None:
    app, fake = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, FormScreen)
        form.query_one("#f-address", Input).value = "tb1qwrongnetwork"
        form.query_one("#f-amount", Input).value = "100000"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "not a valid regtest address" in str(form.query_one("#err-address",
                                                                    Static).render())
        form.query_one("#f-address", Input).value = TO
        await pilot.press("ctrl+s")
        await settle(pilot)

        dialog = app.screen
        assert isinstance(dialog, FormScreen) and dialog.form_title == "Confirm the payment"
        shown = str(dialog.query_one("#form-note", Static).render())
        assert "100000 sat" in shown and TO in shown
        assert "282 sat (2 sat/vB" in shown and "100282 sat leaves the wallet" in shown
        assert not any(name == "send_from_wallet" for name, _ in fake.calls)  # not yet

        await pilot.press("escape")  # cancelled: nothing is sent
        await settle(pilot)
        assert isinstance(app.screen, WalletScreen)
        assert not any(name == "send_from_wallet" for name, _ in fake.calls)

        await pilot.press("s")
        await settle(pilot)
        app.screen.query_one("#f-address", Input).value = TO
        app.screen.query_one("#f-amount", Input).value = "100000"
        await pilot.press("ctrl+s")
        await settle(pilot)
        await pilot.press("ctrl+s")  # Send
        await settle(pilot)
        sends = [args for name, args in fake.calls if name == "send_from_wallet"]
        assert len(sends) == 1 and sends[0][:3] == (TO, 100_000, 282)
        assert isinstance(app.screen, WalletScreen)
        assert app.screen.query_one("#wallet-history", DataTable).row_count == 2
        assert "49718 sat" in text(app, "#wallet-balance")
