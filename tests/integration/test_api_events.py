"""`/api/v1/events`: live events, monotonic ids, `Last-Event-ID` resume, reset, filters, stop."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path

import aiohttp
import pytest

from node.api.hub import EventHub
from node.api.server import ApiServer
from p2pmarket.api.events import OrderChangedEvent, PeerEvent
from p2pmarket.client import Client, Event
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)
PEER = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"


async def take(client: Client, n: int, **kw: object) -> list[Event]:
    got: list[Event] = []
    async with asyncio.timeout(20), aclosing(client.events(**kw)) as events:  # type: ignore[arg-type]
        async for event in events:
            got.append(event)
            if len(got) == n:
                break
    return got


async def reading(api: ApiServer, client: Client, n: int, **kw: object
                  ) -> asyncio.Task[list[Event]]:
    """A task taking `n` events, once its stream is subscribed."""
    before = len(api.hub._subs)
    task = asyncio.create_task(take(client, n, **kw))
    await until(lambda: len(api.hub._subs) > before)
    return task


def publish(hub: EventHub, n: int, kind: str = "peer.connected") -> list[int]:
    return [hub.publish(kind, PeerEvent(peer=PEER)).id for _ in range(n)]


async def test_live_events_and_resume_by_id(tmp_path: Path) -> None:
    async with ApiServer(tmp_path, port=0) as api, Client(api.url, api.token) as client:
        reader = await reading(api, client, 3)
        first = publish(api.hub, 3)
        live = await reader
        assert [e.id for e in live] == first and first == sorted(first)
        assert live[0].type == "peer.connected" and live[0].data == {"peer": PEER}
        assert isinstance(live[0].as_struct(), PeerEvent)
        await until(lambda: not api.hub._subs)
        missed = publish(api.hub, 2, "peer.disconnected")
        resumed = await take(client, 2, last_event_id=live[-1].id)
        assert [e.id for e in resumed] == missed
        assert [e.type for e in resumed] == ["peer.disconnected"] * 2
        # the header does the same (what EventSource sends on reconnecting)
        async with aiohttp.ClientSession() as session, session.get(
                f"{api.url}/api/v1/events", headers={
                    "Authorization": f"Bearer {api.token}", "Last-Event-ID": str(first[0])
                }) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            assert not [h for h in resp.headers if h.lower().startswith("access-control")]
            text = ""
            async with asyncio.timeout(10):
                while text.count("\r\n\r\n") < 4:
                    text += (await resp.content.readany()).decode()
        assert f"id: {first[1]}\r\nevent: peer.connected\r\ndata: " in text
        assert f"id: {missed[1]}\r\nevent: peer.disconnected\r\n" in text


async def test_too_old_id_gives_a_reset_and_filters_apply(tmp_path: Path) -> None:
    async with ApiServer(tmp_path, port=0) as api, Client(api.url, api.token) as client:
        api.hub._buffer = type(api.hub._buffer)(maxlen=5)
        ids = publish(api.hub, 8)
        reset = await take(client, 1, last_event_id=ids[0])
        assert reset[0].type == "events.reset" and reset[0].id == ids[-1]
        assert reset[0].data == {"oldest": ids[3]}
        from_another_run = await take(client, 1, last_event_id=ids[-1] + 1000)
        assert from_another_run[0].type == "events.reset"
        reader = await reading(api, client, 1, types=["order.changed"])
        publish(api.hub, 3)  # filtered out
        wanted = api.hub.publish("order.changed", _order_changed()).id
        assert [e.id for e in await reader] == [wanted]


def _order_changed() -> OrderChangedEvent:
    return OrderChangedEvent(order="order-0001", state="paid", kind="paid", by="seller")


async def test_ids_grow_across_restarts_and_stop_ends_streams(tmp_path: Path) -> None:
    async with ApiServer(tmp_path, port=0) as api:
        before = publish(api.hub, 1)[0]
    api = ApiServer(tmp_path, port=0)
    await api.start()
    assert publish(api.hub, 1)[0] > before
    async with Client(api.url, api.token) as client:
        events: list[Event] = []

        async def read() -> None:
            async for event in client.events():
                events.append(event)

        reader = asyncio.create_task(read())
        await until(lambda: api.hub._subs)
        publish(api.hub, 1)
        await until(lambda: len(events) == 1)
        await api.stop()
        await asyncio.wait_for(reader, 10)  # the stream ended with the server


async def test_bad_event_requests(tmp_path: Path) -> None:
    async with ApiServer(tmp_path, port=0) as api, aiohttp.ClientSession() as session:
        auth = {"Authorization": f"Bearer {api.token}"}
        async with session.get(f"{api.url}/api/v1/events?type=nope", headers=auth) as resp:
            assert resp.status == 422
        async with session.get(f"{api.url}/api/v1/events",
                               headers={**auth, "Last-Event-ID": "x"}) as resp:
            assert resp.status == 422
        async with session.get(f"{api.url}/api/v1/events") as resp:
            assert resp.status == 401
