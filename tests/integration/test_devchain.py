"""The devchain against real clients: BDK wallets scan, spend and broadcast through its Esplora
API, a 2-of-3 escrow settles, and bad transactions are refused by the chain rules or by Bitcoin
Core's consensus check. Loopback only; blocking BDK calls run in threads."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import bdkpython as bdk
import pytest

from escrow.devchain.addresses import address_to_script, p2wpkh_script, scripthash
from escrow.devchain.faucet import FaucetKey, sign_p2wpkh
from escrow.devchain.primitives import (
    REGTEST_GENESIS_HASH,
    OutPoint,
    Tx,
    TxIn,
    TxOut,
    hash_hex,
    sha256d,
)
from escrow.devchain.server import Devchain, DevchainError, serve_devchain

pytestmark = pytest.mark.timeout(120)

KIND, NET = bdk.NetworkKind.TEST, bdk.Network.REGTEST
BURN = p2wpkh_script(bytes(20))
T = TypeVar("T")


@pytest.fixture
async def chain() -> AsyncIterator[Devchain]:
    async with Devchain.running(":memory:") as running:
        yield running


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


def make_wallet(seed: int) -> bdk.Wallet:
    root = bdk.DescriptorSecretKey(KIND, bdk.Mnemonic.from_entropy(bytes([seed]) * 16), None)
    external = bdk.Descriptor.new_bip84(root, bdk.KeychainKind.EXTERNAL, KIND)
    internal = bdk.Descriptor.new_bip84(root, bdk.KeychainKind.INTERNAL, KIND)
    return bdk.Wallet(external, internal, NET, bdk.Persister.new_in_memory())


def address_of(wallet: bdk.Wallet) -> str:
    return str(wallet.reveal_next_address(bdk.KeychainKind.EXTERNAL).address)


async def full_scan(chain: Devchain, wallet: bdk.Wallet) -> bdk.Balance:
    def scan() -> bdk.Balance:
        client = bdk.EsploraClient(chain.url)
        wallet.apply_update(client.full_scan(wallet.start_full_scan().build(), 10, 4))
        return wallet.balance()

    return await blocking(scan)


async def sync(chain: Devchain, wallet: bdk.Wallet) -> bdk.Balance:
    def run() -> bdk.Balance:
        client = bdk.EsploraClient(chain.url)
        wallet.apply_update(client.sync(wallet.start_sync_with_revealed_spks().build(), 4))
        return wallet.balance()

    return await blocking(run)


def signed_payment(wallet: bdk.Wallet, spk: bytes, sats: int) -> bdk.Transaction:
    psbt = (bdk.TxBuilder().add_recipient(bdk.Script(spk), bdk.Amount.from_sat(sats))
            .fee_rate(bdk.FeeRate.from_sat_per_vb(2)).finish(wallet))
    assert wallet.sign(psbt, None)
    return psbt.extract_tx()


async def http(chain: Devchain, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, chain.url + path, **kw) as response:
            if response.content_type.endswith("json"):
                return response.status, await response.json(content_type=None)
            return response.status, await response.text()


async def broadcast_hex(chain: Devchain, raw: bytes) -> tuple[int, str]:
    status, text = await http(chain, "POST", "/tx", data=raw.hex())
    return status, str(text)


async def funded_wallet(chain: Devchain, seed: int, sats: int = 1_000_000) -> bdk.Wallet:
    wallet = make_wallet(seed)
    await chain.faucet(address_of(wallet), sats)
    balance = await full_scan(chain, wallet)
    assert balance.confirmed.to_sat() == sats
    return wallet


# -- chain and Esplora shape ------------------------------------------------------------------


async def test_regtest_genesis_and_block_endpoints(chain: Devchain) -> None:
    assert (await http(chain, "GET", "/block-height/0"))[1] == REGTEST_GENESIS_HASH
    assert (await http(chain, "GET", "/blocks/tip/height"))[1] == "101"  # faucet bootstrap
    status, summaries = await http(chain, "GET", "/blocks")
    assert status == 200 and [b["height"] for b in summaries] == list(range(101, 91, -1))
    assert summaries[0]["previousblockhash"] == summaries[1]["id"]
    assert summaries[0]["difficulty"] == pytest.approx(4.656542373906925e-10)
    assert (await http(chain, "GET", "/blocks/0"))[1][0]["id"] == REGTEST_GENESIS_HASH
    header = bytes.fromhex((await http(chain, "GET", f"/block/{summaries[0]['id']}/header"))[1])
    assert hash_hex(sha256d(header)) == summaries[0]["id"]
    status, block_status = await http(chain, "GET", f"/block/{REGTEST_GENESIS_HASH}/status")
    assert block_status["in_best_chain"] and block_status["next_best"]
    assert (await http(chain, "GET", "/block-height/102"))[0] == 404
    assert (await http(chain, "GET", "/tx/" + "00" * 32))[0] == 404
    # electrs answers these for unknown transactions instead of 404 (BDK's sync relies on it)
    assert (await http(chain, "GET", f"/tx/{'00' * 32}/status"))[1] == {"confirmed": False}
    assert (await http(chain, "GET", f"/tx/{'00' * 32}/outspend/0"))[1] == {"spent": False}

    client = bdk.EsploraClient(chain.url)
    assert await blocking(client.get_height) == 101
    assert str(await blocking(client.get_block_hash, 0)) == REGTEST_GENESIS_HASH
    tip = await blocking(client.get_tip_hash)
    assert str(tip) == summaries[0]["id"]
    block = await blocking(client.get_block_by_hash, tip)
    assert block is not None
    assert (await blocking(client.get_fee_estimates))[1] >= 1.0


async def test_bdk_full_scan_sees_faucet_funds(chain: Devchain) -> None:
    wallet = make_wallet(1)
    address = address_of(wallet)
    await chain.faucet(address, 1_000_000)
    await chain.faucet(address, 50_000, confirm=False)
    balance = await full_scan(chain, wallet)
    assert balance.confirmed.to_sat() == 1_000_000
    assert balance.total.to_sat() == 1_050_000
    assert chain.balance_of(address) == 1_050_000
    assert chain.balance_of(address, include_mempool=False) == 1_000_000
    await chain.mine(1)
    assert (await sync(chain, wallet)).confirmed.to_sat() == 1_050_000


async def test_bdk_spend_is_accepted_mined_and_described(chain: Devchain) -> None:
    sender, receiver = await funded_wallet(chain, 2), make_wallet(3)
    to = address_of(receiver)
    tx = signed_payment(sender, address_to_script(to), 300_000)
    client = bdk.EsploraClient(chain.url)
    await blocking(client.broadcast, tx)
    txid = tx.compute_txid()
    assert hash_hex(bytes.fromhex(str(txid))[::-1]) == str(txid)
    assert bytes.fromhex(str(txid))[::-1] in chain.state.mempool
    assert not (await blocking(client.get_tx_status, txid)).confirmed

    await chain.mine(1)
    status = await blocking(client.get_tx_status, txid)
    assert status.confirmed and status.block_height == chain.state.height
    info = await blocking(client.get_tx_info, txid)
    assert info is not None and info.fee == sender.calculate_fee(tx).to_sat()
    assert (await blocking(client.get_merkle_proof, txid)) is not None
    spent = tx.input()[0].previous_output
    outspend = await blocking(client.get_output_status, spent.txid, spent.vout)
    assert outspend is not None and outspend.spent
    assert (await full_scan(chain, receiver)).confirmed.to_sat() == 300_000
    fee = sender.calculate_fee(tx).to_sat()
    assert (await sync(chain, sender)).confirmed.to_sat() == 1_000_000 - 300_000 - fee

    status_code, body = await http(chain, "GET", f"/tx/{txid}")
    assert status_code == 200 and body["status"]["confirmed"]
    vin = body["vin"][0]
    assert vin["prevout"]["scriptpubkey_type"] == "v0_p2wpkh" and len(vin["witness"]) == 2
    assert {o["scriptpubkey_address"] for o in body["vout"]} >= {to}
    assert (await http(chain, "GET", f"/tx/{txid}/hex"))[1] == tx.serialize().hex()


async def test_double_spend_refused(chain: Devchain) -> None:
    wallet = await funded_wallet(chain, 4)
    first = signed_payment(wallet, BURN, 100_000)
    second = signed_payment(wallet, BURN, 200_000)  # BDK picks the same single coin
    assert first.input()[0].previous_output.txid == second.input()[0].previous_output.txid
    client = bdk.EsploraClient(chain.url)
    await blocking(client.broadcast, first)
    await blocking(client.broadcast, first)  # the same transaction again is fine
    with pytest.raises(bdk.EsploraError.HttpResponse) as refused:
        await blocking(client.broadcast, second)
    assert refused.value.status == 400 and "double spend of" in str(refused.value)
    assert "mempool" in str(refused.value)

    await chain.mine(1)
    status, reason = await broadcast_hex(chain, second.serialize())
    assert status == 400 and "double spend of" in reason and "chain" in reason


async def test_broken_signature_refused_by_consensus_check(chain: Devchain) -> None:
    wallet = await funded_wallet(chain, 5)
    tx = Tx.parse(signed_payment(wallet, BURN, 100_000).serialize())
    sig, pubkey = tx.inputs[0].witness
    broken_sig = sig[:10] + bytes([sig[10] ^ 1]) + sig[11:]  # still DER, wrong r
    txin = tx.inputs[0]
    broken = Tx(tx.version, (TxIn(txin.prevout, b"", txin.sequence, (broken_sig, pubkey)),),
                tx.outputs, tx.locktime)
    status, reason = await broadcast_hex(chain, broken.raw)
    assert status == 400
    assert reason.startswith("input 0: script verification failed")
    status, reason = await broadcast_hex(chain, b"\x02\x00")
    assert status == 400 and "decode" in reason
    status, reason = await broadcast_hex(chain, tx.raw)
    assert status == 200 and reason == tx.txid_hex


async def test_immature_coinbase_spend_refused(chain: Devchain) -> None:
    key = FaucetKey.generate()
    [block_hash] = await chain.mine(1, key.address())
    entry = chain.state.entry(bytes.fromhex(block_hash)[::-1])
    assert entry is not None
    coinbase = entry.block.txs[0]
    value = coinbase.outputs[0].value
    spend = sign_p2wpkh(
        Tx(2, (TxIn(OutPoint(coinbase.txid, 0)),), (TxOut(value - 1_000, BURN),)),
        key, [value],
    )
    await chain.mine(98)  # the spend would be mined 99 blocks after the coinbase
    status, reason = await broadcast_hex(chain, spend.raw)
    assert status == 400 and "premature spend of coinbase" in reason
    await chain.mine(1)
    assert await broadcast_hex(chain, spend.raw) == (200, spend.txid_hex)


async def test_relative_and_absolute_timelocks_are_chain_rules(chain: Devchain) -> None:
    key = FaucetKey.generate()
    await chain.faucet(key.address(), 100_000)
    await chain.faucet(key.address(), 100_000)
    (a, coin_a), (b, coin_b) = sorted(chain.state.spendable(key.script_pubkey),
                                      key=lambda pc: pc[1].height or 0)
    assert coin_a.height is not None and coin_b.height == coin_a.height + 1 == chain.state.height

    def spend(point: OutPoint, sequence: int, locktime: int = 0) -> Tx:
        unsigned = Tx(2, (TxIn(point, b"", sequence),), (TxOut(99_000, BURN),), locktime)
        return sign_p2wpkh(unsigned, key, [100_000])

    csv = spend(a, 5)  # BIP68: the coin must be 5 blocks deep in the block that mines it
    cltv = spend(b, 0xFFFFFFFE, coin_b.height + 2)
    status, reason = await broadcast_hex(chain, csv.raw)
    assert status == 400 and "relative lock of 5 blocks" in reason
    status, reason = await broadcast_hex(chain, cltv.raw)
    assert status == 400 and "non-final" in reason
    status, reason = await broadcast_hex(chain, spend(a, (1 << 22) | 1).raw)
    assert status == 400 and "relative time lock of 512 s" in reason
    await chain.mine(2)
    assert (await broadcast_hex(chain, csv.raw))[0] == 400  # one block early
    assert await broadcast_hex(chain, cltv.raw) == (200, cltv.txid_hex)
    await chain.mine(1)
    assert await broadcast_hex(chain, csv.raw) == (200, csv.txid_hex)


async def test_restart_keeps_chain_mempool_and_faucet(tmp_path: Path) -> None:
    db = tmp_path / "devchain.db"
    wallet = make_wallet(6)
    address = address_of(wallet)
    async with Devchain.running(db) as first:
        await first.faucet(address, 400_000)
        await first.mine(3)
        pending = await first.faucet(address, 7_000, confirm=False)
        before = first.info()
    async with Devchain.running(db) as second:
        after = second.info()
        assert after["height"] == before["height"] == 105
        assert after["tip"] == before["tip"]
        assert after["faucet_address"] == before["faucet_address"]
        assert after["faucet_balance"] == before["faucet_balance"]
        assert second.balance_of(address) == 407_000
        assert bytes.fromhex(pending)[::-1] in second.state.mempool
        balance = await full_scan(second, wallet)
        assert balance.confirmed.to_sat() == 400_000 and balance.total.to_sat() == 407_000
        await second.mine(1)
        assert second.balance_of(address, include_mempool=False) == 407_000


async def test_cancelled_mining_keeps_store_and_state_together(tmp_path: Path) -> None:
    db = tmp_path / "devchain.db"
    async with Devchain.running(db) as chain:
        for delay in (0.0, 0.001, 0.005):
            task = asyncio.create_task(chain.mine(200))
            await asyncio.sleep(delay)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await chain.mine(1)
        height, tip = chain.state.height, chain.info()["tip"]
        assert 101 < height < 101 + 3 * 200 + 1
    async with Devchain.running(db) as again:
        assert (again.state.height, again.info()["tip"]) == (height, tip)


async def test_two_of_three_escrow_settles_with_two_signatures(chain: Devchain) -> None:
    accounts = [
        bdk.DescriptorSecretKey(KIND, bdk.Mnemonic.from_entropy(bytes([10 + i]) * 16), None)
        .derive(bdk.DerivationPath("m/48'/1'/0'/2'"))
        for i in range(3)
    ]
    xpubs = [str(a.as_public()) for a in accounts]

    def descriptor(mine: int | None) -> str:
        keys = [str(accounts[i]) if i == mine else xpubs[i] for i in range(3)]
        return "wsh(sortedmulti(2," + ",".join(f"{k}/0/*" for k in keys) + "))"

    buyer, seller, arbiter = (
        bdk.Wallet.create_single(bdk.Descriptor(descriptor(i), KIND), NET,
                                 bdk.Persister.new_in_memory())
        for i in range(3)
    )
    escrow_address = str(bdk.Descriptor(descriptor(None), KIND).derive_address(0, NET))
    assert {address_of(w) for w in (buyer, seller, arbiter)} == {escrow_address}
    await chain.faucet(escrow_address, 250_000)
    assert (await full_scan(chain, seller)).confirmed.to_sat() == 250_000

    payee = make_wallet(13)
    payee_spk = address_to_script(address_of(payee))
    [utxo] = seller.list_unspent()
    psbt = (bdk.TxBuilder().add_utxo(utxo.outpoint).manually_selected_only()
            .drain_to(bdk.Script(payee_spk)).fee_absolute(bdk.Amount.from_sat(1_000))
            .finish(seller))
    copies = {}
    for name, wallet in (("buyer", buyer), ("seller", seller)):
        copy = bdk.Psbt(psbt.serialize())
        wallet.sign(copy, None)  # returns whether the PSBT is final: not with one signature
        copies[name] = copy
    assert not bdk.Psbt(copies["buyer"].serialize()).finalize().could_finalize
    final = copies["buyer"].combine(copies["seller"]).finalize()
    assert final.could_finalize
    tx = Tx.parse(final.psbt.extract_tx().serialize())

    dummy, sig_a, sig_b, witness_script = tx.inputs[0].witness
    assert dummy == b"" and hashlib.sha256(witness_script).digest() == (
        address_to_script(escrow_address)[2:]
    )
    txin = tx.inputs[0]
    for witness in ((dummy, sig_a, witness_script), (dummy, sig_a, sig_a, witness_script),
                    (dummy, sig_b, sig_a, witness_script)):
        forged = Tx(tx.version, (TxIn(txin.prevout, b"", txin.sequence, witness),),
                    tx.outputs, tx.locktime)
        status, reason = await broadcast_hex(chain, forged.raw)
        assert status == 400 and "script verification failed" in reason, witness
    assert await broadcast_hex(chain, tx.raw) == (200, tx.txid_hex)
    await chain.mine(1)
    assert (await full_scan(chain, payee)).confirmed.to_sat() == 249_000
    assert chain.balance_of(escrow_address) == 0


async def test_script_history_pages_like_esplora(chain: Devchain) -> None:
    wallet = make_wallet(7)
    address = address_of(wallet)
    for _ in range(30):
        await chain.faucet(address, 10_000, confirm=False)
    await chain.mine(1)
    for _ in range(3):
        await chain.faucet(address, 1_000, confirm=False)
    spk_hash = scripthash(address_to_script(address))
    _, first = await http(chain, "GET", f"/scripthash/{spk_hash}/txs")
    assert len(first) == 3 + 25
    assert [t["status"]["confirmed"] for t in first[:4]] == [False, False, False, True]
    _, rest = await http(chain, "GET", f"/scripthash/{spk_hash}/txs/chain/{first[-1]['txid']}")
    assert len(rest) == 5 and not {t["txid"] for t in rest} & {t["txid"] for t in first}
    _, utxos = await http(chain, "GET", f"/address/{address}/utxo")
    assert len(utxos) == 33
    _, stats = await http(chain, "GET", f"/address/{address}")
    assert stats["chain_stats"]["funded_txo_sum"] == 300_000
    assert stats["mempool_stats"]["tx_count"] == 3

    balance = await full_scan(chain, wallet)
    assert balance.confirmed.to_sat() == 300_000 and balance.total.to_sat() == 303_000
    assert len(wallet.list_unspent()) == 33
    client = bdk.EsploraClient(chain.url)
    page = await blocking(client.get_address_txs, bdk.Address(address, NET), None)
    assert [str(t.txid) for t in page] == [t["txid"] for t in first]


async def test_devchain_endpoints(chain: Devchain) -> None:
    wallet = make_wallet(8)
    address = address_of(wallet)
    status, mined = await http(chain, "POST", "/devchain/mine", json={"blocks": 2})
    assert status == 200 and mined["height"] == 103 and len(mined["blocks"]) == 2
    status, paid = await http(chain, "POST", "/devchain/faucet",
                              json={"address": address, "sats": 12_345, "confirm": True})
    assert status == 200 and paid["block_height"] == 104
    status, mined = await http(chain, "POST", "/devchain/mine",
                               json={"blocks": 1, "address": address})
    assert chain.balance_of(address) == 12_345 + 50 * 10**8
    status, info = await http(chain, "GET", "/devchain/info")
    assert info["height"] == 105 and info["faucet_address"].startswith("bcrt1q")

    for body in ({"address": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "sats": 1},
                 {"address": address, "sats": 10**15},
                 {"address": address, "sats": 100, "extra": 1}):
        status, problem = await http(chain, "POST", "/devchain/faucet", json=body)
        assert status == 400 and problem["status"] == 400 and problem["detail"], body
    status, problem = await http(chain, "POST", "/devchain/mine", data=b"not json")
    assert status == 400
    with pytest.raises(DevchainError):
        await chain.faucet(address, 10)  # dust


async def test_timer_mining() -> None:
    async with Devchain.running(":memory:", block_interval=0.05) as chain:
        start = chain.state.height
        for _ in range(200):
            if chain.state.height >= start + 2:
                break
            await asyncio.sleep(0.02)
        assert chain.state.height >= start + 2
        assert chain.info()["block_interval"] == 0.05


async def test_serve_devchain_until_cancelled(tmp_path: Path) -> None:
    ready: asyncio.Queue[Devchain] = asyncio.Queue()
    task = asyncio.create_task(serve_devchain(tmp_path / "dev", "127.0.0.1", 0, None,
                                              on_ready=ready.put_nowait))
    served = await asyncio.wait_for(ready.get(), 10)
    status, info = await http(served, "GET", "/devchain/info")
    assert status == 200 and info["height"] == 101
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (tmp_path / "dev" / "devchain.db").exists()


async def test_binds_loopback_only() -> None:
    with pytest.raises(DevchainError):
        async with Devchain.running(":memory:", host="0.0.0.0"):
            pass  # pragma: no cover
