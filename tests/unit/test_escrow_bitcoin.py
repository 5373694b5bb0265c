"""The bitcoin adapter without a chain: three separate signers, each holding only its own key,
settle a 2-of-3 escrow funded by a hand-made transaction; every PSBT is checked before signing
and every final transaction is validated by Bitcoin Core's consensus code (py-bitcoinkernel)."""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import pbk
import pytest
from mnemonic import Mnemonic

from escrow import bitcoin as btc
from escrow.terms import (
    ChainError,
    EscrowBitcoinError,
    Funding,
    Payout,
    PayoutKind,
    PayoutOutput,
    PsbtRejected,
    Role,
)

B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER
AMOUNT = 1_000_000
ORDER = btc.legacy_order_index("order-0001")
WORDS = {r: Mnemonic("english").to_mnemonic(bytes([i + 1]) * 32) for i, r in enumerate(Role)}
# payout addresses (BIP173 test vector and two more P2WPKH programs)
PAYTO = {
    B: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
    S: btc.HotWallet(WORDS[S], "regtest").receive_address(),
    A: btc.HotWallet(WORDS[A], "regtest").receive_address(),
}
MALLORY = btc.HotWallet(Mnemonic("english").to_mnemonic(bytes(32)), "regtest").receive_address()


def funding_tx(*outputs: tuple[int, bytes], salt: bytes = b"") -> bytes:
    """A syntactically valid transaction paying `outputs` (its input is never checked here)."""
    prevout = hashlib.sha256(b"coinbase" + salt).digest() + struct.pack("<I", 0)
    txin = prevout + b"\x00" + struct.pack("<I", 0xFFFFFFFF)
    txouts = b"".join(struct.pack("<q", v) + bytes([len(s)]) + s for v, s in outputs)
    return (struct.pack("<i", 2) + b"\x01" + txin + bytes([len(outputs)]) + txouts
            + struct.pack("<I", 0))


def consensus_ok(raw: bytes, spk: bytes, amount: int) -> bool:
    """Does input 0 of `raw` validly spend (spk, amount) under Bitcoin Core's rules (flags ALL)?"""
    tx, script = pbk.Transaction(raw), pbk.ScriptPubkey(spk)
    pre = pbk.script.PrecomputedTransactionData(tx, [pbk.TransactionOutput(script, amount)])
    try:
        return bool(script.verify(amount, tx, pre, 0, pbk.ScriptVerificationFlags.ALL))
    except pbk.ScriptVerifyException:
        return False


@dataclass
class Escrow:
    policy: btc.EscrowPolicy
    signers: dict[Role, btc.EscrowSigner]
    funding: Funding

    def payout(self, kind: PayoutKind, outputs: tuple[PayoutOutput, ...] = (),
               to: Role | None = None) -> Payout:
        return Payout(kind, outputs, PAYTO[to] if to else None, 200, 10_000)

    def settle(self, payout: Payout, first: Role, second: Role, fee: int = 500) -> bytes:
        psbt = self.signers[first].build(self.funding, payout, fee)
        one = self.signers[first].sign(psbt, self.funding, payout)
        two = self.signers[second].sign(one, self.funding, payout)
        return btc.finalize([two])


def make_escrow(timeout_blocks: int | None = None) -> Escrow:
    keys = {r: btc.derive_order_key(WORDS[r], ORDER, "regtest") for r in Role}
    timeout_xpub = keys[S].timeout_xpub if timeout_blocks else None
    # each party builds the policy from the xpubs it was sent, never from another's object
    policies = {r: btc.EscrowPolicy("regtest", keys[B].xpub, keys[S].xpub, keys[A].xpub,
                                    timeout_xpub, timeout_blocks) for r in Role}
    assert len({p.address for p in policies.values()}) == 1
    raw = funding_tx((AMOUNT, policies[B].script_pubkey), (5_000, b"\x00\x14" + bytes(20)))
    signers = {r: btc.EscrowSigner(policies[r], keys[r]) for r in Role}
    fundings = {s.add_funding(raw) for s in signers.values()}
    assert len(fundings) == 1
    return Escrow(policies[B], signers, fundings.pop())


@pytest.fixture(scope="module")
def escrow() -> Escrow:
    return make_escrow()


# -- keys and addresses -----------------------------------------------------------------------


def test_order_keys_are_per_order_bare_and_deterministic() -> None:
    k1 = btc.derive_order_key(WORDS[B], ORDER, "regtest")
    assert k1 == btc.derive_order_key(WORDS[B], ORDER, "regtest")
    k2 = btc.derive_order_key(WORDS[B], btc.legacy_order_index("order-0002"), "regtest")
    assert len({k1.xpub, k1.timeout_xpub, k2.xpub}) == 3
    assert k1.xpub.startswith("tpub") and "[" not in k1.xpub and "/" not in k1.xpub
    assert "prv" not in repr(k1)
    assert btc.derive_order_key(WORDS[B], 7, "mainnet").xpub.startswith("xpub")
    assert btc.check_xpub(k1.xpub, "signet") == k1.xpub
    main = btc.derive_order_key(WORDS[B], 7, "mainnet").xpub
    for bad in (main, f"[deadbeef/48'/1'/0'/2'/7']{k1.xpub}", k1.xpub[:-1] + "x", "tpub"):
        with pytest.raises(EscrowBitcoinError):
            btc.check_xpub(bad, "regtest")


def test_the_address_is_p2wsh_and_depends_on_every_key(escrow: Escrow) -> None:
    p = escrow.policy
    assert p.address.startswith("bcrt1q") and len(p.script_pubkey) == 34
    swapped = btc.EscrowPolicy("regtest", p.seller_xpub, p.buyer_xpub, p.arbiter_xpub)
    assert swapped.address == p.address  # sortedmulti: key order is irrelevant
    other = btc.derive_order_key(WORDS[A], ORDER + 1, "regtest").xpub
    assert btc.EscrowPolicy("regtest", p.buyer_xpub, p.seller_xpub, other).address != p.address
    with pytest.raises(EscrowBitcoinError):
        btc.EscrowPolicy("regtest", p.buyer_xpub, p.buyer_xpub, p.arbiter_xpub)
    with pytest.raises(EscrowBitcoinError):
        btc.EscrowPolicy("regtest", p.buyer_xpub, p.seller_xpub, p.arbiter_xpub, other, None)


def test_bdk_errors_do_not_escape() -> None:
    with pytest.raises(EscrowBitcoinError):
        btc.derive_order_key("not a mnemonic", 1, "regtest")
    with pytest.raises(EscrowBitcoinError):
        btc.address_script(PAYTO[B], "mainnet")
    with pytest.raises(EscrowBitcoinError):
        btc.txid(b"\x00garbage")
    with pytest.raises(PsbtRejected):
        btc.finalize(["not base64!"])
    with pytest.raises(ChainError):
        btc.Esplora("not a url at all").height()


def test_a_signer_must_hold_one_of_the_escrow_keys(escrow: Escrow) -> None:
    stranger = btc.derive_order_key(WORDS[B], ORDER + 5, "regtest")
    with pytest.raises(EscrowBitcoinError):
        btc.EscrowSigner(escrow.policy, stranger)
    with pytest.raises(EscrowBitcoinError):
        escrow.signers[B].add_funding(funding_tx((AMOUNT, b"\x00\x14" + bytes(20))))


# -- the three settlements --------------------------------------------------------------------


def test_release_buyer_and_seller(escrow: Escrow) -> None:
    payout = escrow.payout("release", to=S)
    raw = escrow.settle(payout, B, S, fee=700)
    assert btc.tx_outputs(raw) == [(btc.address_script(PAYTO[S], "regtest"), AMOUNT - 700)]
    assert consensus_ok(raw, escrow.policy.script_pubkey, AMOUNT)
    assert not consensus_ok(raw, escrow.policy.script_pubkey, AMOUNT + 1)  # wrong input amount
    i = raw.index(struct.pack("<q", AMOUNT - 700))  # an output changed after signing
    tampered = raw[:i] + struct.pack("<q", AMOUNT - 600) + raw[i + 8:]
    assert not consensus_ok(tampered, escrow.policy.script_pubkey, AMOUNT)


def test_refund_seller_and_buyer(escrow: Escrow) -> None:
    payout = escrow.payout("refund", to=B)
    raw = escrow.settle(payout, S, B)
    assert btc.tx_outputs(raw)[0] == (btc.address_script(PAYTO[B], "regtest"), AMOUNT - 500)
    assert consensus_ok(raw, escrow.policy.script_pubkey, AMOUNT)


@pytest.mark.parametrize("winner", [B, S])
def test_ruling_arbiter_and_winner_with_the_arbiter_fee(escrow: Escrow, winner: Role) -> None:
    fee = 2_000 + AMOUNT * 150 // 10_000  # fixed plus 1.5 %
    win, lose = (AMOUNT - fee - 40_000 - 600, 40_000)
    split = {winner: win, (S if winner == B else B): lose, A: fee}
    payout = escrow.payout("ruling", tuple(PayoutOutput(PAYTO[r], v) for r, v in split.items()))
    raw = escrow.settle(payout, A, winner)
    got = sorted(btc.tx_outputs(raw))
    assert got == sorted((btc.address_script(PAYTO[r], "regtest"), v) for r, v in split.items())
    assert consensus_ok(raw, escrow.policy.script_pubkey, AMOUNT)


def test_one_signature_cannot_finalize(escrow: Escrow) -> None:
    payout = escrow.payout("release", to=S)
    psbt = escrow.signers[B].build(escrow.funding, payout)
    signed = escrow.signers[B].sign(psbt, escrow.funding, payout)
    with pytest.raises(PsbtRejected):
        btc.finalize([signed])
    with pytest.raises(PsbtRejected):
        btc.finalize([signed, escrow.signers[B].sign(psbt, escrow.funding, payout)])
    # two parties signing separate copies combine into a valid spend
    copy = escrow.signers[A].sign(psbt, escrow.funding, payout)
    assert consensus_ok(btc.finalize([signed, copy]), escrow.policy.script_pubkey, AMOUNT)


# -- check before signing ---------------------------------------------------------------------


def _refused(escrow: Escrow, psbt: str, payout: Payout, funding: Funding | None = None,
             why: str | None = None) -> None:
    with pytest.raises(PsbtRejected, match=why):
        escrow.signers[S].sign(psbt, funding or escrow.funding, payout)


def test_refuses_a_wrong_address(escrow: Escrow) -> None:
    agreed = escrow.payout("release", to=S)
    evil = Payout("release", (), MALLORY, 200, 10_000)
    _refused(escrow, escrow.signers[B].build(escrow.funding, evil), agreed, why="outputs differ")


def test_refuses_a_tampered_extra_output(escrow: Escrow) -> None:
    agreed = escrow.payout("release", to=S)
    skim = Payout("release", (PayoutOutput(MALLORY, 10_000),), PAYTO[S], 200, 10_000)
    _refused(escrow, escrow.signers[B].build(escrow.funding, skim), agreed, why="outputs differ")


def test_refuses_a_wrong_amount(escrow: Escrow) -> None:
    def ruling(buyer: int, max_fee: int = 10_000) -> Payout:
        outs = (PayoutOutput(PAYTO[B], buyer), PayoutOutput(PAYTO[S], AMOUNT - 600 - 500_000))
        return Payout("ruling", outs, None, 200, max_fee)
    # the arbiter pays the buyer 100_000 less and leaves it to the miners (or a friendly pool)
    psbt = escrow.signers[A].build(escrow.funding, ruling(400_000, max_fee=200_000))
    _refused(escrow, psbt, ruling(400_000), why="miner fee 100600")
    # the arbiter moves 10_000 from the seller to the buyer
    psbt = escrow.signers[A].build(escrow.funding, ruling(500_000))
    agreed = Payout("ruling", (PayoutOutput(PAYTO[B], 490_000),
                               PayoutOutput(PAYTO[S], AMOUNT - 600 - 490_000)), None, 200, 10_000)
    _refused(escrow, psbt, agreed, why="outputs differ")


def test_refuses_an_excessive_fee(escrow: Escrow) -> None:
    agreed = escrow.payout("release", to=S)
    greedy = Payout("release", (), PAYTO[S], 200, 90_000)
    psbt = escrow.signers[B].build(escrow.funding, greedy, 50_000)
    _refused(escrow, psbt, agreed, why="miner fee 50000")
    with pytest.raises(PsbtRejected):
        escrow.signers[B].build(escrow.funding, agreed, 10_001)


def test_refuses_a_wrong_input() -> None:
    e = make_escrow()
    other = funding_tx((AMOUNT, e.policy.script_pubkey), salt=b"second")
    second = e.signers[B].add_funding(other)
    agreed = e.payout("release", to=S)
    psbt = e.signers[B].build(second, agreed)
    _refused(e, psbt, agreed, why="not the escrow outpoint")


def test_refuses_a_witness_utxo_that_lies_about_the_amount(escrow: Escrow) -> None:
    agreed = escrow.payout("release", to=S)
    raw = base64.b64decode(escrow.signers[B].build(escrow.funding, agreed))
    spk = escrow.policy.script_pubkey
    record = b"\x01\x01\x2b" + struct.pack("<q", AMOUNT) + b"\x22" + spk
    assert raw.count(record) == 1
    lie = raw.replace(record, record[:3] + struct.pack("<q", AMOUNT * 2) + record[11:])
    _refused(escrow, base64.b64encode(lie).decode(), agreed, why="witness utxo")
    bigger = Funding(escrow.funding.txid, escrow.funding.vout, AMOUNT * 2)
    _refused(escrow, base64.b64encode(lie).decode(), agreed, bigger, why="previous transaction")


def test_refuses_garbage(escrow: Escrow) -> None:
    _refused(escrow, "cHNidP8BAA==", escrow.payout("release", to=S))
    _refused(escrow, "", escrow.payout("release", to=S))


# -- the seller's timeout branch --------------------------------------------------------------


def test_timeout_branch_seller_alone_and_multisig_still_works() -> None:
    e = make_escrow(timeout_blocks=144)
    claim = e.payout("timeout", to=S)
    psbt = e.signers[S].build(e.funding, claim)
    with pytest.raises(PsbtRejected, match="sequence"):
        btc.check_psbt(psbt, e.policy, e.funding, e.payout("release", to=S))
    raw = btc.finalize([e.signers[S].sign(psbt, e.funding, claim)])
    assert consensus_ok(raw, e.policy.script_pubkey, AMOUNT)
    # the buyer's signer holds no timeout key: alone it cannot claim
    with pytest.raises(PsbtRejected):
        btc.finalize([e.signers[B].sign(psbt, e.funding, claim)])
    release = e.settle(e.payout("release", to=S), B, S)
    assert consensus_ok(release, e.policy.script_pubkey, AMOUNT)


# -- the node wallet (no chain) ---------------------------------------------------------------


def test_hot_wallet_persists_addresses(tmp_path: Path) -> None:
    db = str(tmp_path / "wallet.sqlite")
    w = btc.HotWallet(WORDS[B], "regtest", db)
    first, second = w.receive_address(), w.receive_address()
    assert first != second and w.balance() == btc.WalletBalance(0, 0, 0)
    with pytest.raises(EscrowBitcoinError):
        w.pay(PAYTO[S], 10_000, 2)  # no money
    again = btc.HotWallet(WORDS[B], "regtest", db)
    assert again.receive_address() not in (first, second)
    with pytest.raises(EscrowBitcoinError):
        btc.HotWallet(WORDS[S], "regtest", db)  # another key's database


def test_order_indexes_come_from_a_node_secret() -> None:
    # the index a buyer could aim at used to be a public hash of the order id; now only the
    # node that owns the key can compute it, and each attempt gives another candidate
    mine, theirs = btc.index_secret(WORDS[S]), btc.index_secret(WORDS[B])
    assert mine != theirs and len(mine) == 32
    first = btc.order_index(mine, "order-0001")
    assert first == btc.order_index(mine, "order-0001")  # stable: a restart finds it again
    assert first != btc.order_index(theirs, "order-0001")
    assert first != btc.legacy_order_index("order-0001")
    assert len({btc.order_index(mine, "order-0001", n) for n in range(16)}) == 16
    assert all(0 <= btc.order_index(mine, f"o{n}") < 2**31 for n in range(100))
