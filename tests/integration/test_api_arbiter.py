"""Arbitration through the HTTP API of whole nodes: the arbiter's advert (PUT/GET/DELETE
/arbiter, seen in another node's GET /arbiters), its disputes with both parties' case files and
statements, and a split ruling that settles on the devchain."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from dht.testing import dht_network
from escrow.terms import Role, State
from node.api.hub import EventHub
from node.trade.orders import OrderState
from p2pmarket.api import schemas_trade as t
from p2pmarket.client import ApiError
from tests.support.api import api_node, served
from tests.support.escrow_world import (
    AMOUNT,
    ARBITER_FEE,
    FEE,
    agree,
    escrow_state,
    escrow_world,
    funded,
    market,
    open_order,
    order_state,
)
from tests.support.waiting import eventually, until

pytestmark = pytest.mark.timeout(60)


async def problem(call: Awaitable[object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call
    return caught.value


def escrow_events(hub: EventHub, since: int) -> list[dict[str, str]]:
    """The `escrow.changed` events the hub published after event `since`."""
    sub, missed = hub.subscribe(since)
    hub.unsubscribe(sub)
    return [json.loads(e.data) for e in missed if e.type == "escrow.changed"]


async def test_advert_published_listed_and_withdrawn(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        arbiter, buyer = await world.start("arbiter"), await world.start("buyer")
        async with served(arbiter) as (_, arb), served(buyer) as (_, other):
            assert (await problem(arb.get_arbiter_advert())).status == 404
            assert (await problem(arb.withdraw_arbiter_advert())).status == 404
            bad = await problem(arb.publish_arbiter_advert(
                t.ArbiterFields(name="Greedy", fee_percent_bp=5_000)))  # above 20 %
            assert bad.status == 422 and bad.errors[0]["pointer"] == "/fee_percent_bp"

            out = await arb.publish_arbiter_advert(t.ArbiterFields(
                name="Ada Arbiter", description="English, German. Rules in 3 days.",
                fee_percent_bp=150, fee_fixed_sat=500))
            assert (out.peer, out.name, out.fee_percent_bp, out.fee_fixed_sat) == (
                arbiter.identity.peer_id, "Ada Arbiter", 150, 500)
            assert await arb.get_arbiter_advert() == out

            async def listed() -> list[str]:
                return [a.name for a in (await other.list_arbiters()).items
                        if a.peer == arbiter.identity.peer_id]
            assert await eventually(listed, timeout=20) == ["Ada Arbiter"]

            await arb.withdraw_arbiter_advert()
            gone = await problem(arb.get_arbiter_advert())
            assert gone.status == 404 and gone.name == "not-found"

            async def unlisted() -> bool:
                return not await listed()
            await eventually(unlisted, timeout=20)  # a tombstone took the advert's slot


async def test_dispute_case_files_and_split_ruling(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        seller, buyer, arbiter, listing = await market(world)
        order_id = await open_order(seller, buyer, listing)
        await agree(world, order_id, buyer, seller, arbiter)
        await funded(world, order_id, buyer, seller, arbiter)
        await until(lambda: order_state(buyer, order_id) is OrderState.PAID)
        await seller.node.trade.mark_shipped(order_id, "DHL", "JJD000390010")
        await until(lambda: escrow_state(buyer, order_id) is State.SHIPPED)
        async with served(arbiter) as (arb_api, arb), served(buyer) as (_, buy), \
                served(seller) as (_, sell):
            assert (await arb.list_disputes()).items == []
            assert (await problem(arb.get_dispute(order_id))).status == 404  # not disputed
            assert (await problem(arb.get_dispute("no-such-order"))).status == 404
            assert (await problem(buy.get_dispute(order_id))).status == 404  # a party
            before = arb_api.hub.last_id

            await buy.open_dispute(order_id, "not as described")
            await until(lambda: escrow_state(seller, order_id) is State.DISPUTED)
            await sell.add_evidence(order_id, "photos of the bike as sent")

            async def heard() -> t.DisputeOut | None:
                case = await arb.get_dispute(order_id)
                return case if len(case.cases) == 2 and len(case.statements) == 3 else None
            case = await eventually(heard, timeout=20)
            listed = await arb.list_disputes(page_size=1)
            assert listed.items == [case] and listed.next_page_token is None
            assert (case.state, case.amount_sat, case.max_fee_sat) == (
                "disputed", AMOUNT, ARBITER_FEE)
            assert (case.buyer, case.seller) == (buyer.identity.peer_id, seller.identity.peer_id)
            assert case.opened_by == "buyer" and case.heard == ["buyer", "seller"]
            assert case.can_rule and case.ruling is None and case.ruling_due is not None
            assert sorted(c.party for c in case.cases) == ["buyer", "seller"]
            for copy in case.cases:
                assert [(s.by, s.kind) for s in copy.steps] == [
                    ("seller", "opened"), ("buyer", "address"), ("seller", "paid"),
                    ("seller", "shipped")]
                assert copy.listing_title == "Road bike" and copy.received > 0
            # both send the version the order was made on (the seller's current one was
            # edited by the sale: its node keeps the version each offer named)
            assert [c.listing_matches for c in case.cases] == [True, True]
            assert case.cases[0].head == case.cases[1].head  # the two logs agree
            assert [(s.by, s.kind, s.text) for s in case.statements] == [
                ("buyer", "dispute_opened", "not as described"),
                ("seller", "evidence", "order log sent to the arbiter"),  # its node answered
                ("seller", "evidence", "photos of the bike as sent")]
            # the arbiter's node already gets `escrow.changed` for the escrows it arbitrates
            assert {"order": order_id, "state": "disputed", "step": "dispute_opened"} in (
                escrow_events(arb_api.hub, before))

            too_much = await problem(arb.rule_case(order_id, AMOUNT, 1_000, "all of it"))
            assert too_much.status == 409 and too_much.name == "conflict"
            assert f"more than the {AMOUNT} sats in the escrow" in too_much.detail

            assert 0 < case.network_fee_min_sat <= FEE <= case.network_fee_max_sat
            generous = await problem(arb.rule_case(order_id, 1_000, 1_000, "oops"))
            assert generous.status == 409  # nearly all of it would go to the miners
            assert "leaves" in generous.detail and "miner fee" in generous.detail
            assert (await arb.get_dispute(order_id)).ruling is None

            to_seller = 100_000
            to_buyer = AMOUNT - ARBITER_FEE - FEE - to_seller
            ruled = await arb.rule_case(order_id, to_buyer, to_seller, "one wheel was bent")
            assert ruled.ruling == t.RulingOut(buyer_sat=to_buyer, seller_sat=to_seller,
                                               fee_sat=ARBITER_FEE, note="one wheel was bent")
            assert not ruled.can_rule
            again = await problem(arb.rule_case(order_id, to_buyer, to_seller))
            assert again.status == 409  # a ruling cannot change

            # the buyer has the larger share: its node co-signs at once and the escrow settles
            parties = (buyer, seller, arbiter)
            await until(lambda: all(escrow_state(p, order_id) is State.RESOLVED
                                    for p in parties))
            await until(lambda: all(p.escrow.view(order_id).settlement_txid for p in parties))
            await world.mine()
            await until(lambda: all(p.escrow.view(order_id).confirmed for p in parties))
            keys = arbiter.escrow.escrows[order_id].machine.keys
            for role, sats in ((Role.BUYER, to_buyer), (Role.SELLER, to_seller),
                               (Role.ARBITER, ARBITER_FEE)):
                assert world.devchain.balance_of(keys[role].payout_address) == sats
            final = await arb.get_dispute(order_id)
            assert final.state == "resolved" and final.ruling == ruled.ruling


async def test_node_without_escrow(tmp_path: Path) -> None:
    async with dht_network(3) as backbone, api_node(backbone, tmp_path / "n") as n:
        client = n.client
        calls: list[Callable[[], Awaitable[object]]] = [
            client.list_disputes, lambda: client.get_dispute("no-such-order"),
            lambda: client.rule_case("no-such-order", 1_000, 1_000),
            lambda: client.publish_arbiter_advert(t.ArbiterFields(name="Ada"))]
        for call in calls:
            err = await problem(call())
            assert (err.status, err.name) == (501, "not-implemented"), err
            assert "no chain configured" in err.detail
        assert (await problem(client.get_arbiter_advert())).status == 404
        assert (await problem(client.withdraw_arbiter_advert())).status == 404
