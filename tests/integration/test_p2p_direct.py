"""Libp2pHost's short path (`transport.DirectHost`): frames to a handler, frames sent unawaited."""

from __future__ import annotations

import asyncio
import logging

import pytest

from node.p2p.libp2p_host.host import Libp2pHost
from node.p2p.libp2p_host.runtime import RuntimeStopped
from node.p2p.transport import DirectHost, PeerUnreachable
from tests.support.p2p import HostFactory, closed_port, introduce, nothing_more, receive
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)


def collect(host: Libp2pHost) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    host.set_frame_handler(lambda peer, payload: got.append((peer, payload)))
    return got


async def test_is_a_direct_host(make_host: HostFactory) -> None:
    assert isinstance(await make_host(), DirectHost)


async def test_frames_reach_the_handler_in_order(make_host: HostFactory) -> None:
    a, b = await make_host(), await make_host()
    introduce(a, b)
    got = collect(b)
    frames = [f"frame {i}".encode() * (1 + i % 5) for i in range(500)]
    sent = [a.send_soon(b.peer_id, f) for f in frames[:250]]
    await asyncio.gather(*sent, *(a.send(b.peer_id, f) for f in frames[250:]))
    await until(lambda: len(got) == len(frames))
    assert got == [(a.peer_id, f) for f in frames]
    # back to incoming() without a handler
    b.set_frame_handler(None)
    await a.send(b.peer_id, b"queued")
    assert await receive(b, 1) == [(a.peer_id, b"queued")]
    assert got[-1] == (a.peer_id, frames[-1])


async def test_send_soon_from_a_handler_answers_in_order(make_host: HostFactory) -> None:
    """A handler runs inside libp2p's trio task; what it queues leaves from there, in order."""
    a, b = await make_host(), await make_host()
    introduce(a, b)
    futures: list[asyncio.Future[None]] = []
    b.set_frame_handler(lambda peer, payload: futures.append(b.send_soon(peer, b"re " + payload)))
    frames = [i.to_bytes(4, "big") for i in range(300)]
    for frame in frames:
        await a.send(b.peer_id, frame)
    got = await receive(a, len(frames))
    assert got == [(b.peer_id, b"re " + f) for f in frames]
    await asyncio.gather(*futures)
    await nothing_more(a)


async def test_a_failing_handler_loses_only_its_frame(make_host: HostFactory,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    a, b = await make_host(), await make_host()
    introduce(a, b)
    got: list[bytes] = []

    def handler(peer: str, payload: bytes) -> None:
        if payload == b"bad":
            raise RuntimeError("handler bug")
        got.append(payload)

    b.set_frame_handler(handler)
    with caplog.at_level(logging.ERROR, logger="node.p2p.libp2p_host.engine"):
        for payload in (b"one", b"bad", b"two"):
            await a.send(b.peer_id, payload)
        await until(lambda: len(got) == 2)
    assert got == [b"one", b"two"]
    assert "frame handler failed" in caplog.text
    assert not b.violations  # the stream and the peer are fine


async def test_send_soon_to_an_unreachable_peer_fails_its_future(make_host: HostFactory) -> None:
    a = await make_host(dial_timeout=2.0)
    ghost = await make_host()
    a.add_peer(ghost.peer_id, [f"/ip4/127.0.0.1/tcp/{closed_port()}"])
    with pytest.raises(PeerUnreachable):
        await a.send_soon(ghost.peer_id, b"hello?")


async def test_send_soon_on_a_stopped_host_raises(make_host: HostFactory) -> None:
    a, b = await make_host(), await make_host()
    introduce(a, b)
    await a.stop()
    with pytest.raises(RuntimeStopped):
        a.send_soon(b.peer_id, b"x")
