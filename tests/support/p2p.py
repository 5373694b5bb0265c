"""P2P test helpers: messenger peers over the in-memory host, and libp2p hosts on loopback.

`make_peer`/`running` wire messengers over a `MemoryNetwork`; `introduce`/`receive` drive started
`Libp2pHost`s (the `make_host` fixture in tests/conftest.py starts and stops them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from node.p2p.memory import MemoryHost, MemoryNetwork
from node.p2p.messenger import MessageReceived, Messenger, RetryPolicy
from node.p2p.outbox import Outbox
from node.p2p.peers import PeerDirectory
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.messages import Chat, Message
from tests.support.processes import free_tcp_port

if TYPE_CHECKING:
    from node.p2p.libp2p_host.host import Libp2pHost

FAST = RetryPolicy(base=0.02, cap=0.2, ack_timeout=0.3, direct_before_mailbox=1000)
HostFactory = Callable[..., Awaitable["Libp2pHost"]]


# -- messengers over the in-memory host -----------------------------------------------------------

@dataclass
class Peer:
    identity: Identity
    host: MemoryHost
    messenger: Messenger
    got: list[Message]


def make_peer(net: MemoryNetwork, host_cls: type[MemoryHost] = MemoryHost,
              db: Database | None = None, identity: Identity | None = None) -> Peer:
    identity = identity or Identity.generate()
    host = host_cls(net, identity)
    net.hosts[host.peer_id] = host
    outbox = Outbox(db or Database.open(":memory:"))
    messenger = Messenger(identity, host, outbox, PeerDirectory(identity, host, None),
                          policy=FAST)
    got: list[Message] = []
    messenger.listeners.append(
        lambda e: got.append(e.message) if isinstance(e, MessageReceived) else None)
    return Peer(identity, host, messenger, got)


@asynccontextmanager
async def running(*peers: Peer) -> AsyncIterator[None]:
    for p in peers:
        await p.host.start()
        for q in peers:
            if q is not p:
                p.host.add_peer(q.host.peer_id, q.host.listen_addrs())
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.messenger.run()) for p in peers]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()


def texts(p: Peer, sender: Peer) -> list[str]:
    return [m.body.text for m in p.got if m.sender == sender.identity.public
            and isinstance(m.body, Chat)]


# -- libp2p hosts on loopback ---------------------------------------------------------------------

def introduce(*hosts: Libp2pHost) -> None:
    for a in hosts:
        for b in hosts:
            if a is not b:
                a.add_peer(b.peer_id, b.listen_addrs())


async def receive(host: Libp2pHost, n: int, timeout: float = 30.0) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []

    async def take() -> None:
        async for item in host.incoming():
            got.append(item)
            if len(got) == n:
                return

    await asyncio.wait_for(take(), timeout)
    return got


async def nothing_more(host: Libp2pHost, wait: float = 0.3) -> None:
    """No further frame arrives (so none was duplicated)."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(aiter(host.incoming())), wait)


def closed_port() -> int:
    """A TCP port nobody listens on (a dial to it is refused)."""
    return free_tcp_port()
