"""A hostile chain against three whole nodes on the devchain: a reorg takes the funding's block
after FUNDED, the funding vanishes from the mempool too, a settlement is evicted. The nodes
notice, the seller is told before shipping, the escrow counts the funding again when it
returns, and the settlement is broadcast again until it confirms: nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from escrow.terms import Role, State
from node.escrow.book import EscrowNotice
from node.trade.errors import IllegalEvent
from node.trade.orders import OrderState
from tests.support.escrow_world import (
    AMOUNT,
    FEE,
    Party,
    agree,
    escrow_state,
    escrow_world,
    funded,
    market,
    open_order,
    order_state,
)
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(90)
B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER


def notices(party: Party) -> list[EscrowNotice]:
    seen: list[EscrowNotice] = []
    party.escrow.listeners.append(
        lambda e: seen.append(e) if isinstance(e, EscrowNotice) else None)
    return seen


async def test_a_reorg_after_funded_is_caught_before_shipping(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        told = notices(seller)
        order_id = await open_order(seller, buyer, listing)
        await agree(world, order_id, buyer, seller, arbiter)
        await funded(world, order_id, buyer, seller, arbiter)
        await until(lambda: order_state(seller, order_id) is OrderState.PAID)
        funding = seller.escrow.escrows[order_id].machine.funding
        assert funding is not None

        # the block with the funding is reorged away: the transaction is back in the mempool
        await world.devchain.invalidate(blocks=1)
        await until(lambda: all(escrow_state(p, order_id) is State.AGREED
                                for p in (buyer, seller, arbiter)), timeout=30)
        assert any(n.kind == "funding_lost" and funding.txid in n.detail for n in told)
        with pytest.raises(IllegalEvent, match="do not ship yet"):
            await seller.node.trade.mark_shipped(order_id, "DHL", "JJD000390007")

        # it confirms again: counted again, the buyer did not pay twice, shipping goes ahead
        await world.mine()
        await until(lambda: all(escrow_state(p, order_id) is State.FUNDED
                                for p in (buyer, seller, arbiter)), timeout=30)
        again = seller.escrow.escrows[order_id].machine.funding
        assert again == funding
        spent = 1_000_000 - (await buyer.escrow.balance()).confirmed
        assert AMOUNT < spent < AMOUNT + 1_000
        await seller.node.trade.mark_shipped(order_id, "DHL", "JJD000390007")
        await until(lambda: escrow_state(buyer, order_id) is State.SHIPPED)


async def test_funding_that_vanishes_is_reported_gone(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        told = notices(seller)
        order_id = await open_order(seller, buyer, listing)
        await agree(world, order_id, buyer, seller, arbiter)
        await funded(world, order_id, buyer, seller, arbiter)
        funding = seller.escrow.escrows[order_id].machine.funding
        assert funding is not None
        await world.devchain.invalidate(blocks=1)
        await world.devchain.evict(funding.txid)  # as a double spend by a miner would
        await until(lambda: any(n.kind == "funding_lost" and "gone" in n.detail
                                for n in told), timeout=30)
        assert escrow_state(seller, order_id) is State.AGREED
        with pytest.raises(IllegalEvent, match="do not ship yet"):
            await seller.node.trade.mark_shipped(order_id, "DHL", "JJD000390007")


async def test_an_evicted_settlement_is_broadcast_again(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        told = [n for p in (buyer, seller, arbiter) for n in [notices(p)]]
        order_id = await open_order(seller, buyer, listing)
        await agree(world, order_id, buyer, seller, arbiter)
        await funded(world, order_id, buyer, seller, arbiter)
        await until(lambda: order_state(buyer, order_id) is OrderState.PAID)
        await seller.node.trade.mark_shipped(order_id, "DHL", "JJD000390007")
        await until(lambda: escrow_state(buyer, order_id) is State.SHIPPED)
        await buyer.node.trade.confirm_received(order_id)
        await until(lambda: all(p.escrow.view(order_id).settlement_txid
                                for p in (buyer, seller, arbiter)))
        txid = seller.escrow.view(order_id).settlement_txid
        assert txid is not None
        await until(lambda: world.devchain.balance_of(
            seller.escrow.escrows[order_id].machine.keys[S].payout_address) == AMOUNT - FEE)
        await world.devchain.evict(txid)  # gone from the mempool, never mined
        # whichever node looks first puts it back (every node broadcasts a settlement)
        await until(lambda: any(n.kind == "rebroadcast" and n.detail == txid
                                for seen in told for n in seen), timeout=30)
        await until(lambda: world.devchain.balance_of(
            seller.escrow.escrows[order_id].machine.keys[S].payout_address) == AMOUNT - FEE,
            timeout=30)  # back in the mempool
        await world.mine()
        await until(lambda: all(p.escrow.view(order_id).confirmed
                                for p in (buyer, seller, arbiter)), timeout=30)
