"""Wire formats, hashes, merkle roots, addresses and signing under the devchain, checked against
published vectors and against two independent implementations (Bitcoin Core's kernel, BDK)."""

from __future__ import annotations

import bdkpython as bdk
import pbk
import pytest

from escrow.devchain.addresses import (
    AddressError,
    Encoding,
    address_to_script,
    bech32_decode,
    bech32_encode,
    decode_segwit,
    p2wpkh_script,
    push_int,
    script_num,
    script_to_address,
    script_type,
)
from escrow.devchain.chain import ChainState, block_subsidy
from escrow.devchain.faucet import FaucetKey, build_payment, sign_p2wpkh
from escrow.devchain.mining import build_block, check_block
from escrow.devchain.primitives import (
    NULL_HASH,
    REGTEST_GENESIS_HASH,
    Block,
    DecodeError,
    OutPoint,
    Tx,
    TxIn,
    TxOut,
    difficulty,
    hash_from_hex,
    hash_hex,
    merkle_root,
    regtest_genesis,
    sha256d,
)
from escrow.devchain.rules import check_transaction

ALL = pbk.ScriptVerificationFlags.ALL


def sample_tx(witness: bool = True) -> Tx:
    inputs = (
        TxIn(OutPoint(bytes(range(32)), 1), b"", 0xFFFFFFFD,
             (b"\x30" * 71, b"\x02" * 33) if witness else ()),
        TxIn(OutPoint(bytes(range(32, 64)), 0), b"\x51", 7, ()),
    )
    outputs = (TxOut(12_345, p2wpkh_script(bytes(20))), TxOut(0, b"\x6a\x04test"))
    return Tx(2, inputs, outputs, 101)


# -- transactions -------------------------------------------------------------------------------


@pytest.mark.parametrize("witness", [True, False])
def test_tx_round_trip(witness: bool) -> None:
    tx = sample_tx(witness)
    raw = tx.serialize()
    assert raw[4:6] == (b"\x00\x01" if witness else raw[4:6])
    again = Tx.parse(raw)
    assert again == tx and again.serialize() == raw
    assert tx.has_witness is witness
    assert (tx.txid == tx.wtxid) is (not witness)
    assert tx.weight == len(tx.serialize(False)) * 3 + len(raw)


@pytest.mark.parametrize("witness", [True, False])
def test_txid_wtxid_match_bitcoin_core_and_bdk(witness: bool) -> None:
    tx = sample_tx(witness)
    assert str(pbk.Transaction(tx.raw).txid) == tx.txid_hex
    theirs = bdk.Transaction(tx.raw)
    assert str(theirs.compute_txid()) == tx.txid_hex
    assert str(theirs.compute_wtxid()) == hash_hex(tx.wtxid)
    assert theirs.weight() == tx.weight and theirs.vsize() == tx.vsize


@pytest.mark.parametrize("raw", [
    b"",
    bytes.fromhex("02000000"),
    sample_tx().raw[:-1],
    sample_tx().raw + b"\x00",
    # segwit marker with an unknown flag
    bytes.fromhex("020000000002") + sample_tx().raw[6:],
])
def test_tx_parse_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        Tx.parse(raw)


def test_superfluous_witness_record_rejected() -> None:
    raw = bytearray(sample_tx(False).serialize())
    body = bytes(raw[4:-4])
    forged = bytes(raw[:4]) + b"\x00\x01" + body + b"\x00\x00" + bytes(raw[-4:])
    with pytest.raises(DecodeError, match="superfluous"):
        Tx.parse(forged)


def test_hash_hex_round_trip() -> None:
    assert hash_from_hex(REGTEST_GENESIS_HASH)[::-1].hex() == REGTEST_GENESIS_HASH
    with pytest.raises(ValueError):
        hash_from_hex("abcd")


# -- blocks -------------------------------------------------------------------------------------


def test_regtest_genesis() -> None:
    genesis = regtest_genesis()
    assert hash_hex(genesis.hash) == REGTEST_GENESIS_HASH
    # the genesis coinbase txid is the same on every network
    assert genesis.txs[0].txid_hex == (
        "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    )
    assert Block.parse(genesis.serialize()).hash == genesis.hash
    assert str(pbk.Block(genesis.serialize()).block_hash) == REGTEST_GENESIS_HASH
    assert difficulty(genesis.header.bits) == pytest.approx(4.656542373906925e-10)


def test_merkle_root_of_mainnet_block_100000() -> None:
    txids = [
        "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
        "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
        "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
        "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
    ]
    root = merkle_root([hash_from_hex(t) for t in txids])
    assert hash_hex(root) == "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"
    assert merkle_root([hash_from_hex(txids[0])]) == hash_from_hex(txids[0])
    assert merkle_root([]) == NULL_HASH


def test_mined_blocks_pass_bitcoin_core_block_check() -> None:
    key = FaucetKey.generate()
    state = ChainState()
    for _ in range(3):
        state.connect_block(build_block(state, key.script_pubkey, 1_700_000_000))
    tip = state.tip.block
    coinbase = tip.txs[0]
    assert coinbase.inputs[0].script_sig.startswith(push_int(3))  # BIP34
    assert coinbase.outputs[0].value == block_subsidy(3)
    check_block(tip)
    # time must move past the median time past even when the clock stands still
    for before, entry in zip(state.blocks, state.blocks[1:], strict=False):
        assert entry.time > before.mediantime


def test_block_with_segwit_tx_commits_to_wtxids() -> None:
    key = FaucetKey.generate()
    state = ChainState()
    for _ in range(101):
        state.connect_block(build_block(state, key.script_pubkey, 1_700_000_000))
    assert not any(out.script_pubkey.startswith(b"\x6a") for out in state.tip.block.txs[0].outputs)
    payment = build_payment(state, key, p2wpkh_script(bytes(20)), 100_000)
    state.add_to_mempool(payment, check_transaction(state, payment))
    block = build_block(state, key.script_pubkey, 1_700_000_000)
    check_block(block)
    coinbase, mined = block.txs
    assert mined == payment and coinbase.outputs[0].value == block_subsidy(102) + (
        state.txs[payment.txid].fee
    )
    # BIP141: OP_RETURN aa21a9ed + sha256d(merkle(0, wtxid...) || reserved), reserved = witness
    [reserved] = coinbase.inputs[0].witness
    root = sha256d(bytes(32) + payment.wtxid)
    assert coinbase.outputs[-1].script_pubkey == (
        bytes.fromhex("6a24aa21a9ed") + sha256d(root + reserved)
    )


def test_subsidy_halves_every_150_blocks() -> None:
    assert block_subsidy(1) == 50 * 10**8
    assert block_subsidy(149) == 50 * 10**8
    assert block_subsidy(150) == 25 * 10**8
    assert block_subsidy(300) == 1_250_000_000
    assert block_subsidy(150 * 64) == 0


def test_script_num_and_bip34_push() -> None:
    assert script_num(0) == b""
    assert script_num(127) == b"\x7f"
    assert script_num(128) == b"\x80\x00"
    assert script_num(-1) == b"\x81"
    assert push_int(0) == b"\x00"
    assert push_int(16) == b"\x60"
    assert push_int(17) == b"\x01\x11"
    assert push_int(500) == b"\x02\xf4\x01"


# -- signing ------------------------------------------------------------------------------------


def test_p2wpkh_signature_validates_under_bitcoin_core() -> None:
    key = FaucetKey.generate()
    amounts = [70_000, 30_000]
    unsigned = Tx(2, (TxIn(OutPoint(b"\x11" * 32, 0)), TxIn(OutPoint(b"\x22" * 32, 3))),
                  (TxOut(99_000, p2wpkh_script(bytes(20))),))
    tx = sign_p2wpkh(unsigned, key, amounts)
    ptx = pbk.Transaction(tx.raw)
    spk = pbk.ScriptPubkey(key.script_pubkey)
    spent = [pbk.TransactionOutput(spk, a) for a in amounts]
    pre = pbk.script.PrecomputedTransactionData(ptx, spent)
    assert all(spk.verify(a, ptx, pre, n, ALL) for n, a in enumerate(amounts))
    # BIP143 commits to the amount: a different one fails
    assert not spk.verify(amounts[0] + 1, ptx, pre, 0, ALL)
    sig = tx.inputs[0].witness[0]
    s_len = sig[5 + sig[3]]
    s = int.from_bytes(sig[6 + sig[3] : 6 + sig[3] + s_len], "big")
    assert s <= 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 // 2


# -- addresses ----------------------------------------------------------------------------------

BIP350_VALID = [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
     "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
    ("bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
     "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("BC1SW50QGDZ25J", "6002751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    ("tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
     "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
    ("tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
     "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
     "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
]

BIP350_INVALID = [
    "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",
    "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",
    "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",
    "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",
    "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",
    "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",
    "bc1pw5dgrnzv",
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq",
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",
    "bc1gmk9yu",
]


@pytest.mark.parametrize(("address", "spk_hex"), BIP350_VALID)
def test_bip350_valid_addresses(address: str, spk_hex: str) -> None:
    network = "mainnet" if address.lower().startswith("bc") else "testnet"
    spk = bytes.fromhex(spk_hex)
    assert address_to_script(address, network) == spk
    assert script_to_address(spk, network) == address.lower()


@pytest.mark.parametrize("address", BIP350_INVALID)
def test_bip350_invalid_addresses(address: str) -> None:
    hrp = "tb" if address.lower().startswith("t") else "bc"
    with pytest.raises(AddressError):
        decode_segwit(hrp, address)


@pytest.mark.parametrize(("text", "encoding"), [
    ("A12UEL5L", Encoding.BECH32),
    ("an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
     Encoding.BECH32),
    ("abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw", Encoding.BECH32),
    ("split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w", Encoding.BECH32),
    ("?1ezyfcl", Encoding.BECH32),
    ("A1LQFN3A", Encoding.BECH32M),
    ("abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx", Encoding.BECH32M),
    ("split1checkupstagehandshakeupstreamerranterredcaperredlc445v", Encoding.BECH32M),
    ("?1v759aa", Encoding.BECH32M),
])
def test_bech32_checksums(text: str, encoding: Encoding) -> None:
    hrp, data, got = bech32_decode(text)
    assert got is encoding
    assert bech32_encode(hrp, data, encoding) == text.lower()


@pytest.mark.parametrize("text", ["pzry9x0s0muk", "1pzry9x0s0muk", "x1b4n0q5v", "li1dgmt3",
                                  "A1G7SGD8", "10a06t8", "1qzzfhee"])
def test_bech32_invalid_strings(text: str) -> None:
    with pytest.raises(AddressError):
        bech32_decode(text)


def test_regtest_addresses_agree_with_bdk() -> None:
    key = FaucetKey.generate()
    address = key.address()
    assert address.startswith("bcrt1q")
    theirs = bdk.Address(address, bdk.Network.REGTEST)
    assert theirs.script_pubkey().to_bytes() == key.script_pubkey == address_to_script(address)
    p2pkh = b"\x76\xa9\x14" + bytes(20) + b"\x88\xac"
    legacy = script_to_address(p2pkh)
    assert legacy is not None and legacy.startswith(("m", "n"))
    assert address_to_script(legacy) == p2pkh
    p2sh = b"\xa9\x14" + bytes(20) + b"\x87"
    assert address_to_script(script_to_address(p2sh) or "") == p2sh
    with pytest.raises(AddressError):
        address_to_script("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")  # mainnet


@pytest.mark.parametrize(("spk_hex", "kind"), [
    ("0014" + "00" * 20, "v0_p2wpkh"),
    ("0020" + "00" * 32, "v0_p2wsh"),
    ("5120" + "00" * 32, "v1_p2tr"),
    ("76a914" + "00" * 20 + "88ac", "p2pkh"),
    ("a914" + "00" * 20 + "87", "p2sh"),
    ("6a0474657374", "op_return"),
    ("21" + "02" * 33 + "ac", "p2pk"),
    ("", "empty"),
    ("51", "unknown"),
])
def test_script_types(spk_hex: str, kind: str) -> None:
    assert script_type(bytes.fromhex(spk_hex)) == kind
