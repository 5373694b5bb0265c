"""Offline delivery through the DHT mailbox: sealed mail, fetched, acknowledged, tombstoned."""

from __future__ import annotations

import asyncio

import pytest

from dht.server import DhtNode
from dht.testing import dht_network
from node.p2p.memory import MemoryHost, MemoryNetwork
from node.p2p.messenger import MessageReceived, Messenger, RetryPolicy
from node.p2p.outbox import Outbox, State
from node.p2p.peers import PeerDirectory
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Mail, Tombstone
from p2pmarket.wire.dhtkeys import mailbox_key
from p2pmarket.wire.messages import Chat, Message
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(90)
POLICY = RetryPolicy(base=0.05, cap=0.5, ack_timeout=0.5, direct_before_mailbox=1,
                     mailbox_recheck=30.0, mailbox_poll=0.3)


def messenger(net: MemoryNetwork, dht: DhtNode) -> tuple[Messenger, list[Message]]:
    identity = Identity.generate()
    host = MemoryHost(net, identity)
    net.hosts[host.peer_id] = host
    m = Messenger(identity, host, Outbox(Database.open(":memory:")),
                  PeerDirectory(identity, host, dht), dht, policy=POLICY)
    got: list[Message] = []
    m.listeners.append(lambda e: got.append(e.message) if isinstance(e, MessageReceived)
                       else None)
    return m, got


async def test_recipient_offline_then_started_gets_everything() -> None:
    async with dht_network(20) as dht:
        net = MemoryNetwork()
        alice, _ = messenger(net, dht[1])
        bob, bob_got = messenger(net, dht[2])
        # Bob ran once before: his peer record (addresses + encryption key) is in the DHT
        await bob.host.start()
        assert await bob.peers.publish()
        await bob.host.stop()
        await alice.host.start()
        assert await alice.peers.publish()

        async with asyncio.TaskGroup() as tg:
            alice_task = tg.create_task(alice.run())
            ids = [alice.send(bob.identity.public,
                              Chat(conversation="conv-0001", text=f"offline {i}")).id
                   for i in range(40)]
            await until(lambda: all(
                (e := alice.outbox.get(i)) is not None and e.via == "mailbox"
                and e.state is State.SENT for i in ids))
            mail = await dht[7].get_all(mailbox_key(bob.identity.public), max_pages=8)
            assert len(mail) == 40 and all(isinstance(r.body, Mail) for r in mail)
            assert all(b"offline" not in r.raw for r in mail)  # sealed: no plaintext in the DHT

            await bob.host.start()
            bob_task = tg.create_task(bob.run())
            await until(lambda: len(bob_got) == 40)
            await until(lambda: all(alice.outbox.get(i).state is State.DELIVERED  # type: ignore
                                    for i in ids))
            # delivered mail is replaced by the sender's tombstones
            await until(lambda: len(alice.outbox.entries(state=State.DELIVERED)) == 40)
            await asyncio.sleep(0.5)
            left = await dht[9].get_all(mailbox_key(bob.identity.public), max_pages=8)
            alice_task.cancel()
            bob_task.cancel()
    assert [m.body.text for m in bob_got] == [f"offline {i}" for i in range(40)]  # type: ignore
    assert all(isinstance(r.body, Tombstone) for r in left) and len(left) == 40
