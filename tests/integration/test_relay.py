"""Circuit relay v2 on loopback: a peer that publishes only its relayed address stays reachable.

Three libp2p hosts: a relay hop (what a bootstrap node runs), Alice, and Bob "behind NAT" (his
peer record carries only `/p2p/RELAY/p2p-circuit`). Messages, acks and answers ride the relayed
connection; when the relay goes away, they fall back to the DHT mailbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from dht.server import DhtNode
from dht.testing import dht_network
from node.bootstrap import BootstrapNode
from node.p2p.libp2p_host.adapt import parse_addrs
from node.p2p.libp2p_host.host import Libp2pHost, RelayHopLimits
from node.p2p.libp2p_host.runtime import TrioRuntime
from node.p2p.messenger import MessageReceived, Messenger, RetryPolicy
from node.p2p.outbox import Outbox, State
from node.p2p.peers import PeerDirectory
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.messages import Chat, Message
from tests.support.waiting import until

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]
POLICY = RetryPolicy(base=0.05, cap=0.5, ack_timeout=2.0, direct_before_mailbox=2,
                     mailbox_recheck=30.0, mailbox_poll=0.3)


class Peer:
    def __init__(self, host: Libp2pHost, dht: DhtNode) -> None:
        self.host, self.identity = host, host.identity
        self.peers = PeerDirectory(self.identity, host, dht)
        self.messenger = Messenger(self.identity, host, Outbox(Database.open(":memory:")),
                                   self.peers, dht, policy=POLICY)
        self.got: list[Message] = []
        self.messenger.listeners.append(
            lambda e: self.got.append(e.message) if isinstance(e, MessageReceived) else None)

    def texts(self) -> list[str]:
        return [m.body.text for m in self.got if isinstance(m.body, Chat)]


@pytest.fixture
async def hosts() -> AsyncIterator[list[Libp2pHost]]:
    started: list[Libp2pHost] = []
    try:
        yield started
    finally:
        for host in started:
            await host.stop()
    assert not TrioRuntime.for_running_loop().running


async def start(hosts: list[Libp2pHost], **kwargs: object) -> Libp2pHost:
    host = Libp2pHost(Identity.generate(), "127.0.0.1", **kwargs)  # type: ignore[arg-type]
    await host.start()
    hosts.append(host)
    return host


def relay_addr(relay: Libp2pHost) -> str:
    return f"{relay.listen_addrs()[0]}/p2p/{relay.peer_id}"


def relayed_connection(a: Libp2pHost, b: Libp2pHost) -> bool:
    """True when a's only connection to b is a relayed one (test-only look at libp2p)."""
    from libp2p.peer.id import ID
    _, ihost = a._trio_side()
    conns = ihost.get_network().get_connections(ID.from_base58(b.peer_id))
    return bool(conns) and all("/p2p-circuit" in " ".join(map(str, c.get_transport_addresses()))
                               for c in conns)


def test_circuit_addresses_parse() -> None:
    me, relay = Identity.generate().peer_id, Identity.generate().peer_id
    base = f"/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit"
    for text in (base, f"{base}/p2p/{me}"):
        [addr] = parse_addrs(me, [text])
        assert str(addr) == f"{base}/p2p/{me}"
    with pytest.raises(ValueError):
        parse_addrs(me, [f"{base}/p2p/{relay}"])  # leads to someone else
    with pytest.raises(ValueError):
        parse_addrs(me, ["/ip4/127.0.0.1/tcp/4001/p2p-circuit"])  # no relay id


async def test_messages_over_a_relay_then_mailbox_when_it_stops(
        hosts: list[Libp2pHost]) -> None:
    async with dht_network(12) as dht:
        relay = await start(hosts, relay_hop=RelayHopLimits(max_reservations=4))
        alice = Peer(await start(hosts), dht[1])
        bob = Peer(await start(hosts, relay_via=(relay_addr(relay),)), dht[2])
        [bob_addr] = bob.host.advertised_addrs()
        assert bob_addr == f"{relay_addr(relay)}/p2p-circuit"  # NAT: nothing direct published
        assert await bob.peers.publish() and await alice.peers.publish()

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(alice.messenger.run()), tg.create_task(bob.messenger.run())]
            ids = [alice.messenger.send(bob.identity.public,
                                        Chat(conversation="conv-relay", text=f"m{i}")).id
                   for i in range(50)]
            await until(lambda: len(bob.got) >= 50)
            await until(lambda: all(alice.messenger.outbox.get(i).state  # type: ignore
                                    is State.DELIVERED for i in ids))
            assert all(alice.messenger.outbox.get(i).via == "direct" for i in ids)  # type: ignore
            assert relayed_connection(alice.host, bob.host)
            # Bob answers over the same relayed connection
            answer = bob.messenger.send(alice.identity.public,
                                        Chat(conversation="conv-relay", text="got them"))
            await until(lambda: alice.texts() == ["got them"])
            await until(lambda: bob.messenger.outbox.get(answer.id).state  # type: ignore
                        is State.DELIVERED)

            # the relay goes away: Bob's relayed address is dead, mail takes over
            await relay.stop()
            await until(lambda: bob.host.advertised_addrs() == [])
            late = [alice.messenger.send(bob.identity.public,
                                         Chat(conversation="conv-relay", text=f"late{i}")).id
                    for i in range(5)]
            await until(lambda: len(bob.got) >= 55, timeout=60)
            await until(lambda: all(alice.messenger.outbox.get(i).state  # type: ignore
                                    is State.DELIVERED for i in late), timeout=60)
            assert {alice.messenger.outbox.get(i).via for i in late} == {"mailbox"}  # type: ignore
            for task in tasks:
                task.cancel()
    assert bob.texts() == [f"m{i}" for i in range(50)] + [f"late{i}" for i in range(5)]


async def test_relay_refuses_reservations_beyond_its_limit(hosts: list[Libp2pHost]) -> None:
    relay = await start(hosts, relay_hop=RelayHopLimits(max_reservations=1))
    first = await start(hosts, relay_via=(relay_addr(relay),))
    second = await start(hosts, relay_via=(relay_addr(relay),))
    assert first.advertised_addrs() == [f"{relay_addr(relay)}/p2p-circuit"]
    assert second.advertised_addrs() == []  # refused: it publishes nothing it cannot serve
    # a host that is no relay refuses too (it has no hop service at all)
    plain = await start(hosts)
    third = await start(hosts, relay_via=(relay_addr(plain),))
    assert third.advertised_addrs() == []


async def test_bootstrap_node_is_a_relay(tmp_path: Path, hosts: list[Libp2pHost]) -> None:
    db = Database.open(tmp_path / "boot.db")
    boot = BootstrapNode(Identity.generate(), db, tmp_path)
    try:
        await boot.start(dht_host="127.0.0.1", dht_port=0, metrics_port=0,
                         relay=("127.0.0.1", 0))
        assert boot.relay is not None and boot.metrics_address is not None
        via = relay_addr(boot.relay)
        behind_nat = await start(hosts, relay_via=(via,))
        caller = await start(hosts)
        assert behind_nat.advertised_addrs() == [f"{via}/p2p-circuit"]
        caller.add_peer(behind_nat.peer_id, behind_nat.advertised_addrs())
        await caller.send(behind_nat.peer_id, b"through the bootstrap node")
        async for peer_id, payload in behind_nat.incoming():
            assert (peer_id, payload) == (caller.peer_id, b"through the bootstrap node")
            break
        host, port = boot.metrics_address
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}:{port}/healthz") as resp:
                health = await resp.json()
            async with http.get(f"http://{host}:{port}/metrics") as resp:
                metrics = await resp.text()
        assert health["relay"] == [via] and health["relay_reservations"] == 1
        assert "p2pmarket_relay_reservations 1" in metrics
    finally:
        await boot.close()
        db.close()
