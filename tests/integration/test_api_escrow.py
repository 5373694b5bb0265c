"""Escrow and wallet through the HTTP API on nodes with a chain (the devchain)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from escrow.terms import State
from node.api.server import ApiServer
from node.trade.orders import OrderState
from p2pmarket.client import ApiError, Client
from tests.support.escrow_world import (
    AMOUNT,
    escrow_state,
    escrow_world,
    market,
    open_order,
    order_state,
)
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(90)


async def test_buyer_funds_and_releases_through_the_api(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        order_id = await open_order(seller, buyer, listing)
        api = ApiServer(buyer.datadir, port=0, stop=asyncio.Event())
        await api.start()
        api.attach(buyer.node)
        client = Client.from_datadir(buyer.datadir, timeout=30)
        try:
            wallet = await client.get_wallet()
            assert wallet.network == "regtest" and wallet.confirmed_sat >= AMOUNT
            assert (await client.new_receive_address()).address.startswith("bcrt1")
            with pytest.raises(ApiError) as unknown:
                await client.get_escrow("no-such-order")
            assert unknown.value.status == 404

            out = await client.fund_escrow(order_id)  # proposes; the node pays when agreed
            assert out.order_id == order_id
            await until(lambda: escrow_state(buyer, order_id) is State.AGREED)
            await until(lambda: buyer.escrow.view(order_id).address is not None
                        and world.devchain.balance_of(
                            buyer.escrow.view(order_id).address or "") == AMOUNT)
            await world.mine()
            await until(lambda: escrow_state(seller, order_id) is State.FUNDED
                        and escrow_state(buyer, order_id) is State.FUNDED)
            status = await client.get_escrow(order_id)
            assert status.state in ("funded", "shipped") and "release" in status.can
            with pytest.raises(ApiError) as wrong:
                await client.rule_dispute(order_id, buyer_sat=AMOUNT, seller_sat=0,
                                         note="mine")  # only the arbiter rules
            assert wrong.value.status == 409

            await seller.node.trade.mark_shipped(order_id, "DHL", "JJD0001")
            await until(lambda: order_state(buyer, order_id) is OrderState.SHIPPED)
            await client.release_escrow(order_id)
            assert "release" not in (await client.get_escrow(order_id)).can  # signed already
            await until(lambda: escrow_state(seller, order_id) is State.RELEASED, timeout=30)
        finally:
            await client.close()
            await api.stop()
        assert arbiter.node.escrow is not None
