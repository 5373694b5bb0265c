"""A node's Ed25519 identity: signing, verification, and the ids derived from the public key.

The libp2p PeerID, the DHT node id and the publisher field of every record all name this key.
"""

from __future__ import annotations

import hashlib

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

# identity multihash (0x00, length 0x24) of the protobuf PublicKey{Type: Ed25519 (0x08 0x01),
# Data: 32 bytes (0x12 0x20)}; libp2p's PeerID for Ed25519 keys, always "12D3KooW...".
_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])


class PeerIdError(ValueError):
    """A string that is not an Ed25519 libp2p peer id."""


def peer_id_from_public(public: bytes) -> str:
    if len(public) != PUBLIC_KEY_SIZE:
        raise PeerIdError(f"an Ed25519 public key has 32 bytes, got {len(public)}")
    encoded: bytes = base58.b58encode(_PEER_ID_PREFIX + public)
    return encoded.decode("ascii")


def public_from_peer_id(peer_id: str) -> bytes:
    """The raw public key named by a `12D3KooW...` peer id."""
    try:
        raw: bytes = base58.b58decode(peer_id.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise PeerIdError(f"not a base58 peer id: {peer_id!r}") from exc
    if len(raw) != len(_PEER_ID_PREFIX) + PUBLIC_KEY_SIZE or not raw.startswith(_PEER_ID_PREFIX):
        raise PeerIdError(f"not an Ed25519 peer id: {peer_id!r}")
    return raw[len(_PEER_ID_PREFIX) :]


def node_id_from_public(public: bytes) -> bytes:
    """The 160-bit DHT node id: SHA-1 of the raw public key (S/Kademlia style binding)."""
    return hashlib.sha1(public).digest()


def verify(public: bytes, signature: bytes, data: bytes) -> bool:
    """True when `signature` is `public`'s Ed25519 signature of `data`; never raises."""
    if len(public) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


class Identity:
    """An Ed25519 private key and the names derived from its public half."""

    __slots__ = ("_key", "public", "peer_id", "node_id")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public: bytes = key.public_key().public_bytes_raw()
        self.peer_id: str = peer_id_from_public(self.public)
        self.node_id: bytes = node_id_from_public(self.public)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """From the 32-byte private seed (the keystore's form)."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed has 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        return self._key.private_bytes_raw()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"Identity({self.peer_id})"
