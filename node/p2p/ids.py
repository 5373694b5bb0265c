"""Peer id <-> public key conversions of the message path, memoised.

Each conversion is a pure-Python base58 encode or decode (about 7 us); a message round trip
did six of them for the same two peers. The caches are bounded, and errors are not cached.
"""

from __future__ import annotations

from functools import lru_cache

from p2pmarket.identity import peer_id_from_public, public_from_peer_id

CACHED_PEERS = 4096


@lru_cache(maxsize=CACHED_PEERS)
def peer_id_of(public: bytes) -> str:
    """`peer_id_from_public`, memoised (raises PeerIdError for a key that is not 32 bytes)."""
    return peer_id_from_public(public)


@lru_cache(maxsize=CACHED_PEERS)
def public_of(peer_id: str) -> bytes:
    """`public_from_peer_id`, memoised (raises PeerIdError for a string that is not one)."""
    return public_from_peer_id(peer_id)
