"""Escrow keys never repeat and old money is never taken for new: the attack of issue 14 item 1.

A buyer who could make the seller's and arbiter's key index repeat got the same escrow address
as an earlier, settled order, and the spent output there was accepted as payment. Now each
node picks its index with a secret (HMAC of its seed) and a registry refuses any index, address
or counterparty key a second order would share; funding must be unspent and newer than the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import node.escrow.reconcile as reconcile_module
from escrow.bitcoin import order_index as real_order_index
from escrow.terms import LocalEscrowError, Role, State
from escrow.wallet import NodeWallet
from node.escrow.book import EscrowNotice
from node.escrow.store import EscrowStore, KeyRepeated
from node.trade.orders import OrderState
from p2pmarket.storage import Database
from p2pmarket.words import new_words
from tests.support.escrow_world import (
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
AIMED = 4242  # the index an attacker would make every order's first candidate


def test_the_registry_gives_each_order_its_own_index_address_and_peer_keys() -> None:
    store = EscrowStore(Database.open(":memory:"))
    first = store.claim_index("order-1", [AIMED, 7], 100)
    again = store.claim_index("order-1", [1, 2], 999)  # stable: the slot it already has
    second = store.claim_index("order-2", [AIMED, 7], 101)
    assert (first.index, again.index, second.index) == (AIMED, AIMED, 7)
    assert again.made_height == 100
    with pytest.raises(KeyRepeated):
        store.claim_index("order-3", [AIMED, 7], 102)
    store.claim_address("order-1", "bcrt1qfirst", ["tpubBUYER1", "tpubARB"])
    with pytest.raises(KeyRepeated, match="already order order-1's"):
        store.claim_address("order-2", "bcrt1qfirst", ["tpubBUYER2", "tpubARB2"])
    with pytest.raises(KeyRepeated, match="used in order order-1"):
        store.claim_address("order-2", "bcrt1qsecond", ["tpubBUYER1", "tpubARB2"])
    store.claim_address("order-2", "bcrt1qsecond", ["tpubBUYER2", "tpubARB2"])
    store.claim_address("order-1", "bcrt1qfirst", ["tpubBUYER1", "tpubARB"])  # idempotent


def test_escrows_made_before_the_registry_keep_their_keys(tmp_path: Path) -> None:
    from escrow.bitcoin import legacy_order_index
    from node.escrow.store import MIGRATIONS

    db = Database.open(tmp_path / "node.db")
    db.migrate("escrow", MIGRATIONS[:1])  # a database from before the registry
    db.execute("INSERT INTO escrows (order_id, role, proposal, state, created, updated) "
               "VALUES ('old-order', 'seller', x'00', 'funded', 1, 1)")
    store = EscrowStore(db)
    slot = store.key_slot("old-order")
    assert slot is not None and slot.index == legacy_order_index("old-order")
    assert slot.made_height is None  # no freshness check for it: it may be funded already


async def test_a_forced_index_collision_gets_a_new_address(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def aimed(secret: bytes, order_id: str, attempt: int = 0) -> int:
        return AIMED if attempt == 0 else real_order_index(secret, order_id, attempt)

    monkeypatch.setattr(reconcile_module, "order_index", aimed)
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        first = await open_order(seller, buyer, listing)
        first_address = await agree(world, first, buyer, seller, arbiter)
        await funded(world, first, buyer, seller, arbiter)
        await seller.escrow.refund(first)  # the seller gives the money back: the output is spent
        await until(lambda: all(escrow_state(p, first) is State.REFUNDED
                                for p in (buyer, seller)))
        await world.mine()
        await until(lambda: world.devchain.balance_of(first_address) == 0)

        second = await open_order(seller, buyer, listing)
        second_address = await agree(world, second, buyer, seller, arbiter)
        assert second_address != first_address
        for party in (seller, arbiter, buyer):
            one, two = party.escrow.store.key_slot(first), party.escrow.store.key_slot(second)
            assert one is not None and two is not None and one.index != two.index
        # nothing was paid to the second address yet: the spent output of the first is not it
        assert all(escrow_state(p, second) is State.AGREED for p in (buyer, seller, arbiter))
        await funded(world, second, buyer, seller, arbiter)
        old, new = (seller.escrow.escrows[o].machine.funding for o in (first, second))
        assert old is not None and new is not None and new.txid != old.txid


async def test_a_buyer_reusing_its_key_is_refused_before_anything_is_paid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        first = await open_order(seller, buyer, listing)
        await agree(world, first, buyer, seller, arbiter)
        second = await open_order(seller, buyer, listing)
        # a hostile buyer's node: its key for the second order is the first order's key
        store = buyer.escrow.store
        monkeypatch.setattr(store, "key_slot", lambda order_id: EscrowStore.key_slot(
            store, first if order_id == second else order_id))
        notices: list[EscrowNotice] = []
        seller.escrow.listeners.append(
            lambda e: notices.append(e) if isinstance(e, EscrowNotice) else None)
        balance = (await buyer.escrow.balance()).confirmed
        await buyer.escrow.start(second)
        await until(lambda: any(n.kind == "escrow_refused" and n.order == second
                                for n in notices))
        assert "used in order" in seller.escrow.escrows[second].refused  # type: ignore[operator]
        assert escrow_state(seller, second) is State.PROPOSED  # never agreed: never paid
        with pytest.raises(LocalEscrowError, match="refusing this escrow"):
            await seller.escrow.reconciler.ensure_signer(seller.escrow.escrows[second])
        assert (await buyer.escrow.balance()).confirmed == balance
        assert order_state(seller, second) is OrderState.AWAITING_PAYMENT


async def test_spent_and_older_outputs_are_not_funding(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        wallet = await NodeWallet.open(new_words(), "regtest", None)
        address = await wallet.receive_address()
        await world.devchain.faucet(address, 50_000, confirm=True)
        tip = await world.chain.tip_height()
        found = await world.chain.find_funding(address, 50_000)
        assert found is not None and found.confirmations == 1
        # confirmed at or below the height our key was made: it was there before the escrow
        assert await world.chain.find_funding(address, 50_000, after_height=tip) is None
        assert await world.chain.find_funding(address, 50_000, after_height=tip - 1) is not None
        # spent: never funding, whatever spent it (a buyer still sees its own old payment)
        await wallet.sync(world.chain)
        other = await NodeWallet.open(new_words(), "regtest", None)
        await wallet.fund_escrow(world.chain, await other.receive_address(), 40_000,
                                 sat_per_vb=2)
        assert await world.chain.spender(found.txid, found.vout) is not None
        assert await world.chain.find_funding(address, 50_000) is None
        assert await world.chain.find_funding(address, 50_000, unspent=False) is not None
        await world.mine()
        assert await world.chain.find_funding(address, 50_000) is None
