"""Profiles: this node's signed profile record, and anyone's profile with a reputation summary.

A profile is one single-value record (`profile` kind) under H("profile" | publisher); editing
republishes it with a higher seq (milliseconds since the epoch, so it survives restarts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dht.server import DhtNode
from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import Profile
from p2pmarket.wire.dhtkeys import single_key
from p2pmarket.wire.records import Record, RecordError, sign_record


class ProfileInvalid(ValueError):
    """Profile fields a person must fix; the message names the field."""


@dataclass(frozen=True, slots=True)
class ProfileView:
    publisher: bytes
    profile: Profile | None
    reviews: int
    rating: float | None


class Profiles:
    def __init__(self, identity: Identity, dht: DhtNode) -> None:
        self.identity, self.dht = identity, dht
        self.mine: Record[Profile] | None = None

    async def publish(self, profile: Profile) -> Record[Profile]:
        """Sign and publish my profile (it replaces the whole previous one)."""
        try:
            record = sign_record(self.identity, profile, seq=int(time.time() * 1000))
        except RecordError as exc:
            raise ProfileInvalid(str(exc)) from exc
        await self.dht.put(record)
        self.mine = record
        return record

    async def get(self, publisher: bytes) -> Record[Profile] | None:
        if publisher == self.identity.public and self.mine is not None:
            return self.mine
        record = await self.dht.get(single_key("profile", publisher))
        if record is None or not isinstance(record.body, Profile):
            return None  # absent, or deleted with a tombstone
        return record  # type: ignore[return-value]
