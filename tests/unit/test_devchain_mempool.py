"""The devchain's relay policy and mempool transitions on a pure chain state (no sockets): min
relay fee, dust, BIP125 replacement, forced double spends, eviction and expiry, CPFP mining, and
reorgs that return transactions to the mempool or drop the double-spent ones. Every transaction
here is signed for real and passes Bitcoin Core's consensus check on the way in."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from escrow.devchain.addresses import p2wpkh_script
from escrow.devchain.chain import ChainState
from escrow.devchain.faucet import FaucetKey, sign_p2wpkh
from escrow.devchain.mempool import (
    MempoolError,
    admit,
    evict,
    expire,
    invalidate,
    judge,
    judge_forced,
)
from escrow.devchain.mining import build_block, select_transactions
from escrow.devchain.policy import PolicyRejected, RelayPolicy, dust_threshold
from escrow.devchain.primitives import OutPoint, Tx, TxIn, TxOut, sha256
from escrow.devchain.rules import TxRejected

T0 = 1_700_000_000
BURN = p2wpkh_script(bytes(20))
POLICY = RelayPolicy()
RBF, FINAL = 0xFFFFFFFD, 0xFFFFFFFE


@dataclass
class World:
    state: ChainState
    key: FaucetKey
    coins: list[tuple[OutPoint, int]]  # mature coinbase outputs, oldest first

    def spend(self, inputs: list[tuple[OutPoint, int]], outputs: list[int],
              sequence: int = RBF, fee: int | None = None) -> Tx:
        """The key's coins to the key (outputs in sats); with `fee`, the last output is the
        change that leaves exactly that fee."""
        values = list(outputs)
        if fee is not None:
            values[-1] = sum(v for _, v in inputs) - sum(values[:-1]) - fee
        unsigned = Tx(2, tuple(TxIn(p, b"", sequence) for p, _ in inputs),
                      tuple(TxOut(v, self.key.script_pubkey) for v in values))
        return sign_p2wpkh(unsigned, self.key, [v for _, v in inputs])

    def submit(self, tx: Tx, policy: RelayPolicy | None = POLICY) -> list[bytes]:
        change = admit(self.state, tx, judge(self.state, tx, policy), T0)
        assert_consistent(self.state)
        return list(change.removed)

    def mine(self, min_feerate: float = 0.0) -> None:
        self.state.connect_block(
            build_block(self.state, self.key.script_pubkey, T0, min_feerate))
        assert_consistent(self.state)


def make_world(coins: int = 3) -> World:
    key, state = FaucetKey.generate(), ChainState()
    for _ in range(100 + coins):
        state.connect_block(build_block(state, key.script_pubkey, T0))
    mature = [(OutPoint(state.blocks[h].block.txs[0].txid, 0),
               state.blocks[h].block.txs[0].outputs[0].value) for h in range(1, coins + 1)]
    return World(state, key, mature)


def out(tx: Tx, vout: int = 0) -> tuple[OutPoint, int]:
    return OutPoint(tx.txid, vout), tx.outputs[vout].value


def assert_consistent(state: ChainState) -> None:
    """Every index points at known transactions, and the UTXO set is what the chain left."""
    for txids in state.history.values():
        assert all(t in state.txs for t in txids)
    for point, spend in state.spent_by.items():
        assert spend.txid in state.txs and state.txs[spend.txid].tx.inputs[spend.vin].prevout \
            == point
    for point in state.utxo:
        spender = state.spent_by.get(point)
        assert spender is None or state.txs[spender.txid].height is None
    for txid, record in state.mempool.items():
        assert state.txs[txid] is record and record.height is None


# -- min relay fee and dust ----------------------------------------------------------------------


def test_min_relay_fee_only_under_the_policy() -> None:
    w = make_world()
    free = w.spend([w.coins[0]], [0], fee=0)
    with pytest.raises(PolicyRejected) as refused:
        judge(w.state, free, POLICY)
    assert refused.value.reason == "min relay fee not met"
    assert str(refused.value) == f"min relay fee not met, 0 < {free.vsize}"
    assert judge(w.state, free, None).fee == 0  # the permissive default
    paying = w.spend([w.coins[0]], [0], fee=free.vsize)
    assert judge(w.state, paying, POLICY).fee == paying.vsize
    assert judge(w.state, free, RelayPolicy(min_relay_feerate=0)).fee == 0


def test_dust_thresholds_and_refusal() -> None:
    assert [dust_threshold(TxOut(0, bytes.fromhex(h)), 3.0) for h in (
        "0014" + "00" * 20, "0020" + "00" * 32, "5120" + "00" * 32,
        "76a914" + "00" * 20 + "88ac", "a914" + "00" * 20 + "87", "6a04" + "ab" * 4,
    )] == [294, 330, 330, 546, 540, 0]
    w = make_world()
    dusty = w.spend([w.coins[0]], [293, 0], fee=1_000)
    with pytest.raises(PolicyRejected) as refused:
        judge(w.state, dusty, POLICY)
    assert refused.value.reason == "dust" and str(refused.value).startswith("dust, output 0")
    assert judge(w.state, dusty, None).fee == 1_000
    assert judge(w.state, w.spend([w.coins[0]], [294, 0], fee=1_000), POLICY).fee == 1_000


# -- replacement ---------------------------------------------------------------------------------


def test_conflict_refused_without_policy() -> None:
    w = make_world()
    w.submit(w.spend([w.coins[0]], [0], fee=300), policy=None)
    with pytest.raises(TxRejected, match="^txn-mempool-conflict: double spend of"):
        judge(w.state, w.spend([w.coins[0]], [0], fee=10_000), None)


def test_bip125_rules() -> None:
    w = make_world()
    original = w.spend([w.coins[0]], [100_000, 0], fee=300)  # two outputs: larger
    w.submit(original)
    lower_feerate = w.spend([w.coins[0]], [0], fee=200)
    with pytest.raises(PolicyRejected, match="new feerate .* <= old feerate") as refused:
        judge(w.state, lower_feerate, POLICY)
    assert refused.value.reason == "insufficient fee"
    smaller = w.spend([w.coins[0]], [0], fee=250)  # a higher feerate, but less fee in total
    assert 250 * original.vsize > 300 * smaller.vsize
    with pytest.raises(PolicyRejected, match="less fees than conflicting txs; 250 < 300"):
        judge(w.state, smaller, POLICY)
    barely = w.spend([w.coins[0]], [100_000, 0], fee=350)  # +50 sat does not pay its relay
    with pytest.raises(PolicyRejected, match="not enough additional fees to relay; 50 < "):
        judge(w.state, barely, POLICY)
    better = w.spend([w.coins[0]], [100_000, 0], fee=300 + original.vsize)
    assert w.submit(better) == [original.txid]
    assert original.txid not in w.state.txs and better.txid in w.state.mempool
    w.mine()
    assert w.state.txs[better.txid].height == w.state.height


def test_replacement_pays_for_descendants_it_evicts() -> None:
    w = make_world()
    parent = w.spend([w.coins[0]], [0], fee=200)
    w.submit(parent)
    child = w.spend([out(parent)], [0], fee=5_000)
    w.submit(child)
    too_cheap = w.spend([w.coins[0]], [0], fee=4_000)  # beats the parent, not the pair
    with pytest.raises(PolicyRejected, match="less fees than conflicting txs; 4000 < 5200"):
        judge(w.state, too_cheap, POLICY)
    replacement = w.spend([w.coins[0]], [0], fee=5_200 + 200)
    assert w.submit(replacement) == [parent.txid, child.txid]
    assert not {parent.txid, child.txid} & set(w.state.txs)
    assert OutPoint(parent.txid, 0) not in w.state.spent_by
    assert w.state.spent_by[w.coins[0][0]].txid == replacement.txid
    assert child.txid not in w.state.history.get(sha256(w.key.script_pubkey), [])


def test_too_many_potential_replacements() -> None:
    w = make_world()
    parent = w.spend([w.coins[0]], [0], fee=200)
    w.submit(parent)
    w.submit(w.spend([out(parent)], [0], fee=200))
    with pytest.raises(PolicyRejected) as refused:
        judge(w.state, w.spend([w.coins[0]], [0], fee=50_000), RelayPolicy(max_replacements=1))
    assert refused.value.reason == "too many potential replacements"


def test_replacement_may_not_add_unconfirmed_inputs_or_spend_what_it_replaces() -> None:
    w = make_world()
    original = w.spend([w.coins[0]], [0], fee=200)
    other = w.spend([w.coins[1]], [0], fee=200)
    w.submit(original)
    w.submit(other)
    adds = w.spend([w.coins[0], out(other)], [0], fee=10_000)
    with pytest.raises(PolicyRejected) as refused:
        judge(w.state, adds, POLICY)
    assert refused.value.reason == "replacement-adds-unconfirmed"
    spends_it = w.spend([w.coins[0], out(original)], [0], fee=10_000)
    with pytest.raises(TxRejected, match="bad-txns-spends-conflicting-tx"):
        judge(w.state, spends_it, POLICY)
    with pytest.raises(TxRejected, match="bad-txns-spends-conflicting-tx"):
        judge_forced(w.state, spends_it)


def test_opt_in_rbf_needs_a_signal() -> None:
    w = make_world()
    opt_in = RelayPolicy(full_rbf=False)
    final = w.spend([w.coins[0]], [0], sequence=FINAL, fee=200)
    signalling = w.spend([w.coins[1]], [0], sequence=RBF, fee=200)
    w.submit(final, opt_in)
    w.submit(signalling, opt_in)
    with pytest.raises(PolicyRejected) as refused:
        judge(w.state, w.spend([w.coins[0]], [0], fee=5_000), opt_in)
    assert refused.value.reason == "txn-mempool-conflict"
    assert judge(w.state, w.spend([w.coins[1]], [0], fee=5_000), opt_in).evicts == (
        signalling.txid,)
    assert judge(w.state, w.spend([w.coins[0]], [0], fee=5_000), POLICY).evicts == (final.txid,)


def test_forced_replace_ignores_policy_but_not_consensus() -> None:
    w = make_world()
    original = w.spend([w.coins[0]], [0], fee=5_000)
    w.submit(original)
    w.submit(w.spend([out(original)], [0], fee=500))
    cheaper = w.spend([w.coins[0]], [0], fee=0)  # what a hostile miner might mine
    with pytest.raises(PolicyRejected):
        judge(w.state, cheaper, POLICY)
    admission = judge_forced(w.state, cheaper)
    assert len(admission.evicts) == 2 and admission.evicts[0] == original.txid
    admit(w.state, cheaper, admission, T0)
    assert_consistent(w.state)
    assert list(w.state.mempool) == [cheaper.txid]
    w.mine()
    with pytest.raises(TxRejected, match="^bad-txns-inputs-missingorspent: double spend"):
        judge_forced(w.state, original)  # a confirmed conflict needs a reorg
    w.submit(w.spend([w.coins[1]], [0], fee=300))
    broken = Tx(2, (TxIn(w.coins[1][0], b"", RBF, (bytes(72), bytes(33))),), (TxOut(0, BURN),))
    with pytest.raises(TxRejected, match="script verification failed"):
        judge_forced(w.state, broken)


# -- eviction, expiry, CPFP ---------------------------------------------------------------------


def test_evict_takes_descendants_and_unknown_is_an_error() -> None:
    w = make_world()
    parent = w.spend([w.coins[0]], [0], fee=200)
    w.submit(parent)
    child = w.spend([out(parent)], [0], fee=200)
    w.submit(child)
    change = evict(w.state, parent.txid)
    assert change.removed == (parent.txid, child.txid) and not w.state.mempool
    assert_consistent(w.state)
    assert w.state.coin(w.coins[0][0]) is not None and w.coins[0][0] not in w.state.spent_by
    with pytest.raises(MempoolError):
        evict(w.state, parent.txid)
    w.submit(parent)  # a rebroadcast is accepted again


def test_expiry_by_blocks_and_by_age() -> None:
    w = make_world()
    slow = w.spend([w.coins[0]], [0], fee=200)  # below the miner's floor below
    w.submit(slow)
    by_blocks = RelayPolicy(expiry_blocks=2, expiry_seconds=None)
    assert expire(w.state, None, T0 + 10**9).removed == ()
    w.mine(min_feerate=10)
    assert expire(w.state, by_blocks, T0).removed == ()
    w.mine(min_feerate=10)
    assert expire(w.state, by_blocks, T0).removed == (slow.txid,)
    w.submit(slow)
    assert expire(w.state, POLICY, T0 + 336 * 3600 - 1).removed == ()
    assert expire(w.state, POLICY, T0 + 336 * 3600).removed == (slow.txid,)
    w.state.add_to_mempool(slow, 200)  # no clock given: it never ages
    assert expire(w.state, POLICY, T0 + 10**9).removed == ()
    assert_consistent(w.state)


def test_cpfp_child_lifts_its_parent_into_a_block() -> None:
    w = make_world()
    parent = w.spend([w.coins[0]], [0], fee=120)  # about 1 sat/vB
    other = w.spend([w.coins[1]], [0], fee=600)  # about 5 sat/vB
    w.submit(parent)
    w.submit(other)
    assert select_transactions(w.state, min_feerate=10) == []
    assert select_transactions(w.state) == [other, parent]  # best package first
    child = w.spend([out(parent)], [0], fee=4_000)
    w.submit(child)
    assert select_transactions(w.state, min_feerate=10) == [parent, child]
    w.mine(min_feerate=10)
    assert w.state.txs[parent.txid].height == w.state.height
    assert list(w.state.mempool) == [other.txid]


# -- reorgs ---------------------------------------------------------------------------------------


def test_reorg_returns_transactions_to_the_mempool() -> None:
    w = make_world()
    funding = w.spend([w.coins[0]], [0], fee=300)
    w.submit(funding)
    w.mine()
    tip, height = w.state.tip, w.state.height
    coinbase = tip.block.txs[0].txid
    pending = w.spend([out(funding)], [0], fee=300)  # in the mempool, spends the funding
    w.submit(pending)
    change = invalidate(w.state, 1, [], T0)
    assert_consistent(w.state)
    assert w.state.height == height - 1 and w.state.entry(tip.hash) is None
    assert change.returned == (funding.txid,) and change.removed == ()
    assert list(w.state.mempool) == [funding.txid, pending.txid]  # parents first
    assert coinbase not in w.state.txs and OutPoint(coinbase, 0) not in w.state.utxo
    assert w.state.utxo[w.coins[0][0]].height == 1  # the spent coin is back
    w.mine()
    assert w.state.txs[funding.txid].height == w.state.height == height


def test_reorg_with_a_double_spend_drops_the_funding_and_its_children() -> None:
    w = make_world()
    funding = w.spend([w.coins[0]], [0], fee=300)
    w.submit(funding)
    w.mine()
    settled = w.spend([out(funding)], [0], fee=300)
    w.submit(settled)
    w.mine()
    unrelated = w.spend([w.coins[1]], [0], fee=300)
    w.submit(unrelated)
    theft = w.spend([w.coins[0]], [0], fee=100)  # the buyer's own coin, paid elsewhere
    change = invalidate(w.state, 2, [theft], T0)
    assert_consistent(w.state)
    assert set(change.removed) == {funding.txid, settled.txid}
    assert change.returned == () and change.added == (theft,)
    assert not {funding.txid, settled.txid} & set(w.state.txs)
    assert list(w.state.mempool) == [unrelated.txid, theft.txid]
    w.mine()
    assert w.state.txs[theft.txid].height == w.state.height


def test_refused_replacement_leaves_the_chain_as_it_was() -> None:
    w = make_world()
    funding = w.spend([w.coins[0]], [0], fee=300)
    w.submit(funding)
    w.mine()
    waiting = w.spend([w.coins[1]], [0], fee=300)
    w.submit(waiting)
    tip = w.state.tip.hash
    unsigned = Tx(2, (TxIn(w.coins[0][0], b"", RBF, (bytes(72), bytes(33))),),
                  (TxOut(1_000, BURN),))
    with pytest.raises(TxRejected, match="script verification failed"):
        invalidate(w.state, 1, [unsigned], T0)
    assert_consistent(w.state)
    assert w.state.tip.hash == tip and w.state.txs[funding.txid].height == w.state.height
    assert list(w.state.mempool) == [waiting.txid]
    with pytest.raises(MempoolError):
        invalidate(w.state, w.state.height + 1, [], T0)
    with pytest.raises(MempoolError):
        invalidate(w.state, 0, [], T0)
