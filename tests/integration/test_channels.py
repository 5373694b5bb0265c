"""Whole nodes (DHT + libp2p host + messenger) on loopback: reliable, ordered, offline-proof."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dht.server import DhtNode
from dht.testing import dht_network
from node.app import Node
from node.p2p.libp2p_host.host import Libp2pHost
from node.p2p.messenger import MessageReceived, RetryPolicy
from node.p2p.outbox import State
from p2pmarket.identity import Identity
from p2pmarket.wire.messages import Chat, Message, sign_message
from tests.support.nodes import make_node
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)
POLICY = RetryPolicy(base=0.1, cap=1.0, ack_timeout=2.0, direct_before_mailbox=2,
                     mailbox_recheck=60.0, mailbox_poll=0.5)


@dataclass
class Running:
    node: Node
    stop: asyncio.Event
    task: asyncio.Task[None]
    got: list[Message] = field(default_factory=list)

    @property
    def public(self) -> bytes:
        return self.node.identity.public


@asynccontextmanager
async def full_node(tg: asyncio.TaskGroup, backbone: list[DhtNode], tmp: Path,
                    identity: Identity | None = None) -> AsyncIterator[Running]:
    node = make_node(tmp, policy=POLICY, identity=identity)
    db = node.db
    await node.start(dht_host="127.0.0.1", dht_port=0)
    stop = asyncio.Event()
    running = Running(node, stop, tg.create_task(node.run(stop, [backbone[0].address])))
    node.messenger.listeners.append(
        lambda e: running.got.append(e.message) if isinstance(e, MessageReceived) else None)
    await node.ready.wait()
    await node.peers.publish(force=True)
    try:
        yield running
    finally:
        stop.set()
        await running.task
        db.close()


def chats(r: Running, sender: Running) -> list[str]:
    return [m.body.text for m in r.got
            if m.sender == sender.public and isinstance(m.body, Chat)]


async def test_two_nodes_thousand_each_way(tmp_path: Path) -> None:
    async with dht_network(6) as backbone, asyncio.TaskGroup() as tg:
        async with full_node(tg, backbone, tmp_path / "a") as a, \
                full_node(tg, backbone, tmp_path / "b") as b:
            for i in range(1000):
                a.node.messenger.send(b.public, Chat(conversation="conv-0001", text=f"a{i}"))
                b.node.messenger.send(a.public, Chat(conversation="conv-0001", text=f"b{i}"))
            await until(lambda: len(a.got) == 1000 and len(b.got) == 1000, timeout=90)
            await until(lambda: len(a.node.outbox.entries(state=State.DELIVERED,
                                                          limit=2000)) == 1000)
            assert chats(b, a) == [f"a{i}" for i in range(1000)]
            assert chats(a, b) == [f"b{i}" for i in range(1000)]


async def test_three_nodes(tmp_path: Path) -> None:
    async with dht_network(6) as backbone, asyncio.TaskGroup() as tg:
        async with full_node(tg, backbone, tmp_path / "a") as a, \
                full_node(tg, backbone, tmp_path / "b") as b, \
                full_node(tg, backbone, tmp_path / "c") as c:
            peers = [a, b, c]
            for p in peers:
                for q in peers:
                    if p is not q:
                        for i in range(1000):
                            p.node.messenger.send(q.public,
                                                  Chat(conversation="conv-0001", text=str(i)))
            await until(lambda: all(len(p.got) == 2000 for p in peers), timeout=100)
            for p in peers:
                for q in peers:
                    if p is not q:
                        assert chats(p, q) == [str(i) for i in range(1000)]


async def test_offline_recipient_gets_everything_from_the_mailbox(tmp_path: Path) -> None:
    async with dht_network(8) as backbone, asyncio.TaskGroup() as tg:
        bob_id = Identity.generate()
        async with full_node(tg, backbone, tmp_path / "a") as alice:
            async with full_node(tg, backbone, tmp_path / "b", bob_id):
                pass  # Bob ran once: his peer record is in the DHT; now he is offline
            ids = [alice.node.messenger.send(
                bob_id.public, Chat(conversation="conv-0001", text=f"m{i}")).id
                for i in range(30)]
            await until(lambda: all(alice.node.outbox.get(i).via == "mailbox"  # type: ignore
                                    for i in ids), timeout=60)
            async with full_node(tg, backbone, tmp_path / "b", bob_id) as bob:
                await until(lambda: len(bob.got) == 30, timeout=60)
                await until(lambda: all(alice.node.outbox.get(i).state  # type: ignore
                                        is State.DELIVERED for i in ids), timeout=60)
            assert chats(bob, alice) == [f"m{i}" for i in range(30)]


async def test_bad_peers_are_refused_and_others_still_served(tmp_path: Path) -> None:
    async with dht_network(6) as backbone, asyncio.TaskGroup() as tg:
        async with full_node(tg, backbone, tmp_path / "a") as a, \
                full_node(tg, backbone, tmp_path / "b") as b, \
                full_node(tg, backbone, tmp_path / "m") as mallory:
            host_b, host_m = b.node.host, mallory.node.host
            assert isinstance(host_m, Libp2pHost)
            genuine = a.node.messenger.send(b.public, Chat(conversation="conv-0001", text="hi"))
            await until(lambda: len(b.got) == 1)
            assert await mallory.node.peers.resolve(b.public) is not None
            # oversized announcement and garbage framing on raw streams
            await host_m._send_raw(host_b.peer_id, (10**8).to_bytes(4, "big") + b"x" * 10)
            await host_m._send_raw(host_b.peer_id, b"\xff\xff\xff\xff garbage")
            # a frame that is not a message at all
            await host_m.send(host_b.peer_id, b"not a message")
            # Alice's genuine bytes replayed by Mallory: valid signature, wrong peer
            await host_m.send(host_b.peer_id, genuine.raw)
            # Mallory's own message addressed to Alice, sent to Bob
            _, other = sign_message(mallory.node.identity, a.public,
                                    Chat(conversation="conv-0001", text="x"), seq=1)
            await host_m.send(host_b.peer_id, other)
            # Alice's own retry of the same message id: acknowledged, not delivered twice
            await a.node.host.send(host_b.peer_id, genuine.raw)
            await until(lambda: b.node.messenger.scores[mallory.public] >= 3, timeout=30)
            a.node.messenger.send(b.public, Chat(conversation="conv-0001", text="still here"))
            await until(lambda: len(b.got) == 2)
            assert [m.body.text for m in b.got] == ["hi", "still here"]  # type: ignore
