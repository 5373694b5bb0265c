"""A script's client outlives a node restart: new port, new token, same `Client` object.

`Client.from_datadir` re-reads `api.url` and `api.cookie` after a 401 or a refused connection,
and `events(reconnect=True)` resumes on the new node (which answers the old `Last-Event-ID`
with `events.reset`). A request whose connection broke after it was sent is not repeated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import TypeVar

import pytest

from p2pmarket.client import ApiError, Client, Event, NodeUnreachable
from tests.support.api import LISTING
from tests.support.processes import (
    base_env,
    free_udp_port,
    init_datadir,
    reap,
    spawn_node,
    wait_for_api,
)
from tests.support.waiting import when

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")


async def test_client_and_event_stream_carry_on_across_a_restart(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    datadir = tmp_path / "node"
    peer_id = init_datadir(datadir, env)
    port = free_udp_port()
    proc = spawn_node(datadir, port, env, "--api-port", "0")
    seen: list[Event] = []
    try:
        first_url = await asyncio.to_thread(wait_for_api, datadir, proc)
        async with Client.from_datadir(datadir) as client:
            await when(client.get_status, lambda s: s.state == "running")

            async def follow() -> None:
                async with aclosing(client.events(reconnect=True)) as stream:
                    async for event in stream:
                        seen.append(event)

            async with asyncio.TaskGroup() as tg:
                follower = tg.create_task(follow())
                await asyncio.sleep(0.5)  # the stream is open
                old_token = client.token
                await client.shutdown()
                assert await asyncio.to_thread(proc.wait, 30) == 0
                reap(proc)
                with pytest.raises(NodeUnreachable):
                    await client.get_status()  # stopped: a clear error, no hang

                proc = spawn_node(datadir, port, env, "--api-port", "0")
                while await asyncio.to_thread(wait_for_api, datadir, proc) == first_url:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                # the same client object: a POST first (refused connection, never sent: safe);
                # the new node may still be starting (503) but it is the new node answering
                made = await while_starting(lambda: client.create_listing(LISTING))
                assert made.id == LISTING["id"] and client.token != old_token
                status = await client.get_status()
                assert status.peer_id == peer_id and status.state in ("starting", "running")
                # the event stream found the new node by itself: it hears the reset (the old
                # node's last id means nothing here), then this node's own stop
                await when(lambda: types(seen), lambda t: "events.reset" in t, timeout=30)
                await client.shutdown()
                await when(lambda: types(seen), lambda t: t.count("node.stopping") == 2)
                follower.cancel()
        assert await asyncio.to_thread(proc.wait, 30) == 0
        kinds = [e.type for e in seen]
        assert kinds == ["node.stopping", "events.reset", "node.stopping"], kinds
    finally:
        reap(proc)


async def while_starting(call: Callable[[], Awaitable[T]]) -> T:
    async with asyncio.timeout(30):
        while True:
            try:
                return await call()
            except ApiError as exc:
                if exc.status != 503:
                    raise
            await asyncio.sleep(0.1)


async def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]
