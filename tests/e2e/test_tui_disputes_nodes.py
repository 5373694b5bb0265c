"""The arbiter's TUI against real nodes on the devchain: a dispute the buyer opened appears in
the Disputes screen with both parties' logs and statements; the arbiter rules with a split in
the form, and the escrow settles with exactly that split."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from escrow.terms import State
from node.trade.orders import OrderState
from tests.support.api import served
from tests.support.escrow_world import (
    AMOUNT,
    agree,
    escrow_state,
    escrow_world,
    funded,
    market,
    open_order,
    order_state,
)
from tests.support.tui import text
from tests.support.waiting import until
from tui.app import make_app
from tui.screens.disputes import DisputesScreen
from tui.widgets.forms import FormScreen

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def shows(pilot: Pilot[None], check: Callable[[], bool], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the app updates from its own workers
            await pilot.pause(0.1)


async def test_arbiter_rules_in_the_tui(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        order_id = await open_order(seller, buyer, listing)
        await agree(world, order_id, buyer, seller, arbiter)
        await funded(world, order_id, buyer, seller, arbiter)
        await until(lambda: order_state(buyer, order_id) is OrderState.PAID)
        async with served(arbiter) as (_, arb), served(buyer) as (_, buy):
            app = make_app(arb)
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.press("f6")
                await shows(pilot, lambda: isinstance(app.screen, DisputesScreen)
                            and "No disputes" in text(app, "#dispute-summary"))
                assert "Arbitrating as" in text(app, "#arbiter-advert")

                await buy.open_dispute(order_id, "it never arrived")
                # live: the escrow.changed event reloads the screen; both nodes answer
                await shows(pilot, lambda: "Ready for your ruling" in text(
                    app, "#dispute-summary"))
                summary = text(app, "#dispute-summary")
                assert "it never arrived" in summary and "order log sent" in summary
                table = app.screen.query_one("#disputes", DataTable)
                assert str(table.get_row_at(0)[0]) == order_id

                await pilot.press("u")
                await shows(pilot, lambda: isinstance(app.screen, FormScreen))
                form = app.screen
                to_buyer = 150_000
                form.query_one("#f-buyer_sat", Input).value = str(to_buyer)
                form.query_one("#f-seller_sat", Input).value = ""  # the rest
                form.query_one("#f-note", Input).value = "no proof of shipping"
                await pilot.press("ctrl+s")
                await shows(pilot, lambda: "Ruled" in text(app, "#dispute-summary"))
                assert "no proof of shipping" in text(app, "#dispute-summary")

        parties = (buyer, seller, arbiter)
        await until(lambda: all(escrow_state(p, order_id) is State.RESOLVED for p in parties))
        case = arbiter.escrow.view(order_id)
        assert case.ruling is not None and case.ruling.buyer_sats == to_buyer
        fee = case.ruling.fee_sats
        assert case.ruling.seller_sats == AMOUNT - to_buyer - fee - 2_000
