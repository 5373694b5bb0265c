"""Per-peer limits of the libp2p host, sans-IO: a token bucket for incoming frames.

Pure code (an injectable clock, no trio, no libp2p) so unit tests can drive it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `take()` spends one when there is one."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp", "_clock")

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> bool:
        self._refill()
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    @property
    def full(self) -> bool:
        """True when the bucket is as good as new (so forgetting it loses nothing)."""
        self._refill()
        return self._tokens >= self.burst


class PeerBuckets:
    """One `TokenBucket` per peer id; full buckets are forgotten when the table grows large."""

    def __init__(self, rate: float, burst: float, *, max_peers: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.max_peers, self._clock = rate, burst, max_peers, clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, peer: str) -> bool:
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= self.max_peers:
                self._buckets = {p: b for p, b in self._buckets.items() if not b.full}
            bucket = self._buckets[peer] = TokenBucket(self.rate, self.burst, self._clock)
        return bucket.take()

    def __len__(self) -> int:
        return len(self._buckets)
