"""Factories for the API tests: a real `Node` with its `ApiServer` on port 0 and a `Client`.

`api_node(...)` runs one node (libp2p or in-memory channels) on a DHT backbone; `raw(...)` sends a
hand-made request to check the server's guards. No tests here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from dht.server import DhtNode
from node.api.server import ApiServer
from node.app import Node
from node.p2p.memory import MemoryNetwork
from node.p2p.messenger import RetryPolicy
from node.p2p.transport import Host
from p2pmarket.client import Client
from p2pmarket.identity import Identity
from p2pmarket.storage import Database

POLICY = RetryPolicy(base=0.1, cap=1.0, ack_timeout=2.0, direct_before_mailbox=3,
                     mailbox_recheck=60.0, mailbox_poll=0.5)


@dataclass
class ApiNode:
    node: Node
    api: ApiServer
    client: Client
    stop: asyncio.Event
    datadir: Path

    @property
    def peer_id(self) -> str:
        return self.node.identity.peer_id


def memory_hosts() -> Callable[[Identity], Host]:
    net = MemoryNetwork()
    return net.host


def libp2p_host(identity: Identity) -> Host:
    from node.p2p.libp2p_host.host import Libp2pHost

    return Libp2pHost(identity)


@asynccontextmanager
async def api_node(backbone: list[DhtNode], tmp: Path, *,
                   host: Callable[[Identity], Host] | None = None) -> AsyncIterator[ApiNode]:
    identity = Identity.generate()
    tmp.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - test setup
    db = Database.open(tmp / "node.db")
    node = Node(identity, db, (host or memory_hosts())(identity), datadir=tmp, policy=POLICY)
    stop = asyncio.Event()
    api = ApiServer(tmp, port=0, stop=stop)
    try:
        await node.start(dht_host="127.0.0.1", dht_port=0)
        await api.start()
    except BaseException:
        await api.stop()
        await node.close()
        db.close()
        raise
    api.attach(node)
    task = asyncio.create_task(node.run(stop, [backbone[0].address]))
    client = Client.from_datadir(tmp, timeout=30)
    try:
        async with asyncio.timeout(30):
            await node.ready.wait()
            await node.peers.publish(force=True)
        yield ApiNode(node, api, client, stop, tmp)
    finally:
        await client.close()
        await api.stop()
        stop.set()
        await task
        db.close()


async def raw(api: ApiServer, method: str, path: str, *, token: str | None = "",
              headers: dict[str, str] | None = None, data: bytes | None = None
              ) -> tuple[int, dict[str, str], Any]:
    """(status, headers, decoded JSON or text) of one hand-made request."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs.setdefault("Authorization", f"Bearer {token or api.token}")
    async with aiohttp.ClientSession() as session, session.request(
            method, api.url + path, headers=hdrs, data=data) as resp:
        body: Any = await resp.text()
        if resp.content_type.endswith("json"):
            body = await resp.json(content_type=None)
        return resp.status, dict(resp.headers), body


async def until(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls other tasks' state
            await asyncio.sleep(0.05)


async def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Await `check()` until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.1)
