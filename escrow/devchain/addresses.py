"""Scripts and addresses for the devchain: bech32/bech32m (BIP173/BIP350) segwit addresses,
base58check P2PKH/P2SH, Esplora's scriptpubkey_type names and small script builders. Pure code.
"""

from __future__ import annotations

import struct
from enum import Enum

import base58

from escrow.devchain.primitives import hash160, sha256

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32M_CONST = 0x2BC830A3

# version bytes per network: (p2pkh, p2sh, segwit hrp)
NETWORKS = {
    "regtest": (0x6F, 0xC4, "bcrt"),
    "testnet": (0x6F, 0xC4, "tb"),
    "signet": (0x6F, 0xC4, "tb"),
    "mainnet": (0x00, 0x05, "bc"),
}


class AddressError(ValueError):
    """Not a valid address for the network."""


class Encoding(Enum):
    BECH32 = 1
    BECH32M = _BECH32M_CONST


def _polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_encode(hrp: str, data: list[int], encoding: Encoding) -> str:
    values = _hrp_expand(hrp) + data
    polymod = _polymod(values + [0] * 6) ^ encoding.value
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in data + checksum)


def bech32_decode(text: str) -> tuple[str, list[int], Encoding]:
    """Split and checksum a bech32 or bech32m string; raises AddressError."""
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise AddressError("invalid character")
    if text.lower() != text and text.upper() != text:
        raise AddressError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text) or len(text) > 90:
        raise AddressError("bad separator position or length")
    if any(c not in CHARSET for c in text[pos + 1 :]):
        raise AddressError("invalid data character")
    hrp, data = text[:pos], [CHARSET.find(c) for c in text[pos + 1 :]]
    const = _polymod(_hrp_expand(hrp) + data)
    for encoding in Encoding:
        if const == encoding.value:
            return hrp, data[:-6], encoding
    raise AddressError("bad checksum")


def convertbits(data: list[int] | bytes, frombits: int, tobits: int, pad: bool) -> list[int]:
    acc, bits, out, maxv = 0, 0, [], (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise AddressError("value out of range")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise AddressError("invalid padding")
    return out


def decode_segwit(hrp: str, address: str) -> tuple[int, bytes]:
    """(witness version, program) of a segwit address with this hrp (BIP173/BIP350 rules)."""
    got_hrp, data, encoding = bech32_decode(address)
    if got_hrp != hrp:
        raise AddressError(f"wrong network prefix {got_hrp!r}, expected {hrp!r}")
    if not data or data[0] > 16:
        raise AddressError("bad witness version")
    program = bytes(convertbits(data[1:], 5, 8, False))
    if not 2 <= len(program) <= 40:
        raise AddressError("bad witness program length")
    if data[0] == 0 and len(program) not in (20, 32):
        raise AddressError("bad v0 witness program length")
    if (data[0] == 0) != (encoding is Encoding.BECH32):
        raise AddressError("wrong checksum variant for the witness version")
    return data[0], program


def encode_segwit(hrp: str, version: int, program: bytes) -> str:
    encoding = Encoding.BECH32 if version == 0 else Encoding.BECH32M
    address = bech32_encode(hrp, [version, *convertbits(program, 8, 5, True)], encoding)
    decode_segwit(hrp, address)  # refuses programs no decoder would accept
    return address


def address_to_script(address: str, network: str = "regtest") -> bytes:
    """The scriptPubKey an address pays to; raises AddressError."""
    p2pkh, p2sh, hrp = NETWORKS[network]
    if address.lower().startswith(hrp + "1"):
        version, program = decode_segwit(hrp, address)
        return bytes([version + 0x50 if version else 0, len(program)]) + program
    try:
        payload = base58.b58decode_check(address)
    except ValueError as exc:
        raise AddressError(f"not a {network} address: {address!r}") from exc
    if len(payload) == 21 and payload[0] == p2pkh:
        return b"\x76\xa9\x14" + payload[1:] + b"\x88\xac"
    if len(payload) == 21 and payload[0] == p2sh:
        return b"\xa9\x14" + payload[1:] + b"\x87"
    raise AddressError(f"not a {network} address: {address!r}")


# -- script builders -------------------------------------------------------------------------------


def push_data(data: bytes) -> bytes:
    n = len(data)
    if n < 0x4C:
        return bytes([n]) + data
    if n <= 0xFF:
        return b"\x4c" + bytes([n]) + data
    if n <= 0xFFFF:
        return b"\x4d" + struct.pack("<H", n) + data
    return b"\x4e" + struct.pack("<I", n) + data


def script_num(n: int) -> bytes:
    """Minimal CScriptNum encoding (little-endian, sign bit in the top byte)."""
    if n == 0:
        return b""
    neg, value, out = n < 0, abs(n), bytearray()
    while value:
        out.append(value & 0xFF)
        value >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if neg else 0)
    elif neg:
        out[-1] |= 0x80
    return bytes(out)


def push_int(n: int) -> bytes:
    """`CScript() << n`: OP_0, OP_1..OP_16, OP_1NEGATE, or a minimal number push (BIP34)."""
    if n == 0:
        return b"\x00"
    if n == -1 or 1 <= n <= 16:
        return bytes([0x50 + n])
    return push_data(script_num(n))


def p2wpkh_script(pubkey_hash: bytes) -> bytes:
    return b"\x00\x14" + pubkey_hash


def _witness_program(spk: bytes) -> tuple[int, bytes] | None:
    if 4 <= len(spk) <= 42 and spk[1] == len(spk) - 2:
        if spk[0] == 0:
            return 0, spk[2:]
        if 0x51 <= spk[0] <= 0x60:
            return spk[0] - 0x50, spk[2:]
    return None


def script_to_address(spk: bytes, network: str = "regtest") -> str | None:
    """The address of a standard scriptPubKey, or None (bare scripts, OP_RETURN, ...)."""
    p2pkh, p2sh, hrp = NETWORKS[network]
    if len(spk) == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac":
        return str(base58.b58encode_check(bytes([p2pkh]) + spk[3:23]).decode())
    if len(spk) == 23 and spk[:2] == b"\xa9\x14" and spk[22] == 0x87:
        return str(base58.b58encode_check(bytes([p2sh]) + spk[2:22]).decode())
    witness = _witness_program(spk)
    if witness is not None:
        try:
            return encode_segwit(hrp, *witness)
        except AddressError:
            return None
    return None


def script_type(spk: bytes) -> str:
    """Esplora's scriptpubkey_type for a scriptPubKey."""
    if not spk:
        return "empty"
    if spk[0] == 0x6A:
        return "op_return"
    if len(spk) == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac":
        return "p2pkh"
    if len(spk) == 23 and spk[:2] == b"\xa9\x14" and spk[22] == 0x87:
        return "p2sh"
    if len(spk) in (35, 67) and spk[0] == len(spk) - 2 and spk[-1] == 0xAC:
        return "p2pk"
    witness = _witness_program(spk)
    if witness is not None:
        name = {(0, 20): "v0_p2wpkh", (0, 32): "v0_p2wsh", (1, 32): "v1_p2tr"}
        return name.get((witness[0], len(witness[1])), "unknown")
    return "unknown"


def p2wpkh_address(pubkey: bytes, network: str = "regtest") -> str:
    return encode_segwit(NETWORKS[network][2], 0, hash160(pubkey))


def scripthash(spk: bytes) -> str:
    """Esplora's script hash: sha256 of the scriptPubKey, hex, not reversed."""
    return sha256(spk).hex()
