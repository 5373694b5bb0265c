"""The API harness: a real `Node` with its `ApiServer` on port 0 and a `Client`.

`api_node(...)` runs one node (libp2p or in-memory channels) on a DHT backbone; `served(...)` puts
an escrow-world party behind an API; `raw(...)` sends a hand-made request to check the guards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from dht.server import DhtNode
from node.api.server import ApiServer
from node.app import Node
from node.p2p.memory import MemoryNetwork
from node.p2p.messenger import RetryPolicy
from node.p2p.transport import Host
from p2pmarket.client import Client
from p2pmarket.identity import Identity
from tests.support.nodes import libp2p_host, make_node

if TYPE_CHECKING:
    from tests.support.escrow_world import Party

__all__ = ["LISTING", "POLICY", "ApiNode", "api_node", "libp2p_host", "memory_hosts", "raw",
           "served"]

POLICY = RetryPolicy(base=0.1, cap=1.0, ack_timeout=2.0, direct_before_mailbox=3,
                     mailbox_recheck=60.0, mailbox_poll=0.5)
# a listing as `POST /listings` takes it
LISTING = {"title": "Vintage road bike", "price": {"amount": 25_000, "currency": "EUR"},
           "category": "sports/bikes", "condition": "good", "quantity": 2,
           "location": {"country": "DE", "geohash": "u33db"}, "id": "vintage-bike-1"}


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


@asynccontextmanager
async def api_node(backbone: list[DhtNode], tmp: Path, *,
                   host: Callable[[Identity], Host] | None = None) -> AsyncIterator[ApiNode]:
    node = make_node(tmp, policy=POLICY, host=host or memory_hosts())
    db = node.db
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


@asynccontextmanager
async def served(party: Party) -> AsyncIterator[tuple[ApiServer, Client]]:
    """The party's node behind its own API server, and a client of it."""
    api = ApiServer(party.datadir, port=0, stop=asyncio.Event())
    await api.start()
    api.attach(party.node)
    client = Client.from_datadir(party.datadir, timeout=30)
    try:
        yield api, client
    finally:
        await client.close()
        await api.stop()


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
