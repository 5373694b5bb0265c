"""The messenger over the in-memory host: exactly-once, in-order delivery despite a bad link."""

from __future__ import annotations

import asyncio
import random

import pytest

from node.p2p.memory import MemoryHost, MemoryNetwork
from node.p2p.outbox import State
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.messages import Chat, sign_message
from tests.support.p2p import make_peer, running, texts
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)


class LossyHost(MemoryHost):
    """Drops, duplicates and delays frames at random (a bad network)."""

    rng = random.Random(99)

    async def send(self, peer_id: str, payload: bytes) -> None:
        roll = self.rng.random()
        if roll < 0.15:
            return  # lost
        await super().send(peer_id, payload)
        if roll > 0.9:
            await super().send(peer_id, payload)  # duplicated


async def test_thousand_each_way_exactly_once_in_order() -> None:
    net = MemoryNetwork()
    a, b = make_peer(net), make_peer(net)
    async with running(a, b):
        for i in range(1000):
            a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text=f"a{i}"))
            b.messenger.send(a.identity.public, Chat(conversation="conv-0001", text=f"b{i}"))
        await until(lambda: len(a.got) == 1000 and len(b.got) == 1000)
        await until(lambda: not a.messenger.outbox.entries(state=State.SENT)
                    and not b.messenger.outbox.entries(state=State.SENT))
    assert texts(b, a) == [f"a{i}" for i in range(1000)]
    assert texts(a, b) == [f"b{i}" for i in range(1000)]
    assert len(a.messenger.outbox.entries(state=State.DELIVERED, limit=2000)) == 1000


async def test_lossy_link_still_exactly_once_in_order() -> None:
    net = MemoryNetwork()
    a, b = make_peer(net, LossyHost), make_peer(net, LossyHost)
    async with running(a, b):
        for i in range(200):
            a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text=f"m{i}"))
        await until(lambda: len(a.messenger.outbox.entries(state=State.DELIVERED,
                                                           limit=500)) == 200)
    assert texts(b, a) == [f"m{i}" for i in range(200)]


async def test_three_peers() -> None:
    net = MemoryNetwork()
    peers = [make_peer(net) for _ in range(3)]
    async with running(*peers):
        for p in peers:
            for q in peers:
                if p is not q:
                    for i in range(100):
                        p.messenger.send(q.identity.public,
                                         Chat(conversation="conv-0001", text=f"{i}"))
        await until(lambda: all(len(p.got) == 200 for p in peers))
    for p in peers:
        for q in peers:
            if p is not q:
                assert texts(p, q) == [str(i) for i in range(100)]


async def test_forged_and_replayed_messages_are_refused() -> None:
    net = MemoryNetwork()
    a, b, mallory = make_peer(net), make_peer(net), make_peer(net)
    async with running(a, b, mallory):
        entry = a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="hi"))
        await until(lambda: len(b.got) == 1)
        # Mallory replays Alice's genuine bytes over her own connection: wrong peer
        await mallory.host.send(b.host.peer_id, entry.raw)
        # and sends a message she signed herself but addressed to Alice
        _, raw = sign_message(mallory.identity, a.identity.public,
                              Chat(conversation="conv-0001", text="x"), seq=1)
        await mallory.host.send(b.host.peer_id, raw)
        await mallory.host.send(b.host.peer_id, b"\x93garbage")
        # Alice's own retry of the same message is not delivered twice
        await a.host.send(b.host.peer_id, entry.raw)
        await until(lambda: b.messenger.scores[mallory.identity.public] >= 3)
        # b still talks to a
        a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="still here"))
        await until(lambda: len(b.got) == 2)
    assert [m.body.text for m in b.got] == ["hi", "still here"]  # type: ignore[union-attr]


async def test_banned_peer_is_ignored() -> None:
    net = MemoryNetwork()
    b, mallory = make_peer(net), make_peer(net)
    async with running(b, mallory):
        for _ in range(6):
            await mallory.host.send(b.host.peer_id, b"junk")
        await until(lambda: b.messenger.is_banned(mallory.identity.public))
        mallory.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="hi"))
        await asyncio.sleep(0.3)
    assert b.got == []


async def test_unreachable_then_reachable() -> None:
    net = MemoryNetwork()
    a, b = make_peer(net), make_peer(net)
    async with running(a, b):
        await b.host.stop()
        entry = a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="hi"))
        await until(lambda: (e := a.messenger.outbox.get(entry.id)) is not None
                    and e.attempts >= 2 and e.state is State.QUEUED)
        assert a.messenger.outbox.get(entry.id).error  # type: ignore[union-attr]
        await b.host.start()
        await until(lambda: len(b.got) == 1)
        await until(lambda: a.messenger.outbox.get(entry.id).state  # type: ignore[union-attr]
                    is State.DELIVERED)


async def test_dedup_and_order_survive_restart(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "b.db"
    net = MemoryNetwork()
    a = make_peer(net)
    b_id = Identity.generate()
    b = make_peer(net, db=Database.open(path), identity=b_id)
    async with running(a, b):
        first = a.messenger.send(b_id.public, Chat(conversation="conv-0001", text="one"))
        await until(lambda: len(b.got) == 1)
    b.messenger.outbox.db.close()
    del net.hosts[b.host.peer_id]
    b2 = make_peer(net, db=Database.open(path), identity=b_id)
    async with running(a, b2):
        await a.host.send(b2.host.peer_id, first.raw)  # a replay after the restart
        a.messenger.send(b_id.public, Chat(conversation="conv-0001", text="two"))
        await until(lambda: len(b2.got) == 1)
        await asyncio.sleep(0.1)
    assert [m.body.text for m in b2.got] == ["two"]  # type: ignore[union-attr]
    b2.messenger.outbox.db.close()


async def test_blocked_peer_messages_are_dropped() -> None:
    net = MemoryNetwork()
    a, b, c = make_peer(net), make_peer(net), make_peer(net)
    blocked = {c.identity.public}
    b.messenger.is_blocked = lambda peer: peer in blocked
    async with running(a, b, c):
        c.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="spam"))
        a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="hello"))
        await until(lambda: len(b.got) == 1)
        await asyncio.sleep(0.3)
    assert [m.body.text for m in b.got] == ["hello"]  # type: ignore[union-attr]


async def test_a_message_our_disk_could_not_store_is_not_acked_and_comes_again() -> None:
    """A full disk while storing a received message (ours, not the peer's fault): the inbox
    row and the listeners' writes roll back together, no ack leaves, the sender's retry is
    taken as new, and the order holds."""
    from node.p2p.messenger import MessageReceived
    from p2pmarket.storage import StorageFull

    net = MemoryNetwork()
    a, b = make_peer(net), make_peer(net)
    failures = [1]

    def disk_full(event: object) -> None:
        if (isinstance(event, MessageReceived) and isinstance(event.message.body, Chat)
                and event.message.body.text == "two" and failures[0]):
            failures[0] -= 1
            raise StorageFull("database or disk is full")

    b.messenger.listeners.insert(0, disk_full)
    async with running(a, b):
        ids = [a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text=t)).id
               for t in ("one", "two", "three")]
        await until(lambda: all(a.messenger.outbox.get(i).state is State.DELIVERED  # type: ignore[union-attr]
                                for i in ids))
    assert failures == [0]
    assert texts(b, a) == ["one", "two", "three"]
    assert [row[0] for row in b.messenger.outbox.inbox(limit=10)] == ids
