"""Many DHT nodes in one process on 127.0.0.1: signed records in, forgeries out."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from dht.protocol import MarketProtocol
from dht.server import DhtNode
from dht.storage import RecordStore
from dht.testing import dht_network, make_node, start_node
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire import bodies as b
from p2pmarket.wire.dhtkeys import ARBITERS_KEY, index_key, mailbox_key, record_key, reviews_key
from p2pmarket.wire.market import sign_grant
from p2pmarket.wire.records import MAX_RECORD_SIZE, Record, sign_record
from tests.support.records import make_listing

pytestmark = pytest.mark.timeout(60)
SELLER = Identity.generate()


@pytest.fixture
async def net() -> AsyncIterator[list[DhtNode]]:
    async with dht_network(30) as nodes:
        yield nodes


def holders(nodes: list[DhtNode], key: bytes) -> list[DhtNode]:
    return [n for n in nodes if n.transport is not None and n.records.has(key)]


async def raw_store(sender: DhtNode, target: DhtNode, key: bytes, value: bytes) -> object:
    assert sender.protocol is not None
    ok, answer = await sender.protocol.request(target.address, "store", sender.node.id, key,
                                               value, timeout=10)
    assert ok
    return answer


def bodies_of_every_kind(me: Identity) -> list[b.Body]:
    price = b.Price(1000, "EUR")
    return [
        make_listing(),
        b.Profile(name="Ada", bio="I sell bikes"),
        b.Peer(addrs=("/ip4/127.0.0.1/tcp/4001",), enc_key=os.urandom(32)),
        b.IndexEntry(scope="kw", term="bike", listing_id="lst-0001", listing_seq=1,
                     title="Road bike", price=price, category="sports/bikes"),
        b.Review(seller=SELLER.public, order_id="order-001", rating=5, text="great",
                 grant=sign_grant(SELLER, "order-001", me.public)),
        b.Arbiter(name="Fair Arbiter", fee_percent_bp=100),
        b.Mail(id="mail-0001", recipient=os.urandom(32), ephemeral=os.urandom(32),
               nonce=os.urandom(12), ciphertext=os.urandom(64)),
        b.Tombstone(target_kind="profile"),
    ]


async def test_set_get_every_kind(net: list[DhtNode]) -> None:
    me = Identity.generate()
    for body in bodies_of_every_kind(me):
        # the profile tombstone shares the profile's slot, so it needs a higher seq
        rec = sign_record(me, body, seq=2 if body.KIND == "tombstone" else 1)
        report = await net[1].put(rec)
        assert report.accepted >= 10, (body.KIND, report)
        found = await net[-1].get_all(record_key(rec))
        assert rec in found, body.KIND


async def test_highest_seq_wins_and_lower_seq_is_refused(net: list[DhtNode]) -> None:
    me = Identity.generate()
    v1 = sign_record(me, make_listing(title="v1"), seq=1)
    v2 = sign_record(me, make_listing(title="v2"), seq=2)
    key = record_key(v1)
    await net[2].put(v1)
    await net[3].put(v2)
    got = await net[4].get(key)
    assert got is not None and got.seq == 2
    with_v2 = [n for n in holders(net, key) if v2.raw in n.records.values(key)]
    assert len(with_v2) >= 10
    for node in with_v2:
        assert await raw_store(net[5], node, key, v1.raw) == "stale"
    got = await net[6].get(key)
    assert got is not None and got.body.title == "v2"
    # the same bytes again only refreshes
    assert await raw_store(net[5], with_v2[0], key, v2.raw) == "refreshed"


async def test_tombstone_replaces_listing(net: list[DhtNode]) -> None:
    me = Identity.generate()
    listing = sign_record(me, make_listing(), seq=3)
    await net[0].put(listing)
    tomb = sign_record(me, b.Tombstone(target_kind="listing", target_id=listing.body.id), seq=4)
    assert record_key(tomb) == record_key(listing)
    await net[1].put(tomb)
    got = await net[9].get(record_key(listing))
    assert got is not None and got.kind == "tombstone"


def _forgeries(victim: Identity, mallory: Identity) -> dict[str, tuple[bytes, bytes]]:
    now = int(time.time())
    good = sign_record(victim, make_listing(), seq=5)
    key = record_key(good)
    tampered = bytearray(good.raw)
    tampered[len(tampered) // 2] ^= 0x01
    claimed = good.raw.replace(victim.public, mallory.public)
    expired = sign_record(victim, make_listing(), seq=9, created=now - 7200, ttl=3600)
    mallorys = sign_record(mallory, make_listing(), seq=99)  # valid, but not bound to this key
    oversized = b"\x97" + b"\x00" * (MAX_RECORD_SIZE + 10)
    return {
        "tampered": (key, bytes(tampered)),
        "claimed-by-other-key": (key, claimed),
        "expired": (key, expired.raw),
        "wrong-key": (key, mallorys.raw),
        "oversized": (key, oversized),
        "garbage": (key, os.urandom(200)),
    }


async def test_raw_store_of_bad_records_is_refused_remotely(net: list[DhtNode]) -> None:
    victim, mallory = Identity.generate(), Identity.generate()
    attacker = net[0]
    for name, (key, value) in _forgeries(victim, mallory).items():
        for target in net[1:6]:
            answer = await raw_store(attacker, target, key, value)
            assert isinstance(answer, str) and answer.startswith("invalid"), (name, answer)
            assert not target.records.has(key), name
        assert await net[7].get(key) is None, name


async def test_forged_copy_planted_in_storage_is_never_returned(net: list[DhtNode]) -> None:
    """Even if a node's database were poisoned, readers verify and drop the forgery."""
    victim = Identity.generate()
    good = sign_record(victim, make_listing(title="real"), seq=1)
    key = record_key(good)
    await net[0].put(good)
    forged = bytearray(good.raw)
    forged[-70] ^= 0xFF
    for node in holders(net, key):
        node.records.db.execute("UPDATE dht_records SET raw=?, seq=100 WHERE key=?",
                                (bytes(forged), key))
    reader = net[-1]
    got = await reader.get(key)
    assert got is None or got.raw == good.raw


async def test_index_key_unions_many_publishers(net: list[DhtNode]) -> None:
    sellers = [Identity.generate() for _ in range(12)]
    for i, seller in enumerate(sellers):
        entry = b.IndexEntry(scope="kw", term="Bike", listing_id=f"lst-{i:04d}",
                             listing_seq=1, title=f"bike {i}", price=b.Price(100 + i, "EUR"),
                             category="sports/bikes")
        report = await net[i % len(net)].put(sign_record(seller, entry, seq=1))
        assert report.ok
    found = await net[-1].get_all(index_key("kw", "bike"))
    assert {r.publisher for r in found} == {s.public for s in sellers}


async def test_multi_value_paging_returns_everything() -> None:
    async with dht_network(12) as net:
        sellers = [Identity.generate() for _ in range(60)]
        desc = "x" * 200
        for i, seller in enumerate(sellers):
            entry = b.Arbiter(name=f"arbiter {i}", description=desc)
            assert (await net[i % 12].put(sign_record(seller, entry, seq=1))).ok
        found = await net[0].get_all(ARBITERS_KEY, max_pages=10)
        assert len(found) == 60


async def test_restarted_node_still_serves_what_it_stored(tmp_path: Path) -> None:
    async with dht_network(8) as net:
        me = Identity.generate()
        rec = sign_record(me, make_listing(), seq=1)
        ident = Identity.generate()
        db_path = tmp_path / "node.db"
        node = await start_node(make_node(ident, db=Database.open(db_path)), [net[0].address])
        key = record_key(rec)
        assert await raw_store(net[1], node, key, rec.raw) == "stored"
        node.stop()
        node.records.db.close()

        again = await start_node(make_node(ident, db=Database.open(db_path)), [net[0].address])
        try:
            assert again.protocol is not None
            ok, answer = await net[2].protocol.request(  # type: ignore[union-attr]
                again.address, "find_value", net[2].node.id, key)
            assert ok and isinstance(answer, dict) and answer["values"] == [rec.raw]
        finally:
            again.stop()
            again.records.db.close()


async def test_fake_node_id_is_never_admitted(net: list[DhtNode]) -> None:
    impostor = make_node()
    await impostor.listen(0, "127.0.0.1")
    try:
        assert impostor.protocol is not None
        victim_id = net[3].node.id
        target = net[0]
        for claimed in (bytes(20), victim_id):
            ok, _ = await impostor.protocol.request(target.address, "ping", claimed)
            assert ok
        await asyncio.sleep(0.2)  # let the identify challenge run
        assert target.protocol is not None
        contacts = [n for bucket in target.protocol.router.buckets for n in bucket.get_nodes()]
        assert all(n.port != impostor.address[1] for n in contacts)
        assert target.protocol.stats.rejected_ids >= 2
        # a node that pings with its true id is admitted
        ok, _ = await impostor.protocol.request(target.address, "ping", impostor.node.id)
        await asyncio.sleep(0.2)
        assert target.protocol.is_verified(impostor.node.id)
    finally:
        impostor.stop()


async def test_garbage_datagrams_are_dropped(net: list[DhtNode]) -> None:
    target = net[0]
    assert target.protocol is not None and net[1].transport is not None
    for payload in (b"", b"\x00" * 30, b"\x00" + os.urandom(40), os.urandom(500),
                    b"\x00" + os.urandom(20) + msgspec.msgpack.encode(["store", [1, 2]])):
        net[1].transport.sendto(payload, target.address)
    await asyncio.sleep(0.05)
    assert target.protocol.stats.bad_datagrams >= 3
    assert await net[1].protocol.request(target.address, "ping", net[1].node.id)  # type: ignore


async def test_lookup_survives_dead_nodes_quickly() -> None:
    async with dht_network(60) as net:
        me = Identity.generate()
        rec = sign_record(me, make_listing(), seq=1)
        await net[0].put(rec)
        for node in net[1:60:4]:
            node.stop()
        reader = net[2]
        got = await reader.get(record_key(rec))
        assert got == rec


async def test_mailbox_and_reviews_keys(net: list[DhtNode]) -> None:
    seller, buyer_key = Identity.generate(), Identity.generate()
    review = b.Review(seller=seller.public, order_id="order-xyz", rating=4, text="ok",
                      grant=sign_grant(seller, "order-xyz", buyer_key.public))
    rec: Record[b.Review] = sign_record(buyer_key, review, seq=1)
    assert record_key(rec) == reviews_key(seller.public)
    await net[0].put(rec)
    assert rec in await net[5].get_all(reviews_key(seller.public))
    mail = b.Mail(id="m-000001", recipient=seller.public, ephemeral=os.urandom(32),
                  nonce=os.urandom(12), ciphertext=os.urandom(32))
    mrec = sign_record(buyer_key, mail, seq=1)
    await net[1].put(mrec)
    assert [r.body.id for r in await net[7].get_all(mailbox_key(seller.public))] == ["m-000001"]


async def test_rate_limited_store_flood(net: list[DhtNode]) -> None:
    attacker, target = net[0], net[1]
    me = Identity.generate()
    rec = sign_record(me, make_listing(), seq=1)
    answers: list[object] = []
    for _ in range(30):  # batches, so the loopback socket buffer does not drop datagrams
        answers += await asyncio.gather(*(raw_store(attacker, target, record_key(rec), rec.raw)
                                          for _ in range(50)))
    assert {"error": "rate-limited"} in answers
    assert target.protocol is not None and target.protocol.stats.rate_limited > 0


def test_record_store_survives_reopen(tmp_path: Path) -> None:
    me = Identity.generate()
    rec = sign_record(me, make_listing(), seq=1)
    db = Database.open(tmp_path / "n.db")
    RecordStore(db).put(record_key(rec), rec)
    db.close()
    db = Database.open(tmp_path / "n.db")
    assert list(RecordStore(db).values(record_key(rec))) == [rec.raw]
    db.close()
    assert MarketProtocol is not None
