"""A full escrowed trade settled on the devchain between three in-process nodes, step by step.

    python bench/escrow.py [--trades 3] [--poll 0.1] [--tiny]

Three whole nodes (seller, buyer, arbiter: libp2p on loopback, a small DHT, SQLite, escrow
drivers) and a devchain. Per trade, after the order exists (offer, accept, address: not timed):
`key_exchange` (the buyer's `start` until all three agree on the address), `funding_sent` (until
the buyer's funding transaction is in the devchain's mempool), `funding_seen` (a block is mined
until all three nodes' watchers see the escrow funded), `release_signed` (the buyer confirms
receipt until the seller's node has co-signed: both signatures), `broadcast_accepted` (until the
devchain accepted the final transaction), and `total` (start to broadcast accepted).

The baseline, in the same run and on the same devchain: the same 2-of-3 settlement driven
directly (three `EscrowMachine`s and `EscrowSigner`s wired by function calls, the buyer's
`NodeWallet` paying, one `find_funding` per party after the block): the cost of the escrow
itself, without nodes, messages or watchers. Prints one JSON object; `ratio_total` is
total / baseline total (medians over the trades).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mnemonic import Mnemonic  # noqa: E402

from bench._harness import (  # noqa: E402
    Size,
    emit,
    loadavg,
    parse_sizes,
    percentile,
    ratio,
    rnd,
)
from escrow import bitcoin as btc  # noqa: E402
from escrow.machine import EscrowMachine  # noqa: E402
from escrow.terms import (  # noqa: E402
    Broadcast,
    DeriveEscrowAddress,
    DescriptorAcked,
    EscrowEvent,
    FinalizeAndBroadcast,
    Funded,
    FundEscrow,
    KeysExchanged,
    NeedSignature,
    ReleaseSigned,
    Role,
    State,
    Terms,
)
from escrow.wallet import NodeWallet  # noqa: E402
from node.escrow.book import Flag  # noqa: E402
from tests.support import escrow_world as ew  # noqa: E402

STEPS = ("key_exchange", "funding_sent", "funding_seen", "release_signed",
         "broadcast_accepted", "total")
SIZES = {"trades": Size(3, 1, "trades to time (median)"),
         "poll": Size(0.1, 0.1, "chain watcher interval, s", cast=float)}


async def until(predicate: Any, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls other tasks' state
            await asyncio.sleep(0.002)


async def node_trade(world: ew.World, parties: tuple[ew.Party, ew.Party, ew.Party],
                     listing: Any) -> dict[str, float]:
    seller, buyer, arbiter = parties
    order_id = await ew.open_order(seller, buyer, listing)
    everyone = (buyer, seller, arbiter)
    marks = [time.perf_counter()]
    await buyer.escrow.start(order_id)
    await until(lambda: all(ew.escrow_state(p, order_id) is State.AGREED for p in everyone))
    marks.append(time.perf_counter())
    address = buyer.escrow.view(order_id).address
    assert address is not None
    await until(lambda: world.devchain.balance_of(address) == ew.AMOUNT)
    marks.append(time.perf_counter())
    await world.mine()
    await until(lambda: all(ew.escrow_state(p, order_id) is State.FUNDED for p in everyone))
    marks.append(time.perf_counter())
    await until(lambda: ew.order_state(buyer, order_id) is ew.OrderState.PAID)
    await seller.node.trade.mark_shipped(order_id, "DHL", "JJD0001")
    await until(lambda: ew.escrow_state(buyer, order_id) is State.SHIPPED)
    release = time.perf_counter()  # untimed above: the shipment is a person's step
    await buyer.node.trade.confirm_received(order_id)
    await until(lambda: ew.escrow_state(seller, order_id) is State.RELEASED)
    signed = time.perf_counter()
    seller_esc = seller.escrow.escrows[order_id]
    await until(lambda: Flag.BROADCAST in seller_esc.flags)
    accepted = time.perf_counter()
    await world.mine()
    await until(lambda: ew.order_state(seller, order_id) is ew.OrderState.COMPLETED)
    steps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {"key_exchange": steps[0], "funding_sent": steps[1], "funding_seen": steps[2],
            "release_signed": signed - release, "broadcast_accepted": accepted - signed,
            "total": (marks[-1] - marks[0]) + (accepted - release)}


async def direct_trade(world: ew.World, wallet: NodeWallet, n: int) -> dict[str, float]:
    """The baseline: the same settlement with the escrow parts called directly."""
    words = {r: Mnemonic("english").to_mnemonic(bytes([i + 1 + 3 * n]) * 16)
             for i, r in enumerate(Role)}
    terms = Terms(order_id=f"bench-order-{n:04d}", amount_sats=ew.AMOUNT, arbiter_fee_bp=200,
                  arbiter_fee_fixed_sats=1_000)
    now = int(time.time())
    machines = {r: EscrowMachine(terms, r, now=now) for r in Role}
    keys = {r: await asyncio.to_thread(
        btc.derive_order_key, words[r],
        btc.order_index(btc.index_secret(words[r]), terms.order_id), "regtest") for r in Role}
    signers: dict[Role, btc.EscrowSigner] = {}
    payout_to = {r: await wallet.receive_address() for r in Role}
    queue: list[tuple[Role, EscrowEvent]] = []

    async def deliver() -> None:
        while queue:
            author, event = queue.pop(0)
            for role, m in machines.items():
                effects = m.send(event) if role is author else m.receive(event, author)
                for e in effects:
                    if isinstance(e, DeriveEscrowAddress):
                        policy = btc.EscrowPolicy("regtest", e.buyer_xpub, e.seller_xpub,
                                                  e.arbiter_xpub)
                        signers[role] = await asyncio.to_thread(btc.EscrowSigner, policy,
                                                                keys[role])
                        queue.append((role, DescriptorAcked(role, policy.address)))
                    elif isinstance(e, FundEscrow):
                        await wallet.fund_escrow(world.chain, e.address, e.amount_sats,
                                                 sat_per_vb=ew.FEE_RATE)
                    elif isinstance(e, NeedSignature) and role is Role.SELLER:
                        signed = await asyncio.to_thread(signers[role].sign, e.psbt, funding,
                                                         e.payout)
                        queue.append((role, ReleaseSigned(role, signed)))
                    elif isinstance(e, FinalizeAndBroadcast) and role is Role.SELLER:
                        raw = await asyncio.to_thread(btc.finalize, e.psbts)
                        queue.append((role, Broadcast(await world.chain.broadcast(raw))))

    t0 = time.perf_counter()
    for r in Role:
        queue.append((r, KeysExchanged(r, keys[r].xpub, payout_to[r])))
    await deliver()  # keys, acks, and the buyer's payment
    t1 = time.perf_counter()
    assert all(m.state is State.AGREED for m in machines.values())
    await world.mine()
    t2 = time.perf_counter()
    address = machines[Role.BUYER].address or ""
    for r in Role:
        found = await world.chain.find_funding(address, ew.AMOUNT)
        assert found is not None
        funding = await asyncio.to_thread(signers[r].add_funding, found.raw_tx)
        queue.append((r, Funded(found.txid, found.vout, found.amount, found.confirmations)))
    await deliver()
    t3 = time.perf_counter()
    b = signers[Role.BUYER]
    payout = machines[Role.BUYER].payout("release")
    psbt = await asyncio.to_thread(b.build, funding, payout, ew.FEE_RATE * 220)
    queue.append((Role.BUYER, ReleaseSigned(Role.BUYER, await asyncio.to_thread(
        b.sign, psbt, funding, payout))))
    await deliver()  # co-sign, finalize, broadcast
    t4 = time.perf_counter()
    assert machines[Role.SELLER].settlement_txid is not None
    return {"key_exchange_and_funding_sent": t1 - t0, "funding_seen": t3 - t2,
            "release_signed_and_broadcast": t4 - t3, "total": (t1 - t0) + (t4 - t3)}


def _median(runs: list[dict[str, float]], key: str) -> float | None:
    return rnd(percentile((r[key] * 1000 for r in runs), 0.5), 1)


async def main(trades: int, poll: float) -> dict[str, Any]:
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="p2pm-bench-escrow-"))
    setup = time.perf_counter()
    async with ew.escrow_world(tmp) as world:
        world.poll = poll
        seller, buyer, arbiter, listing = await ew.market(world)
        await world.devchain.faucet(await buyer.escrow.receive_address(), trades * 300_000)
        setup_s = time.perf_counter() - setup
        runs = [await node_trade(world, (seller, buyer, arbiter), listing)
                for _ in range(trades)]
        wallet = await NodeWallet.open(Mnemonic("english").generate(128), "regtest", None)
        await world.devchain.faucet(await wallet.receive_address(), 5_000_000)
        await wallet.sync(world.chain)
        base = [await direct_trade(world, wallet, n) for n in range(trades)]
    nodes = {k: _median(runs, k) for k in STEPS}
    baseline = {k: _median(base, k) for k in base[0]}
    return {
        "trades": trades, "poll_s": poll, "amount_sats": ew.AMOUNT, "setup_s": round(setup_s, 2),
        "nodes_ms": nodes, "first_trade_ms": {k: round(runs[0][k] * 1000, 1) for k in STEPS},
        "baseline_ms": baseline, "ratio_total": ratio(nodes["total"], baseline["total"], 2),
        "cpus": os.cpu_count(), "loadavg": loadavg(),
    }


if __name__ == "__main__":
    args = parse_sizes(__doc__, SIZES)
    emit(asyncio.run(main(args.trades, args.poll)))
