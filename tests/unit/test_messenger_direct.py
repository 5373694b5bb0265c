"""The messenger's short path (frame handler, acks and fresh sends queued at once) in memory."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from node.p2p.memory import DirectMemoryHost, MemoryNetwork
from node.p2p.messenger import MessageDelivered, MessengerEvent, RetryPolicy
from node.p2p.outbox import Outbox, State
from node.p2p.transport import P2PError
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.messages import Chat
from tests.support.p2p import make_peer, running, texts
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)


class CountingHost(DirectMemoryHost):
    """Counts the frames that took each way out."""

    def __init__(self, network: MemoryNetwork, identity: Identity) -> None:
        super().__init__(network, identity)
        self.soon = self.awaited = 0

    def send_soon(self, peer_id: str, payload: bytes) -> asyncio.Future[None]:
        self.soon += 1
        return super().send_soon(peer_id, payload)

    async def send(self, peer_id: str, payload: bytes) -> None:
        self.awaited += 1
        await DirectMemoryHost.send_soon(self, peer_id, payload)


class LossyDirectHost(DirectMemoryHost):
    """Drops, duplicates and delays frames at random (both ways out: `send` uses `send_soon`)."""

    rng = random.Random(7)

    def send_soon(self, peer_id: str, payload: bytes) -> asyncio.Future[None]:
        roll = self.rng.random()
        if roll < 0.15:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            try:
                self._reach(peer_id)
            except P2PError as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(None)  # written, then lost on the way
            return fut
        fut = super().send_soon(peer_id, payload)
        if roll > 0.9:
            super().send_soon(peer_id, payload)  # duplicated
        return fut


async def test_direct_thousand_each_way_exactly_once_in_order() -> None:
    net = MemoryNetwork()
    a, b = make_peer(net, CountingHost), make_peer(net, CountingHost)
    async with running(a, b):
        for i in range(1000):
            a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text=f"a{i}"))
            b.messenger.send(a.identity.public, Chat(conversation="conv-0001", text=f"b{i}"))
        await until(lambda: len(a.got) == 1000 and len(b.got) == 1000)
        await until(lambda: len(a.messenger.outbox.entries(state=State.DELIVERED,
                                                           limit=2000)) == 1000
                    and len(b.messenger.outbox.entries(state=State.DELIVERED,
                                                       limit=2000)) == 1000)
    assert texts(b, a) == [f"a{i}" for i in range(1000)]
    assert texts(a, b) == [f"b{i}" for i in range(1000)]
    for p in (a, b):
        host = p.host
        assert isinstance(host, CountingHost)
        assert host.soon >= 1000  # the messages (and the acks) took the short path
        # every entry records its direct copy (a second one if a resend beat the ack)
        assert all(e.via == "direct" and e.attempts >= 1
                   for e in p.messenger.outbox.entries(limit=2000))


async def test_direct_lossy_link_still_exactly_once_in_order() -> None:
    net = MemoryNetwork()
    a, b = make_peer(net, LossyDirectHost), make_peer(net, LossyDirectHost)
    async with running(a, b):
        for i in range(200):
            a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text=f"m{i}"))
        await until(lambda: len(a.messenger.outbox.entries(state=State.DELIVERED,
                                                           limit=500)) == 200)
    assert texts(b, a) == [f"m{i}" for i in range(200)]


async def test_entry_is_in_the_database_when_send_returns(tmp_path: Path) -> None:
    net = MemoryNetwork()
    path = tmp_path / "a.db"
    a, b = make_peer(net, DirectMemoryHost, db=Database.open(path)), make_peer(net,
                                                                              DirectMemoryHost)
    async with running(a, b):
        entry = a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="hi"))
        # no await since send(): another connection already sees the committed entry
        other = Database.open(path)
        try:
            stored = Outbox(other).get(entry.id)
        finally:
            other.close()
        assert stored is not None and stored.raw == entry.raw
        await until(lambda: len(b.got) == 1)
    a.messenger.outbox.db.close()


async def test_direct_send_to_an_offline_peer_is_retried() -> None:
    net = MemoryNetwork()
    a, b = make_peer(net, DirectMemoryHost), make_peer(net, DirectMemoryHost)
    async with running(a, b):
        await b.host.stop()
        entry = a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="hi"))
        # the failed first copy counts as an attempt, with its error, and waits for a retry
        await until(lambda: (e := a.messenger.outbox.get(entry.id)) is not None
                    and e.attempts >= 1 and e.error != "" and e.state is State.QUEUED)
        await b.host.start()
        await until(lambda: len(b.got) == 1)
        await until(lambda: a.messenger.outbox.get(entry.id).state  # type: ignore[union-attr]
                    is State.DELIVERED)
    assert texts(b, a) == ["hi"]


async def test_messages_sent_before_run_wait_for_the_send_loop() -> None:
    net = MemoryNetwork()
    a, b = make_peer(net, CountingHost), make_peer(net, CountingHost)
    await a.host.start()
    a.host.add_peer(b.host.peer_id, b.host.listen_addrs())
    entry = a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="early"))
    await asyncio.sleep(0.05)
    stored = a.messenger.outbox.get(entry.id)
    assert stored is not None and stored.attempts == 0 and stored.state is State.QUEUED
    async with running(a, b):
        await until(lambda: len(b.got) == 1)


async def test_order_survives_an_outage_with_sends_throughout() -> None:
    net = MemoryNetwork()
    a, b = make_peer(net, DirectMemoryHost), make_peer(net, DirectMemoryHost)
    async with running(a, b):
        for i in range(30):
            a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text=f"{i}"))
            if i == 10:
                await b.host.stop()
            if i == 20:
                await b.host.start()
            await asyncio.sleep(0.01)
        await until(lambda: len(b.got) == 30)
        await until(lambda: len(a.messenger.outbox.entries(state=State.DELIVERED)) == 30)
    assert texts(b, a) == [str(i) for i in range(30)]


async def test_a_failing_listener_stops_the_messenger_unacknowledged() -> None:
    """As with the receive loop: an error while handling a frame stops the messenger, and the
    message is not acknowledged (its sender keeps it and retries)."""
    net = MemoryNetwork()
    a, b = make_peer(net, DirectMemoryHost), make_peer(net, DirectMemoryHost)

    def broken(event: MessengerEvent) -> None:
        raise RuntimeError("listener bug")

    b.messenger.listeners.append(broken)
    for p in (a, b):
        await p.host.start()
    a.host.add_peer(b.host.peer_id, b.host.listen_addrs())
    b.host.add_peer(a.host.peer_id, a.host.listen_addrs())
    delivered: list[str] = []
    a.messenger.listeners.append(
        lambda e: delivered.append(e.id) if isinstance(e, MessageDelivered) else None)
    a_task = asyncio.create_task(a.messenger.run())
    try:
        with pytest.raises(ExceptionGroup) as caught:
            async with asyncio.timeout(10):
                b_task = asyncio.create_task(b.messenger.run())
                await asyncio.sleep(0)
                entry = a.messenger.send(b.identity.public,
                                         Chat(conversation="conv-0001", text="boom"))
                await b_task
        assert caught.group_contains(RuntimeError, match="listener bug")
        # the copy is recorded as sent (no ack will come), and never as delivered
        await until(lambda: a.messenger.outbox.get(entry.id).state  # type: ignore[union-attr]
                    is State.SENT)
        assert delivered == []
    finally:
        a_task.cancel()
        await asyncio.gather(a_task, return_exceptions=True)


async def test_a_direct_copy_without_ack_is_recorded_as_sent() -> None:
    """The record of a direct first copy waits for its ack a little, then is written alone."""
    net = MemoryNetwork()
    a, b = make_peer(net, DirectMemoryHost), make_peer(net, DirectMemoryHost)
    async with running(a, b):
        await asyncio.sleep(0.01)  # b's messenger has set its handler: b now ignores frames
        b.host.set_frame_handler(lambda peer, payload: None)  # type: ignore[attr-defined]
        entry = a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="hi"))
        await until(lambda: (e := a.messenger.outbox.get(entry.id)) is not None
                    and e.state is State.SENT)
        stored = a.messenger.outbox.get(entry.id)
        assert stored is not None and stored.via == "direct" and stored.attempts == 1
        assert stored.error == "" and not b.got


async def test_stopping_records_the_copies_that_left(tmp_path: Path) -> None:
    net = MemoryNetwork()
    path = tmp_path / "a.db"
    a, b = make_peer(net, DirectMemoryHost, db=Database.open(path)), make_peer(net,
                                                                              DirectMemoryHost)
    a.messenger.policy = RetryPolicy(ack_timeout=60.0)  # the record waits RECORD_SENT_AFTER
    async with running(a, b):
        await asyncio.sleep(0.01)  # b's messenger has set its handler: b now ignores frames
        b.host.set_frame_handler(lambda peer, payload: None)  # type: ignore[attr-defined]
        entry = a.messenger.send(b.identity.public, Chat(conversation="conv-0001", text="hi"))
        await until(lambda: entry.id in a.messenger._unrecorded)  # written, not recorded
    stored = a.messenger.outbox.get(entry.id)
    assert stored is not None and stored.state is State.SENT and stored.attempts == 1
    a.messenger.outbox.db.close()
