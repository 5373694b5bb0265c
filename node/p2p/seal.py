"""Sealed boxes for offline mail: X25519 key agreement with a fresh ephemeral key, then AEAD.

Each node's X25519 key is derived from its identity seed, so it needs no extra storage and is
published in the node's signed `peer` record.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2pmarket.identity import Identity

_INFO = b"p2pmarket/v1/seal"


class SealError(Exception):
    """A sealed box that does not open: wrong key, or tampered bytes."""


def encryption_key(identity: Identity) -> X25519PrivateKey:
    seed = HKDF(hashes.SHA256(), 32, salt=None, info=b"p2pmarket/v1/x25519").derive(
        identity.seed())
    return X25519PrivateKey.from_private_bytes(seed)


def encryption_public(identity: Identity) -> bytes:
    return encryption_key(identity).public_key().public_bytes_raw()


def _key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=ephemeral + recipient, info=_INFO).derive(shared)


def seal(recipient: bytes, plaintext: bytes) -> tuple[bytes, bytes, bytes]:
    """(ephemeral public key, nonce, ciphertext) that only `recipient`'s key opens."""
    try:
        peer = X25519PublicKey.from_public_bytes(recipient)
    except ValueError as exc:
        raise SealError("recipient encryption key must be 32 bytes") from exc
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes_raw()
    nonce = os.urandom(12)
    key = _key(eph.exchange(peer), eph_pub, recipient)
    return eph_pub, nonce, ChaCha20Poly1305(key).encrypt(nonce, plaintext, eph_pub)


def unseal(own: X25519PrivateKey, ephemeral: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    recipient = own.public_key().public_bytes_raw()
    try:
        shared = own.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        return ChaCha20Poly1305(_key(shared, ephemeral, recipient)).decrypt(
            nonce, ciphertext, ephemeral)
    except (InvalidTag, ValueError) as exc:
        raise SealError("sealed mail does not open with this node's key") from exc
