"""The devchain's own faucet wallet: one secp256k1 key, P2WPKH, BIP143 signatures (low-S DER)
made with `cryptography`, and a coin selection over the faucet's unspent outputs.

Its transactions go through the same acceptance path (and consensus check) as anyone's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from escrow.devchain.addresses import p2wpkh_address, p2wpkh_script
from escrow.devchain.chain import COINBASE_MATURITY, ChainState
from escrow.devchain.primitives import OutPoint, Tx, TxIn, TxOut, hash160, sha256d

log = logging.getLogger(__name__)

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SIGHASH_ALL = 1
FAUCET_FEE_RATE = 2  # sat/vB
DUST = 546
# vbytes: version, counts, locktime and segwit marker; one P2WPKH input; one output
_TX_OVERHEAD, _P2WPKH_INPUT, _OUTPUT_BASE = 11, 68, 9


class FaucetError(Exception):
    """The faucet cannot pay: not enough mature funds, or a bad amount."""


@dataclass(frozen=True)
class FaucetKey:
    secret: bytes  # 32 bytes

    @classmethod
    def generate(cls) -> FaucetKey:
        key = ec.generate_private_key(ec.SECP256K1())
        return cls(key.private_numbers().private_value.to_bytes(32, "big"))

    @property
    def _private(self) -> ec.EllipticCurvePrivateKey:
        return ec.derive_private_key(int.from_bytes(self.secret, "big"), ec.SECP256K1())

    @property
    def pubkey(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )

    @property
    def script_pubkey(self) -> bytes:
        return p2wpkh_script(hash160(self.pubkey))

    def address(self, network: str = "regtest") -> str:
        return p2wpkh_address(self.pubkey, network)

    def sign_digest(self, digest: bytes) -> bytes:
        """A low-S DER ECDSA signature over a 32-byte digest (BIP62/BIP146 low-S)."""
        der = self._private.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        r, s = decode_dss_signature(der)
        if s > SECP256K1_ORDER // 2:
            s = SECP256K1_ORDER - s
        return encode_dss_signature(r, s)


def bip143_sighash(tx: Tx, index: int, script_code: bytes, amount: int, sighash: int) -> bytes:
    """The BIP143 (segwit v0) signature hash for SIGHASH_ALL."""
    if sighash != SIGHASH_ALL:
        raise ValueError("only SIGHASH_ALL is implemented")
    prevouts = b"".join(
        t.prevout.txid + t.prevout.vout.to_bytes(4, "little") for t in tx.inputs
    )
    sequences = b"".join(t.sequence.to_bytes(4, "little") for t in tx.inputs)
    outputs = b"".join(out.serialize() for out in tx.outputs)
    txin = tx.inputs[index]
    preimage = b"".join((
        (tx.version & 0xFFFFFFFF).to_bytes(4, "little"),
        sha256d(prevouts),
        sha256d(sequences),
        txin.prevout.txid + txin.prevout.vout.to_bytes(4, "little"),
        script_code,
        amount.to_bytes(8, "little"),
        txin.sequence.to_bytes(4, "little"),
        sha256d(outputs),
        tx.locktime.to_bytes(4, "little"),
        sighash.to_bytes(4, "little"),
    ))
    return sha256d(preimage)


def sign_p2wpkh(tx: Tx, key: FaucetKey, amounts: list[int]) -> Tx:
    """`tx` with every input (all the key's P2WPKH outputs) signed."""
    pkh = hash160(key.pubkey)
    script_code = b"\x19\x76\xa9\x14" + pkh + b"\x88\xac"
    inputs = []
    for n, txin in enumerate(tx.inputs):
        digest = bip143_sighash(tx, n, script_code, amounts[n], SIGHASH_ALL)
        sig = key.sign_digest(digest) + bytes([SIGHASH_ALL])
        inputs.append(TxIn(txin.prevout, b"", txin.sequence, (sig, key.pubkey)))
    return Tx(tx.version, tuple(inputs), tx.outputs, tx.locktime)


def _vsize(n_inputs: int, output_scripts: list[bytes]) -> int:
    outputs = sum(_OUTPUT_BASE + len(s) for s in output_scripts)
    return _TX_OVERHEAD + n_inputs * _P2WPKH_INPUT + outputs


def build_payment(state: ChainState, key: FaucetKey, script_pubkey: bytes, sats: int) -> Tx:
    """A signed transaction paying `sats` to `script_pubkey` from the faucet's mature coins.

    Change goes back to the faucet key; the fee is FAUCET_FEE_RATE sat/vB.
    """
    if sats < DUST:
        raise FaucetError(f"amount {sats} sat is below the dust limit ({DUST} sat)")
    next_height = state.height + 1
    coins = [
        (point, coin)
        for point, coin in state.spendable(key.script_pubkey)
        if not coin.coinbase
        or (coin.height is not None and next_height - coin.height >= COINBASE_MATURITY)
    ]
    # confirmed first, oldest first: keeps chains of unconfirmed change short
    coins.sort(key=lambda pc: (pc[1].height is None, pc[1].height or 0))
    chosen: list[tuple[OutPoint, int]] = []
    total = 0
    change_spk = key.script_pubkey
    for point, coin in coins:
        chosen.append((point, coin.out.value))
        total += coin.out.value
        fee = math.ceil(FAUCET_FEE_RATE * _vsize(len(chosen), [script_pubkey, change_spk]))
        if total >= sats + fee:
            break
    else:
        available = sum(c.out.value for _, c in coins)
        raise FaucetError(
            f"faucet has {available} sat in mature coins, {sats} sat plus fee requested; "
            "mine more blocks to the faucet"
        )
    outputs = [TxOut(sats, script_pubkey)]
    change = total - sats - fee
    if change >= DUST:
        outputs.append(TxOut(change, change_spk))
    inputs = tuple(TxIn(point, b"", 0xFFFFFFFD) for point, _ in chosen)
    unsigned = Tx(2, inputs, tuple(outputs), 0)
    return sign_p2wpkh(unsigned, key, [value for _, value in chosen])
