"""A slot takes a record re-signed to live longer (same seq, same content, later expiry) and
still refuses other content under the same seq."""

from __future__ import annotations

from dht.storage import PutResult, RecordStore
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Profile
from p2pmarket.wire.dhtkeys import record_key
from p2pmarket.wire.records import sign_record

ALICE = Identity.generate()
T0 = 1_800_000_000


def test_renewal_replaces_equivocation_does_not() -> None:
    store = RecordStore(Database.open(":memory:"))
    first = sign_record(ALICE, Profile(name="Alice"), seq=5, created=T0, ttl=1000)
    key = record_key(first)
    assert store.put(key, first, now=T0) is PutResult.STORED
    renewed = sign_record(ALICE, Profile(name="Alice"), seq=5, created=T0 + 900, ttl=1000)
    assert store.put(key, renewed, now=T0 + 900) is PutResult.STORED
    assert list(store.values(key, now=T0 + 1500)) == [renewed.raw]  # lives past the first
    older = sign_record(ALICE, Profile(name="Alice"), seq=5, created=T0 + 10, ttl=1000)
    assert store.put(key, older, now=T0 + 900) is PutResult.CONFLICT  # not an extension
    other = sign_record(ALICE, Profile(name="Mallory"), seq=5, created=T0 + 950, ttl=1000)
    assert store.put(key, other, now=T0 + 950) is PutResult.CONFLICT  # other content
    assert list(store.values(key, now=T0 + 950)) == [renewed.raw]
