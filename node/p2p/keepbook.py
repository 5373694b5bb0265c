"""What an image keeper holds for others, and whether it takes one more: quotas and disk budget.

Sans-IO: `KeepBook` only counts. The keeper shell (`node.p2p.keeper`) asks it, fetches the bytes,
deletes what it says to evict and stores the entries in the database. Only blobs kept for others
are in the book, so the node's own images are never evicted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from p2pmarket.wire.bodies import MAX_IMAGE_BYTES

MB = 1024 * 1024
DEFAULT_PER_PUBLISHER = 64 * MB  # 32 full-size images, or 4 listings of 8
MAX_BLOBS_PER_PUBLISHER = 256  # many small images must not make a stranger's share endless


class Refusal(enum.StrEnum):
    """Why a keeper does not take an image (the answer a pusher gets, as text)."""

    NOT_KEEPER = "not-keeper"  # this node keeps no images for others
    BAD_OFFER = "bad-offer"  # malformed, not a valid listing of the pusher, image not in it
    TOO_LARGE = "too-large"  # the image is over MAX_IMAGE_BYTES or the whole budget
    QUOTA = "quota"  # the publisher's share is used up
    FULL = "full"  # the budget is taken by fresher images, or by ones being fetched
    BUSY = "busy"  # too many fetches at once; try later
    FETCH_FAILED = "fetch-failed"  # the pusher did not give the bytes the hash names


@dataclass(frozen=True, slots=True)
class KeepPolicy:
    budget: int  # bytes on disk for others' images
    per_publisher: int = DEFAULT_PER_PUBLISHER
    max_blobs_per_publisher: int = MAX_BLOBS_PER_PUBLISHER

    def __post_init__(self) -> None:
        if self.budget < 1 or self.per_publisher < 1 or self.max_blobs_per_publisher < 1:
            raise ValueError("a keep policy needs a positive budget, share and count")


@dataclass(frozen=True, slots=True)
class Kept:
    digest: bytes
    publisher: bytes  # who pushed it first; charged for it
    size: int
    until: int  # the listing's expiry: kept no longer than that (a renewal pushes it again)
    used: float  # last stored, offered or served: the least recently used goes first
    pending: bool = False  # admitted, bytes not fetched yet (counts against the budget)


@dataclass(frozen=True, slots=True)
class Admitted:
    entry: Kept
    evict: tuple[Kept, ...]  # removed from the book: delete their bytes
    already: bool  # held before: nothing to fetch


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Refusal


class KeepBook:
    """The blobs kept for others, by digest; `used_bytes` never passes `policy.budget`."""

    def __init__(self, policy: KeepPolicy, entries: list[Kept] | None = None) -> None:
        self.policy = policy
        self._entries: dict[bytes, Kept] = {}
        self._used = 0
        self._charged: dict[bytes, tuple[int, int]] = {}  # publisher -> (bytes, blobs)
        for entry in entries or ():
            self._add(entry)

    def _add(self, entry: Kept) -> None:
        self._remove(entry.digest)
        self._entries[entry.digest] = entry
        self._used += entry.size
        size, count = self._charged.get(entry.publisher, (0, 0))
        self._charged[entry.publisher] = (size + entry.size, count + 1)

    def _remove(self, digest: bytes) -> Kept | None:
        entry = self._entries.pop(digest, None)
        if entry is not None:
            self._used -= entry.size
            size, count = self._charged[entry.publisher]
            if count == 1:
                del self._charged[entry.publisher]
            else:
                self._charged[entry.publisher] = (size - entry.size, count - 1)
        return entry

    def __contains__(self, digest: object) -> bool:
        return digest in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Kept | None:
        return self._entries.get(digest)

    def entries(self) -> list[Kept]:
        return list(self._entries.values())

    @property
    def used_bytes(self) -> int:
        return self._used

    def usage(self, publisher: bytes) -> tuple[int, int]:
        """(bytes, blobs) charged to `publisher`."""
        return self._charged.get(publisher, (0, 0))

    def admit(self, publisher: bytes, digest: bytes, size: int, until: int, now: float
              ) -> Admitted | Refused:
        """Take one image (reserved as pending) or say why not. Evicts the least recently
        used settled entries of other publishers when the budget is short."""
        held = self._entries.get(digest)
        if held is not None:
            if held.pending:
                return Refused(Refusal.BUSY)  # another push of it is being fetched
            entry = replace(held, until=max(held.until, until), used=now)
            self._add(entry)
            return Admitted(entry, (), already=True)
        if not 0 < size <= min(MAX_IMAGE_BYTES, self.policy.budget):
            return Refused(Refusal.TOO_LARGE)
        charged, count = self.usage(publisher)
        if (charged + size > self.policy.per_publisher
                or count >= self.policy.max_blobs_per_publisher):
            return Refused(Refusal.QUOTA)
        short = self.used_bytes + size - self.policy.budget
        evict: list[Kept] = []
        if short > 0:
            candidates = sorted((e for e in self._entries.values()
                                 if not e.pending and e.publisher != publisher),
                                key=lambda e: e.used)
            for victim in candidates:
                if short <= 0:
                    break
                evict.append(victim)
                short -= victim.size
            if short > 0:
                return Refused(Refusal.FULL)
        for victim in evict:
            self._remove(victim.digest)
        entry = Kept(digest, publisher, size, until, now, pending=True)
        self._add(entry)
        return Admitted(entry, tuple(evict), already=False)

    def settle(self, digest: bytes) -> Kept | None:
        """The bytes of a pending entry arrived and matched: it is kept now."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        entry = replace(entry, pending=False)
        self._add(entry)
        return entry

    def drop(self, digest: bytes) -> Kept | None:
        """Forget an entry (a failed fetch, or its bytes are gone)."""
        return self._remove(digest)

    def touch(self, digest: bytes, now: float) -> Kept | None:
        entry = self._entries.get(digest)
        if entry is None or entry.pending:
            return None
        entry = replace(entry, used=now)
        self._add(entry)
        return entry

    def expired(self, now: float) -> list[Kept]:
        """Remove and return settled entries whose listing has expired."""
        gone = [e for e in self._entries.values() if not e.pending and e.until <= now]
        for entry in gone:
            self._remove(entry.digest)
        return gone
