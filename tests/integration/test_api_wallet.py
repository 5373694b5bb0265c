"""The node wallet through the HTTP API on a node with a chain (the devchain): balance from the
last sync, preview and send (checked by Bitcoin Core's consensus library), refusals, an
idempotent retry, history, and confirmed coins only (also for escrow funding)."""

from __future__ import annotations

from pathlib import Path

import pbk
import pytest
from mnemonic import Mnemonic

from escrow.bitcoin import HotWallet, InsufficientFunds
from escrow.chain import EsploraChain
from escrow.devchain.primitives import Tx, hash_hex
from p2pmarket.client import ApiError
from tests.support.api import served
from tests.support.escrow_world import escrow_world

pytestmark = pytest.mark.timeout(90)

MAINNET_ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
TESTNET_ADDRESS = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"


def someone_else() -> str:
    return HotWallet(Mnemonic("english").generate(128), "regtest").receive_address()


async def problem(call: object) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def consensus_check(chain: EsploraChain, txid: str) -> int:
    """Verify every input of `txid` with Bitcoin Core's consensus library; the input count."""
    raw = await chain.get_tx(txid)
    assert raw is not None
    tx = Tx.parse(raw)
    spent = []
    for txin in tx.inputs:
        prev = await chain.get_tx(hash_hex(txin.prevout.txid))
        assert prev is not None
        spent.append(Tx.parse(prev).outputs[txin.prevout.vout])
    ptx = pbk.Transaction(raw)
    scripts = [pbk.ScriptPubkey(o.script_pubkey) for o in spent]
    pre = pbk.script.PrecomputedTransactionData(
        ptx, [pbk.TransactionOutput(s, o.value) for s, o in zip(scripts, spent, strict=True)])
    for n, (script, out) in enumerate(zip(scripts, spent, strict=True)):
        assert script.verify(out.value, ptx, pre, n, pbk.ScriptVerificationFlags.ALL)
    return len(spent)


async def test_send_from_the_wallet(tmp_path: Path) -> None:
    async with escrow_world(tmp_path) as world:
        buyer = await world.start("buyer")
        funds = buyer.escrow.funds
        funds.refresh_every = 0  # every refresh=true syncs (the rate limit is tested below)
        async with served(buyer) as (_api, client):
            await world.devchain.faucet(await buyer.escrow.receive_address(), 200_000)
            await world.devchain.faucet(await buyer.escrow.receive_address(), 50_000,
                                        confirm=False)
            wallet = await client.get_wallet(refresh=True)
            assert (wallet.confirmed_sat, wallet.pending_sat) == (200_000, 50_000)
            assert wallet.synced_at is not None and wallet.sync_error is None
            to = someone_else()

            preview = await client.preview_wallet_send(to, 150_000)
            assert preview.address == to and preview.amount_sat == 150_000
            assert preview.fee_sat > 0 and preview.total_sat == 150_000 + preview.fee_sat
            assert preview.change_sat == 200_000 - preview.total_sat
            assert preview.fee_rate_sat_vb == 2 and preview.spendable_sat == 200_000

            # refusals, before anything is signed
            more = await problem(client.preview_wallet_send(to, 220_000))  # needs unconfirmed
            assert (more.status, more.name) == (409, "insufficient-funds")
            for wrong in (MAINNET_ADDRESS, TESTNET_ADDRESS, "bcrt1qnotanaddress000000"):
                bad = await problem(client.send_from_wallet(wrong, 10_000, max_fee_sat=1_000))
                assert bad.status == 422 and bad.errors[0]["pointer"] == "/address"
            dust = await problem(client.send_from_wallet(to, 100, max_fee_sat=1_000))
            assert dust.status == 422 and dust.errors[0]["pointer"] == "/amount_sat"
            greedy = await problem(client.preview_wallet_send(to, 10_000, fee_rate_sat_vb=500))
            assert greedy.status == 422 and greedy.errors[0]["pointer"] == "/fee_rate_sat_vb"
            dearer = await problem(client.send_from_wallet(
                to, 150_000, max_fee_sat=preview.fee_sat - 1, idempotency_key="dearer-0001"))
            assert (dearer.status, dearer.name) == (409, "fee-changed")
            assert world.devchain.balance_of(to) == 0

            sent = await client.send_from_wallet(to, 150_000, max_fee_sat=preview.fee_sat,
                                                 idempotency_key="pay-alice-0001")
            assert (sent.amount_sat, sent.fee_sat, sent.change_sat) == (
                150_000, preview.fee_sat, preview.change_sat)
            assert not sent.replayed
            assert world.devchain.balance_of(to) == 150_000  # the devchain took it ...
            assert await consensus_check(world.chain, sent.txid) == 1  # ... and so does pbk

            again = await client.send_from_wallet(to, 150_000, max_fee_sat=preview.fee_sat,
                                                  idempotency_key="pay-alice-0001")
            assert again.replayed and again.txid == sent.txid
            assert world.devchain.balance_of(to) == 150_000  # paid once
            seen = await client.preview_wallet_send(to, 150_000, idempotency_key="pay-alice-0001")
            assert seen.sent_txid == sent.txid and seen.fee_sat == sent.fee_sat
            reused = await problem(client.send_from_wallet(
                to, 20_000, max_fee_sat=preview.fee_sat, idempotency_key="pay-alice-0001"))
            assert (reused.status, reused.name) == (409, "idempotency-key-reused")

            # what is left is unconfirmed (change, the 50k): nothing can be spent yet
            wallet = await client.get_wallet()
            assert wallet.confirmed_sat == 0
            assert wallet.pending_sat == 50_000 + sent.change_sat
            late = await problem(client.preview_wallet_send(to, 10_000))
            assert (late.status, late.name) == (409, "insufficient-funds")
            with pytest.raises(InsufficientFunds):  # escrow funding: confirmed coins only
                await buyer.escrow.wallet.fund_escrow(world.chain, to, 10_000)

            history = (await client.list_wallet_transactions()).items
            assert history[0].height is None and history[1].height is None  # unconfirmed first
            mine = next(t for t in history if t.txid == sent.txid)
            assert (mine.txid, mine.direction, mine.address) == (sent.txid, "out", to)
            assert mine.net_sat == -sent.total_sat and mine.fee_sat == sent.fee_sat
            assert mine.confirmations == 0 and mine.height is None
            assert sorted(t.net_sat for t in history) == [-sent.total_sat, 50_000, 200_000]

            await world.mine()
            wallet = await client.get_wallet(refresh=True)
            assert (wallet.confirmed_sat, wallet.pending_sat) == (50_000 + sent.change_sat, 0)
            page = await client.list_wallet_transactions(page_size=2)
            assert len(page.items) == 2 and page.next_page_token is not None
            rest = await client.list_wallet_transactions(page_token=page.next_page_token)
            confirmations = {t.txid: t.confirmations for t in [*page.items, *rest.items]}
            assert confirmations[sent.txid] == 1

            # a sweep: everything confirmed, less the fee, in one output
            sweep = await client.preview_wallet_send(to, sweep=True)
            assert sweep.sweep and sweep.change_sat == 0
            assert sweep.total_sat == wallet.confirmed_sat
            swept = await client.send_from_wallet(to, sweep.amount_sat,
                                                  max_fee_sat=sweep.fee_sat)
            assert swept.change_sat == 0 and swept.fee_sat == sweep.fee_sat
            assert await consensus_check(world.chain, swept.txid) == 2
            assert (await client.get_wallet()).confirmed_sat == 0


async def test_get_wallet_serves_the_last_sync(tmp_path: Path) -> None:
    """`GET /wallet` asks the chain nothing; `refresh=true` syncs, at most every few seconds."""
    async with escrow_world(tmp_path) as world:
        buyer = await world.start("buyer")
        buyer.escrow.funds.refresh_every = 3600.0
        async with served(buyer) as (_api, client):
            address = await buyer.escrow.receive_address()
            first = await client.get_wallet(refresh=True)  # the first refresh syncs
            assert first.confirmed_sat == 0 and first.synced_at is not None
            await world.devchain.faucet(address, 70_000)
            assert (await client.get_wallet()).confirmed_sat == 0  # no sync: the last one
            again = await client.get_wallet(refresh=True)  # too soon: the last one too
            assert again.confirmed_sat == 0 and again.synced_at == first.synced_at
            await buyer.escrow.funds.tick()  # the background sync is not due either
            assert (await client.get_wallet()).confirmed_sat == 0
            buyer.escrow.funds.sync_every = 0
            await buyer.escrow.funds.tick()  # the driver's watch loop calls this each round
            synced = await client.get_wallet()
            assert synced.confirmed_sat == 70_000 and synced.synced_at is not None
            assert synced.synced_at > (first.synced_at or 0)

