"""Bitcoin wire formats the devchain needs: transactions (with witness), headers, blocks, merkle
roots, compact targets and the regtest genesis block. Pure code, no IO.

Hashes are kept in internal byte order (as serialized); `hash_hex` gives the usual reversed hex.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

COIN = 100_000_000
MAX_MONEY = 21_000_000 * COIN
NULL_HASH = bytes(32)
NULL_INDEX = 0xFFFFFFFF
SEQUENCE_FINAL = 0xFFFFFFFF
WITNESS_SCALE = 4
REGTEST_BITS = 0x207FFFFF
REGTEST_GENESIS_HASH = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
WITNESS_COMMITMENT_HEADER = bytes.fromhex("6a24aa21a9ed")


class DecodeError(ValueError):
    """Bytes that are not a well-formed transaction, header or block."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", sha256(data)).digest()


def hash_hex(h: bytes) -> str:
    """Display form of a txid or block hash (byte-reversed hex)."""
    return h[::-1].hex()


def hash_from_hex(text: str) -> bytes:
    """Internal byte order from the display form; raises ValueError if not 64 hex digits."""
    if len(text) != 64:
        raise ValueError(f"not a 32-byte hash: {text!r}")
    return bytes.fromhex(text)[::-1]


def ser_varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def ser_varbytes(data: bytes) -> bytes:
    return ser_varint(len(data)) + data


class ByteReader:
    """A cursor over bytes; every short read raises DecodeError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError(f"truncated: wanted {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def peek(self, n: int) -> bytes:
        return self.data[self.pos : self.pos + n]

    def u8(self) -> int:
        return self.read(1)[0]

    def u32(self) -> int:
        return int(struct.unpack("<I", self.read(4))[0])

    def i32(self) -> int:
        return int(struct.unpack("<i", self.read(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.read(8))[0])

    def varint(self) -> int:
        first = self.u8()
        if first < 0xFD:
            return first
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        value = int.from_bytes(self.read(size), "little")
        if value < {2: 0xFD, 4: 0x10000, 8: 0x100000000}[size]:
            raise DecodeError("non-canonical compact size")
        return value

    def varbytes(self) -> bytes:
        n = self.varint()
        if n > len(self.data) - self.pos:
            raise DecodeError(f"length {n} runs past the end at offset {self.pos}")
        return self.read(n)

    @property
    def at_end(self) -> bool:
        return self.pos == len(self.data)


@dataclass(frozen=True, slots=True)
class OutPoint:
    txid: bytes  # internal byte order
    vout: int

    def __str__(self) -> str:
        return f"{hash_hex(self.txid)}:{self.vout}"

    @property
    def is_null(self) -> bool:
        return self.txid == NULL_HASH and self.vout == NULL_INDEX


@dataclass(frozen=True, slots=True)
class TxIn:
    prevout: OutPoint
    script_sig: bytes = b""
    sequence: int = SEQUENCE_FINAL
    witness: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class TxOut:
    value: int
    script_pubkey: bytes

    def serialize(self) -> bytes:
        return struct.pack("<q", self.value) + ser_varbytes(self.script_pubkey)


@dataclass(frozen=True)
class Tx:
    """A transaction; `version` is the signed 32-bit field as Esplora reports it."""

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int = 0

    def serialize(self, with_witness: bool = True) -> bytes:
        segwit = with_witness and self.has_witness
        parts = [struct.pack("<i", self.version)]
        if segwit:
            parts.append(b"\x00\x01")
        parts.append(ser_varint(len(self.inputs)))
        for txin in self.inputs:
            parts.append(txin.prevout.txid + struct.pack("<I", txin.prevout.vout))
            parts.append(ser_varbytes(txin.script_sig) + struct.pack("<I", txin.sequence))
        parts.append(ser_varint(len(self.outputs)))
        parts.extend(out.serialize() for out in self.outputs)
        if segwit:
            for txin in self.inputs:
                parts.append(ser_varint(len(txin.witness)))
                parts.extend(ser_varbytes(item) for item in txin.witness)
        parts.append(struct.pack("<I", self.locktime))
        return b"".join(parts)

    @classmethod
    def parse(cls, data: bytes) -> Tx:
        reader = ByteReader(data)
        tx = cls.read(reader)
        if not reader.at_end:
            raise DecodeError(f"{len(data) - reader.pos} trailing bytes after the transaction")
        return tx

    @classmethod
    def read(cls, reader: ByteReader) -> Tx:
        version = reader.i32()
        segwit = reader.peek(1) == b"\x00"
        if segwit:
            reader.read(1)
            if reader.u8() != 1:
                raise DecodeError("unknown segwit flag")
        raw_inputs = []
        for _ in range(reader.varint()):
            prevout = OutPoint(reader.read(32), reader.u32())
            raw_inputs.append((prevout, reader.varbytes(), reader.u32()))
        outputs = []
        for _ in range(reader.varint()):
            value = struct.unpack("<q", reader.read(8))[0]
            outputs.append(TxOut(int(value), reader.varbytes()))
        witnesses: list[tuple[bytes, ...]] = [()] * len(raw_inputs)
        if segwit:
            witnesses = [
                tuple(reader.varbytes() for _ in range(reader.varint())) for _ in raw_inputs
            ]
            if not any(witnesses):
                raise DecodeError("superfluous witness record")
        locktime = reader.u32()
        inputs = tuple(
            TxIn(p, s, q, w) for (p, s, q), w in zip(raw_inputs, witnesses, strict=True)
        )
        return cls(version, inputs, tuple(outputs), locktime)

    @cached_property
    def has_witness(self) -> bool:
        return any(txin.witness for txin in self.inputs)

    @cached_property
    def raw(self) -> bytes:
        return self.serialize()

    @cached_property
    def txid(self) -> bytes:
        return sha256d(self.serialize(with_witness=False))

    @cached_property
    def wtxid(self) -> bytes:
        return sha256d(self.raw)

    @property
    def txid_hex(self) -> str:
        return hash_hex(self.txid)

    @property
    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].prevout.is_null

    @property
    def size(self) -> int:
        return len(self.raw)

    @cached_property
    def weight(self) -> int:
        base = len(self.serialize(with_witness=False))
        return base * (WITNESS_SCALE - 1) + len(self.raw)

    @property
    def vsize(self) -> int:
        return (self.weight + WITNESS_SCALE - 1) // WITNESS_SCALE


@dataclass(frozen=True, slots=True)
class BlockHeader:
    version: int
    prev_hash: bytes
    merkle_root: bytes
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        return (
            struct.pack("<i", self.version) + self.prev_hash + self.merkle_root
            + struct.pack("<III", self.time, self.bits, self.nonce)
        )

    @property
    def hash(self) -> bytes:
        return sha256d(self.serialize())

    @classmethod
    def read(cls, reader: ByteReader) -> BlockHeader:
        version = reader.i32()
        prev, merkle = reader.read(32), reader.read(32)
        return cls(version, prev, merkle, reader.u32(), reader.u32(), reader.u32())


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[Tx, ...]

    def serialize(self) -> bytes:
        return self.header.serialize() + ser_varint(len(self.txs)) + b"".join(
            tx.raw for tx in self.txs
        )

    @classmethod
    def parse(cls, data: bytes) -> Block:
        reader = ByteReader(data)
        header = BlockHeader.read(reader)
        txs = tuple(Tx.read(reader) for _ in range(reader.varint()))
        if not reader.at_end:
            raise DecodeError("trailing bytes after the block")
        return cls(header, txs)

    @cached_property
    def hash(self) -> bytes:
        return self.header.hash

    @cached_property
    def size(self) -> int:
        return len(self.serialize())

    @cached_property
    def weight(self) -> int:
        overhead = 80 + len(ser_varint(len(self.txs)))
        return overhead * WITNESS_SCALE + sum(tx.weight for tx in self.txs)


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """Bitcoin's merkle root over internal-order hashes (the last one paired with itself)."""
    if not hashes:
        return NULL_HASH
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def witness_merkle_root(txs: Sequence[Tx]) -> bytes:
    """BIP141: merkle root of wtxids with the coinbase's replaced by zeros."""
    return merkle_root([NULL_HASH] + [tx.wtxid for tx in txs[1:]])


def bits_to_target(bits: int) -> int:
    exponent, mantissa = bits >> 24, bits & 0x007FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def difficulty(bits: int) -> float:
    """Difficulty as Bitcoin Core and Esplora report it (relative to bits 0x1d00ffff)."""
    return bits_to_target(0x1D00FFFF) / bits_to_target(bits)


def check_pow(header: BlockHeader) -> bool:
    return int.from_bytes(header.hash, "little") <= bits_to_target(header.bits)


# -- regtest genesis ----------------------------------------------------------------------------

_GENESIS_SCRIPT_SIG = bytes.fromhex(
    "04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e20"
    "6272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73"
)
_GENESIS_OUTPUT_SCRIPT = bytes.fromhex(
    "4104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f3"
    "5504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac"
)


def regtest_genesis() -> Block:
    """The regtest genesis block, rebuilt from its parts and checked against the known hash."""
    coinbase = Tx(
        1,
        (TxIn(OutPoint(NULL_HASH, NULL_INDEX), _GENESIS_SCRIPT_SIG),),
        (TxOut(50 * COIN, _GENESIS_OUTPUT_SCRIPT),),
    )
    header = BlockHeader(1, NULL_HASH, coinbase.txid, 1296688602, REGTEST_BITS, 2)
    block = Block(header, (coinbase,))
    if hash_hex(block.hash) != REGTEST_GENESIS_HASH:  # pragma: no cover - constants are fixed
        raise AssertionError("regtest genesis block does not hash to the known value")
    return block
