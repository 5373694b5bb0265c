"""Escrowed trades between three whole nodes (buyer, seller, arbiter) over loopback libp2p + DHT,
settled on the devchain: a final transaction counts only once the devchain (Bitcoin Core's
consensus code) accepted it and a block confirmed it; balances move exactly as agreed."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from escrow import bitcoin as btc
from escrow.terms import (
    ChainError,
    LocalEscrowError,
    Payout,
    PayoutOutput,
    ReleaseSigned,
    Role,
    State,
)
from node.escrow.book import EscrowRefused, encode_event
from node.trade.orders import OrderState
from p2pmarket.wire.escrow import EscrowStep, EscrowStepPayload, sign_escrow_step
from tests.support.escrow_world import (
    AMOUNT,
    ARBITER_FEE,
    FEE,
    Party,
    World,
    agree,
    escrow_state,
    escrow_world,
    funded,
    market,
    open_order,
    order_state,
)
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)
B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER


def payout_address(p: Party, order_id: str, role: Role) -> str:
    return p.escrow.escrows[order_id].machine.keys[role].payout_address


async def settled(world: World, order_id: str, *parties: Party) -> list[tuple[bytes, int]]:
    """Mine the settlement; every node sees it confirmed; returns its outputs."""
    await until(lambda: all(p.escrow.view(order_id).settlement_txid for p in parties))
    txid = parties[0].escrow.view(order_id).settlement_txid
    assert txid is not None
    await world.mine()
    status = await world.chain.tx_status(txid)
    assert status.confirmed  # in a block: every input passed the consensus check
    await until(lambda: all(p.escrow.view(order_id).confirmed for p in parties))
    raw = await world.chain.get_tx(txid)
    assert raw is not None
    return btc.tx_outputs(raw)


async def shipped_and_received(seller: Party, buyer: Party, order_id: str) -> None:
    await until(lambda: order_state(buyer, order_id) is OrderState.PAID)  # escrow-confirmed
    await seller.node.trade.mark_shipped(order_id, "DHL", "JJD000390007")
    await until(lambda: escrow_state(buyer, order_id) is State.SHIPPED)
    await buyer.node.trade.confirm_received(order_id)  # the buyer's node signs the release


async def test_release_and_a_tampered_copy_is_refused_by_consensus(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        adverts = await buyer.node.adverts.directory()  # the DHT's arbiter directory
        assert [(a.publisher, a.body.name, a.body.fee_percent_bp) for a in adverts] == [
            (arbiter.public, "Ada Arbiter", 200)]
        order_id = await open_order(seller, buyer, listing)
        await agree(world, order_id, buyer, seller, arbiter)
        await funded(world, order_id, buyer, seller, arbiter)
        await shipped_and_received(seller, buyer, order_id)
        await until(lambda: all(escrow_state(p, order_id) is State.RELEASED
                                for p in (buyer, seller, arbiter)))
        outputs = await settled(world, order_id, buyer, seller, arbiter)
        to_seller = payout_address(seller, order_id, S)
        assert world.devchain.balance_of(to_seller) == AMOUNT - FEE
        assert sum(v for _, v in outputs) == AMOUNT - FEE and len(outputs) == 1
        await until(lambda: order_state(seller, order_id) is OrderState.COMPLETED)
        await until(lambda: order_state(buyer, order_id) is OrderState.COMPLETED)
        assert seller.node.trade.order(order_id).log[-1].action.reference == (  # type: ignore
            seller.escrow.view(order_id).settlement_txid)
        # the buyer paid the escrow amount plus its own funding fee, nothing else
        spent = 1_000_000 - (await buyer.escrow.balance()).confirmed
        assert AMOUNT < spent < AMOUNT + 1_000
        # forced: the final transaction with its output raised is refused by consensus
        raw = seller.escrow.escrows[order_id].settlement_raw
        assert raw is not None
        i = raw.index((AMOUNT - FEE).to_bytes(8, "little"))
        with pytest.raises(ChainError):
            await world.chain.broadcast(raw[:i] + (AMOUNT - 100).to_bytes(8, "little")
                                        + raw[i + 8:])


async def test_refund_signed_by_the_seller_cosigned_by_the_buyer(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        order_id = await open_order(seller, buyer, listing)
        await agree(world, order_id, buyer, seller, arbiter)
        await funded(world, order_id, buyer, seller, arbiter)
        await seller.escrow.refund(order_id)
        await until(lambda: all(escrow_state(p, order_id) is State.REFUNDED
                                for p in (buyer, seller, arbiter)))
        await settled(world, order_id, buyer, seller, arbiter)
        assert world.devchain.balance_of(payout_address(buyer, order_id, B)) == AMOUNT - FEE
        assert world.devchain.balance_of(payout_address(seller, order_id, S)) == 0


async def test_dispute_won_by_the_buyer_when_the_seller_never_answers(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        order_id = await open_order(seller, buyer, listing)
        await agree(world, order_id, buyer, seller, arbiter)
        await funded(world, order_id, buyer, seller, arbiter)
        await until(lambda: order_state(buyer, order_id) is OrderState.PAID)
        await seller.node.trade.mark_shipped(order_id, "DHL", "JJD000390008")
        await until(lambda: escrow_state(arbiter, order_id) is State.SHIPPED)
        await world.stop(seller)  # the seller's node goes away for good
        await buyer.escrow.dispute(order_id, "the parcel never arrived")
        await until(lambda: escrow_state(arbiter, order_id) is State.DISPUTED)
        await until(lambda: len(arbiter.node.arbiters.dispute(order_id).cases) == 1)
        case = arbiter.node.arbiters.dispute(order_id)
        assert case.heard == (B,) and not case.can_rule
        assert [s.kind for s in case.cases[0].steps] == ["opened", "address", "paid", "shipped"]
        assert case.cases[0].listing_title == "Road bike" and case.cases[0].listing_matches
        with pytest.raises(LocalEscrowError):
            await arbiter.node.arbiters.rule_for(order_id, B, "too early")
        world.clock.offset += 15 * 86_400  # the ruling deadline (14 days) passes
        assert arbiter.node.arbiters.dispute(order_id).can_rule
        await arbiter.node.arbiters.rule_for(order_id, B, "no answer from the seller")
        await until(lambda: all(escrow_state(p, order_id) is State.RESOLVED
                                for p in (buyer, arbiter)))
        await settled(world, order_id, buyer, arbiter)
        win = AMOUNT - ARBITER_FEE - FEE
        assert world.devchain.balance_of(payout_address(buyer, order_id, B)) == win
        assert world.devchain.balance_of(payout_address(arbiter, order_id, A)) == ARBITER_FEE


async def test_dispute_won_by_the_seller_after_both_were_heard(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        order_id = await open_order(seller, buyer, listing)
        await agree(world, order_id, buyer, seller, arbiter)
        await funded(world, order_id, buyer, seller, arbiter)
        await until(lambda: order_state(buyer, order_id) is OrderState.PAID)
        await seller.node.trade.mark_shipped(order_id, "DHL", "JJD000390009")
        await until(lambda: escrow_state(buyer, order_id) is State.SHIPPED)
        await buyer.escrow.dispute(order_id, "not as described")
        await until(lambda: escrow_state(seller, order_id) is State.DISPUTED)
        await seller.escrow.add_evidence(order_id, "photos of the bike as sent")
        await until(lambda: len(arbiter.node.arbiters.dispute(order_id).statements) == 3)
        await until(lambda: len(arbiter.node.arbiters.dispute(order_id).cases) == 2)
        case = arbiter.node.arbiters.dispute(order_id)
        assert case.can_rule and case.heard == (B, S)
        assert case.cases[0].head == case.cases[1].head  # both logs are the same
        assert [(s.by, s.kind, s.text) for s in case.statements] == [
            (B, "dispute_opened", "not as described"),
            (S, "evidence", "order log sent to the arbiter"),  # the seller's node answered
            (S, "evidence", "photos of the bike as sent")]
        await arbiter.node.arbiters.rule_for(order_id, S, "as described")
        await until(lambda: all(escrow_state(p, order_id) is State.RESOLVED
                                for p in (buyer, seller, arbiter)))
        await settled(world, order_id, buyer, seller, arbiter)
        win = AMOUNT - ARBITER_FEE - FEE
        assert world.devchain.balance_of(payout_address(seller, order_id, S)) == win
        assert world.devchain.balance_of(payout_address(arbiter, order_id, A)) == ARBITER_FEE
        assert world.devchain.balance_of(payout_address(buyer, order_id, B)) == 0


def forge_release(buyer: Party, order_id: str, payout: Payout, fee: int | None = None,
                  tamper: bool = False, sign: bool = True) -> str:
    """What a dishonest buyer node could send: a release paying `payout`, signed by the
    buyer (unless not `sign`); `tamper` edits the seller's output after signing."""
    esc = buyer.escrow.escrows[order_id]
    assert esc.signer is not None and esc.funding is not None
    psbt = esc.signer.build(esc.funding, payout, fee)
    if sign:
        psbt = esc.signer.sign(psbt, esc.funding, payout)
    if tamper:
        raw = base64.b64decode(psbt)
        i = raw.index((AMOUNT - FEE).to_bytes(8, "little"))
        psbt = base64.b64encode(raw[:i] + (AMOUNT - FEE - 9_000).to_bytes(8, "little")
                                + raw[i + 8:]).decode()
    step = sign_escrow_step(buyer.identity, EscrowStepPayload(
        order=order_id, proposal=esc.proposal_hash, author=buyer.public,
        at_ms=int(time.time() * 1000), event=encode_event(ReleaseSigned(B, psbt))))
    for peer in esc.others():
        buyer.node.messenger.send(peer, EscrowStep(order=order_id, step=step))
    return psbt


async def test_bad_psbts_are_refused_before_anything_is_signed(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        order_id = await open_order(seller, buyer, listing)
        address = await agree(world, order_id, buyer, seller, arbiter)
        await funded(world, order_id, buyer, seller, arbiter)
        m = buyer.escrow.escrows[order_id].machine
        agreed = m.payout("release")
        to_buyer, to_seller = m.keys[B].payout_address, m.keys[S].payout_address
        forge_release(buyer, order_id, agreed, FEE, tamper=True)  # output edited after signing
        forge_release(buyer, order_id, agreed, FEE, sign=False)  # the agreed payout, no signature
        forge_release(buyer, order_id, Payout(  # the seller gets 30k less: a wrong amount
            "release", (PayoutOutput(to_seller, AMOUNT - FEE - 30_000),
                        PayoutOutput(to_buyer, 30_000)), None, 0, 5_000))
        forge_release(buyer, order_id, Payout(  # everything to the buyer: a wrong address
            "release", (), to_buyer, agreed.min_fee_sats, agreed.max_fee_sats), FEE)
        await until(lambda: len([u for u in seller.updates if isinstance(u, EscrowRefused)]) == 4
                    and len([u for u in arbiter.updates if isinstance(u, EscrowRefused)]) == 4)
        refused = [u for u in seller.updates if isinstance(u, EscrowRefused)]
        assert {(u.by, u.kind) for u in refused} == {("buyer", "release_signed")}
        reasons = [u.reason for u in refused]
        assert sum("not enough valid signatures" in r for r in reasons) == 2  # tampered, unsigned
        assert sum("outputs differ from the agreed payout" in r for r in reasons) == 2
        view = seller.escrow.view(order_id)
        assert view.state is State.FUNDED and view.signed == () and view.settlement_txid is None
        assert world.devchain.balance_of(address) == AMOUNT  # nothing spent the escrow
        # the honest release still goes through
        await shipped_and_received(seller, buyer, order_id)
        await until(lambda: escrow_state(seller, order_id) is State.RELEASED)
        await settled(world, order_id, seller, buyer)
        assert world.devchain.balance_of(to_seller) == AMOUNT - FEE


async def test_seller_restarted_after_funding_completes_the_trade(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        order_id = await open_order(seller, buyer, listing)
        await agree(world, order_id, buyer, seller, arbiter)
        await world.stop(seller)  # killed right after the funding went out
        await funded(world, order_id, buyer, arbiter)
        seller = await world.start("seller")  # same identity, mnemonic, node.db and wallet
        restored = seller.escrow.escrows[order_id]  # rebuilt from its database at open()
        assert len(restored.machine.keys) == 3 and restored.machine.address is not None
        await until(lambda: escrow_state(seller, order_id) is State.FUNDED)
        await shipped_and_received(seller, buyer, order_id)
        await until(lambda: all(escrow_state(p, order_id) is State.RELEASED
                                for p in (buyer, seller, arbiter)))
        await settled(world, order_id, buyer, seller, arbiter)
        await until(lambda: order_state(seller, order_id) is OrderState.COMPLETED)
        assert world.devchain.balance_of(payout_address(seller, order_id, S)) == AMOUNT - FEE
        assert (await seller.escrow.balance()).confirmed == AMOUNT - FEE  # its own wallet
