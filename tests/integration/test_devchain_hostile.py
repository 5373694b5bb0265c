"""The devchain as a hostile chain, over HTTP: relay-policy refusals in Bitcoin Core's words,
replace-by-fee, a forced double spend, eviction and expiry, settable fee estimates, and reorgs,
with the Esplora endpoints a node watches (status, outspend(s), script history, UTXOs, tip) and a
BDK wallet kept consistent across them. Loopback only; blocking BDK calls run in threads."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import bdkpython as bdk
import pytest

from escrow.chain import EsploraChain
from escrow.devchain.addresses import address_to_script, p2wpkh_script, scripthash
from escrow.devchain.faucet import FaucetKey, sign_p2wpkh
from escrow.devchain.primitives import OutPoint, Tx, TxIn, TxOut, hash_hex
from escrow.devchain.server import Devchain, RelayPolicy

pytestmark = pytest.mark.timeout(120)

KIND, NET = bdk.NetworkKind.TEST, bdk.Network.REGTEST
BURN = p2wpkh_script(bytes(20))
RBF = 0xFFFFFFFD
T = TypeVar("T")


@pytest.fixture
async def chain() -> AsyncIterator[Devchain]:
    async with Devchain.running(":memory:", policy=RelayPolicy(expiry_blocks=2)) as running:
        yield running


async def http(chain: Devchain, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, chain.url + path, **kw) as response:
            if response.content_type.endswith("json"):
                return response.status, await response.json(content_type=None)
            return response.status, await response.text()


async def get(chain: Devchain, path: str) -> Any:
    status, body = await http(chain, "GET", path)
    assert status == 200, (path, body)
    return body


async def broadcast(chain: Devchain, tx: Tx) -> tuple[int, str]:
    status, text = await http(chain, "POST", "/tx", data=tx.raw.hex())
    return status, str(text)


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


async def funded_key(chain: Devchain, sats: int = 100_000) -> tuple[FaucetKey, OutPoint]:
    """A key of the test's own with one confirmed coin of `sats`."""
    key = FaucetKey.generate()
    txid = bytes.fromhex(await chain.faucet(key.address(), sats))[::-1]
    vout = next(n for n, o in enumerate(chain.state.txs[txid].tx.outputs)
                if o.script_pubkey == key.script_pubkey)
    return key, OutPoint(txid, vout)


def pay(key: FaucetKey, coin: OutPoint, value_in: int, outputs: list[TxOut]) -> Tx:
    return sign_p2wpkh(Tx(2, (TxIn(coin, b"", RBF),), tuple(outputs)), key, [value_in])


def make_wallet(seed: int) -> bdk.Wallet:
    root = bdk.DescriptorSecretKey(KIND, bdk.Mnemonic.from_entropy(bytes([seed]) * 16), None)
    external = bdk.Descriptor.new_bip84(root, bdk.KeychainKind.EXTERNAL, KIND)
    internal = bdk.Descriptor.new_bip84(root, bdk.KeychainKind.INTERNAL, KIND)
    return bdk.Wallet(external, internal, NET, bdk.Persister.new_in_memory())


async def sync(chain: Devchain, wallet: bdk.Wallet) -> bdk.Balance:
    def run() -> bdk.Balance:
        client = bdk.EsploraClient(chain.url)
        wallet.apply_update(client.sync(wallet.start_sync_with_revealed_spks().build(), 4))
        return wallet.balance()

    return await blocking(run)


# -- relay policy ---------------------------------------------------------------------------------


async def test_policy_refusals_and_replace_by_fee(chain: Devchain) -> None:
    key, coin = await funded_key(chain)
    free = pay(key, coin, 100_000, [TxOut(100_000, BURN)])
    status, reason = await broadcast(chain, free)
    assert status == 400 and reason == f"min relay fee not met, 0 < {free.vsize}"
    status, reason = await broadcast(chain, pay(key, coin, 100_000, [TxOut(200, BURN)]))
    assert status == 400 and reason.startswith("dust")

    first = pay(key, coin, 100_000, [TxOut(99_800, BURN)])
    assert await broadcast(chain, first) == (200, first.txid_hex)
    client = bdk.EsploraClient(chain.url)
    cheaper = pay(key, coin, 100_000, [TxOut(99_850, BURN)])
    with pytest.raises(bdk.EsploraError.HttpResponse) as refused:
        await blocking(client.broadcast, bdk.Transaction(cheaper.raw))
    assert refused.value.status == 400 and "insufficient fee" in str(refused.value)

    bump = pay(key, coin, 100_000, [TxOut(99_500, BURN)])
    assert await broadcast(chain, bump) == (200, bump.txid_hex)
    assert (await http(chain, "GET", f"/tx/{first.txid_hex}"))[0] == 404
    assert await get(chain, f"/tx/{first.txid_hex}/status") == {"confirmed": False}
    spend = await get(chain, f"/tx/{hash_hex(coin.txid)}/outspend/{coin.vout}")
    assert spend["spent"] and spend["txid"] == bump.txid_hex and not spend["status"]["confirmed"]
    assert await get(chain, "/mempool/txids") == [bump.txid_hex]
    info = await get(chain, "/devchain/info")
    assert info["policy"]["min_relay_feerate"] == 1.0 and info["policy"]["full_rbf"]


async def test_forced_replace_evict_and_expiry(chain: Devchain) -> None:
    key, coin = await funded_key(chain)
    settlement = pay(key, coin, 100_000, [TxOut(99_000, BURN)])
    assert await broadcast(chain, settlement) == (200, settlement.txid_hex)
    conflict = pay(key, coin, 100_000, [TxOut(100_000, key.script_pubkey)])  # zero fee
    status, body = await http(chain, "POST", "/devchain/replace", json={"tx": conflict.raw.hex()})
    assert status == 200 and body == {"txid": conflict.txid_hex, "evicted": [settlement.txid_hex]}

    status, body = await http(chain, "POST", "/devchain/evict", json={"txid": conflict.txid_hex})
    assert status == 200 and body == {"evicted": [conflict.txid_hex]}
    outpoint = f"/tx/{hash_hex(coin.txid)}"
    assert await get(chain, f"{outpoint}/outspend/{coin.vout}") == {"spent": False}
    assert {"spent": False} in await get(chain, f"{outpoint}/outspends")
    history = await get(chain, f"/scripthash/{scripthash(key.script_pubkey)}/txs")
    assert [t["txid"] for t in history] == [hash_hex(coin.txid)]
    [utxo] = await get(chain, f"/address/{key.address()}/utxo")
    assert (utxo["txid"], utxo["vout"]) == (hash_hex(coin.txid), coin.vout)
    status, body = await http(chain, "POST", "/devchain/evict", json={"txid": conflict.txid_hex})
    assert status == 400 and "not in the mempool" in body["detail"]

    # the node's rebroadcast is accepted; left unmined for two blocks, it expires
    assert await broadcast(chain, settlement) == (200, settlement.txid_hex)
    await http(chain, "POST", "/devchain/mine", json={"blocks": 1, "min_feerate": 1000})
    assert await get(chain, "/mempool/txids") == [settlement.txid_hex]
    await http(chain, "POST", "/devchain/mine", json={"blocks": 1, "min_feerate": 1000})
    assert await get(chain, "/mempool/txids") == []
    assert await get(chain, f"/tx/{settlement.txid_hex}/status") == {"confirmed": False}


async def test_cpfp_child_gets_its_parent_mined(chain: Devchain) -> None:
    key, coin = await funded_key(chain)
    parent = pay(key, coin, 100_000, [TxOut(99_880, key.script_pubkey)])  # about 1 sat/vB
    assert await broadcast(chain, parent) == (200, parent.txid_hex)
    await http(chain, "POST", "/devchain/mine", json={"min_feerate": 10})
    assert await get(chain, "/mempool/txids") == [parent.txid_hex]
    child = pay(key, OutPoint(parent.txid, 0), 99_880, [TxOut(95_000, BURN)])
    assert await broadcast(chain, child) == (200, child.txid_hex)
    await http(chain, "POST", "/devchain/mine", json={"min_feerate": 10})
    for tx in (parent, child):
        assert (await get(chain, f"/tx/{tx.txid_hex}/status"))["confirmed"]


async def test_request_bodies_are_bounded(chain: Devchain) -> None:
    for path, body in (
        ("/devchain/invalidate", {"blocks": 0}),
        ("/devchain/invalidate", {"blocks": 1, "replace": ["00"] * 26}),
        ("/devchain/invalidate", {"hash": "ab" * 32}),
        ("/devchain/invalidate", {"blocks": 500}),
        ("/devchain/replace", {"tx": "zz"}),
        ("/devchain/replace", {"tx": "0200"}),
        ("/devchain/evict", {"txid": "00"}),
        ("/devchain/mine", {"min_feerate": -1}),
        ("/devchain/fees", {"0": 1.0}),
        ("/devchain/fees", {"x": 1.0}),
        ("/devchain/fees", {"1": -1.0}),
        ("/devchain/fees", {str(n): 1.0 for n in range(1, 66)}),
    ):
        status, problem = await http(chain, "POST", path, json=body)
        assert status == 400 and problem["detail"], (path, body)
    status, _ = await http(chain, "POST", "/tx", data=io.BytesIO(b"00" * (1 << 20)))
    assert status == 413


async def test_fee_estimates_are_settable(chain: Devchain) -> None:
    default = await get(chain, "/fee-estimates")
    assert default["1"] == 2.0 and default["1008"] == 1.0
    status, table = await http(chain, "POST", "/devchain/fees", json={"1": 20.0, "6": 5.5})
    assert status == 200 and table == {"1": 20.0, "6": 5.5}
    assert await get(chain, "/fee-estimates") == {"1": 20.0, "6": 5.5}
    estimates = EsploraChain(chain.url, "regtest")
    assert await estimates.fee_rate(1) == 20 and await estimates.fee_rate(12) == 6
    client = bdk.EsploraClient(chain.url)
    assert (await blocking(client.get_fee_estimates))[6] == 5.5
    assert (await http(chain, "DELETE", "/devchain/fees"))[1] == default


# -- reorgs ---------------------------------------------------------------------------------------


async def test_reorg_returns_the_funding_to_the_mempool_and_bdk_follows(
    chain: Devchain,
) -> None:
    wallet = make_wallet(21)
    address = str(wallet.reveal_next_address(bdk.KeychainKind.EXTERNAL).address)
    funding = await chain.faucet(address, 500_000)
    assert (await sync(chain, wallet)).confirmed.to_sat() == 500_000
    height = int(await get(chain, "/blocks/tip/height"))
    old_tip = await get(chain, "/blocks/tip/hash")

    status, reorg = await http(chain, "POST", "/devchain/invalidate", json={"blocks": 1})
    assert status == 200 and reorg["disconnected"] == [old_tip]
    assert reorg["returned"] == [funding] and reorg["dropped"] == []
    assert int(await get(chain, "/blocks/tip/height")) == height - 1 == reorg["height"]
    assert await get(chain, "/blocks/tip/hash") != old_tip
    assert (await get(chain, f"/block/{old_tip}/status"))["in_best_chain"] is False
    assert await get(chain, f"/tx/{funding}/status") == {"confirmed": False}
    spk_hash = scripthash(address_to_script(address))
    [unconfirmed] = await get(chain, f"/scripthash/{spk_hash}/txs")
    assert unconfirmed["txid"] == funding and not unconfirmed["status"]["confirmed"]
    # a client sees a reorg once the new chain is as long as the old one: mine a block that
    # leaves the funding out (as a miner might), then BDK counts it unconfirmed again
    await http(chain, "POST", "/devchain/mine", json={"blocks": 1, "min_feerate": 1000})
    balance = await sync(chain, wallet)
    assert balance.confirmed.to_sat() == 0 and balance.total.to_sat() == 500_000

    await http(chain, "POST", "/devchain/mine", json={"blocks": 1})
    assert (await get(chain, f"/tx/{funding}/status"))["block_height"] == height + 1
    assert (await sync(chain, wallet)).confirmed.to_sat() == 500_000


async def test_reorg_with_a_double_spend_drops_the_funding(chain: Devchain) -> None:
    wallet = make_wallet(22)
    address = str(wallet.reveal_next_address(bdk.KeychainKind.EXTERNAL).address)
    spk = address_to_script(address)
    funding_hex = await chain.faucet(address, 300_000)
    funding = chain.state.txs[bytes.fromhex(funding_hex)[::-1]].tx
    assert (await sync(chain, wallet)).confirmed.to_sat() == 300_000
    funded_at = await get(chain, "/blocks/tip/hash")
    await chain.mine(1)  # the funding is two blocks deep

    # the faucet double-spends its own payment: same inputs, everything back to itself
    key = chain.faucet_key
    values = [chain.state.txs[i.prevout.txid].tx.outputs[i.prevout.vout].value
              for i in funding.inputs]
    theft = sign_p2wpkh(Tx(2, tuple(TxIn(i.prevout, b"", RBF) for i in funding.inputs),
                           (TxOut(sum(values) - 1_000, key.script_pubkey),)), key, values)
    status, reorg = await http(chain, "POST", "/devchain/invalidate", json={
        "hash": funded_at, "replace": [theft.raw.hex()], "mine": 3})
    assert status == 200, reorg
    assert reorg["dropped"] == [funding_hex] and reorg["replaced_by"] == [theft.txid_hex]
    assert len(reorg["disconnected"]) == 2 and len(reorg["mined"]) == 3

    assert (await http(chain, "GET", f"/tx/{funding_hex}"))[0] == 404
    assert await get(chain, f"/tx/{funding_hex}/status") == {"confirmed": False}
    first_in = funding.inputs[0].prevout
    spend = await get(chain, f"/tx/{hash_hex(first_in.txid)}/outspend/{first_in.vout}")
    assert spend["txid"] == theft.txid_hex and spend["status"]["confirmed"]
    assert (await get(chain, f"/tx/{theft.txid_hex}/status"))["confirmed"]
    assert await get(chain, f"/scripthash/{scripthash(spk)}/txs") == []
    assert await get(chain, f"/scripthash/{scripthash(spk)}/utxo") == []
    assert chain.balance_of(address) == 0
    # BDK follows the new chain but never evicts a transaction it once saw confirmed
    # (bdk_chain keeps anchored transactions): its wallet still counts it as unconfirmed. A
    # node learns the truth from Esplora (status, outspend) or from a fresh wallet's scan.
    balance = await sync(chain, wallet)
    assert str(wallet.latest_checkpoint().hash) == await get(chain, "/blocks/tip/hash")
    assert balance.confirmed.to_sat() == 0 and balance.untrusted_pending.to_sat() == 300_000
    fresh = make_wallet(22)
    fresh.reveal_next_address(bdk.KeychainKind.EXTERNAL)
    assert (await sync(chain, fresh)).total.to_sat() == 0

    status, body = await broadcast(chain, funding)  # the loser's rebroadcast is refused
    assert status == 400 and body.startswith("bad-txns-inputs-missingorspent")


async def test_reorg_survives_a_restart(tmp_path: Any) -> None:
    db = tmp_path / "devchain.db"
    async with Devchain.running(db, policy=RelayPolicy()) as first:
        key, coin = await funded_key(first)
        pending = pay(key, coin, 100_000, [TxOut(99_000, BURN)])
        await first.submit(pending.raw)
        await first.mine(1)
        reorg = await first.invalidate(blocks=2)
        assert reorg.returned == [hash_hex(coin.txid), pending.txid_hex]
        height, tip = first.state.height, first.info()["tip"]
    async with Devchain.running(db) as second:
        assert (second.state.height, second.info()["tip"]) == (height, tip)
        assert list(second.state.mempool) == [coin.txid, pending.txid]
