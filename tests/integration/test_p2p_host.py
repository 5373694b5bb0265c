"""Libp2pHost on loopback: libp2p in trio guest mode, driven from asyncio, several hosts a loop."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from node.p2p.framing import MAX_FRAME, encode_frame
from node.p2p.libp2p_host import engine as host_engine
from node.p2p.libp2p_host.host import Libp2pHost
from node.p2p.libp2p_host.runtime import RuntimeStopped, TrioRuntime
from node.p2p.transport import P2PError, PeerUnreachable, RemoteError, RequestTimeout
from p2pmarket.identity import Identity
from tests.support.p2p import HostFactory, closed_port, introduce, nothing_more, receive
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)

ECHO = "/p2pmarket/test-echo/1.0.0"


# -- identity and addresses -----------------------------------------------------------------------

async def test_peer_id_is_the_identity_peer_id(make_host: HostFactory) -> None:
    identity = Identity.generate()
    a = await make_host(Identity.from_seed(identity.seed()))  # start() checks libp2p's derivation
    b = await make_host()
    assert a.peer_id == identity.peer_id and a.peer_id.startswith("12D3KooW")
    [addr] = a.listen_addrs()
    assert addr.startswith("/ip4/127.0.0.1/tcp/") and int(addr.rsplit("/", 1)[1]) > 0
    introduce(a, b)
    await a.send(b.peer_id, b"who am i")
    # the sender as authenticated by Noise, not as claimed by the payload
    assert await receive(b, 1) == [(identity.peer_id, b"who am i")]
    assert a.connected_peers() == [b.peer_id]
    assert b.connected_peers() == [a.peer_id]


# -- messages -------------------------------------------------------------------------------------

async def test_two_hosts_thousand_frames_each_way_in_order(make_host: HostFactory) -> None:
    a, b = await make_host(), await make_host()
    introduce(a, b)
    n = 1000
    frames = [f"frame {i}".encode() * (1 + i % 7) for i in range(n)]

    async def one_by_one(src: Libp2pHost, dst: Libp2pHost) -> None:
        for frame in frames:
            await src.send(dst.peer_id, frame)

    async def all_at_once(src: Libp2pHost, dst: Libp2pHost) -> None:
        # concurrent sends to one peer keep call order and never interleave
        await asyncio.gather(*(src.send(dst.peer_id, frame) for frame in frames))

    got_a, got_b, _, _ = await asyncio.gather(receive(a, n), receive(b, n),
                                              one_by_one(a, b), all_at_once(b, a))
    assert got_b == [(a.peer_id, f) for f in frames]
    assert got_a == [(b.peer_id, f) for f in frames]
    await nothing_more(a)
    await nothing_more(b)


@pytest.mark.timeout(120)  # 6,000 frames: about 5 s alone, 20+ s on a loaded 2-core machine
async def test_three_hosts_thousand_frames_each_way(make_host: HostFactory) -> None:
    hosts = [await make_host() for _ in range(3)]
    introduce(*hosts)
    n = 1000

    async def send_all(src: Libp2pHost) -> None:
        for i in range(n):
            for dst in hosts:
                if dst is not src:
                    await src.send(dst.peer_id, f"{src.peer_id} {i}".encode())

    results = await asyncio.gather(*(receive(h, 2 * n, 100.0) for h in hosts),
                                   *(send_all(h) for h in hosts))
    for host, got in zip(hosts, results[:3], strict=True):
        for src in hosts:
            if src is not host:
                from_src = [payload for peer, payload in got if peer == src.peer_id]
                assert from_src == [f"{src.peer_id} {i}".encode() for i in range(n)]
        await nothing_more(host)


async def test_slow_consumer_gets_backpressure_not_loss(make_host: HostFactory) -> None:
    a, b = await make_host(), await make_host(inbox_size=8)
    introduce(a, b)
    frames = [i.to_bytes(4, "big") for i in range(300)]
    sending = asyncio.gather(*(a.send(b.peer_id, f) for f in frames))
    await asyncio.sleep(1.0)  # nobody reads b meanwhile
    assert b._inbox.qsize() <= 8
    got = await receive(b, len(frames))
    await sending
    assert [payload for _, payload in got] == frames


async def test_send_reopens_after_the_peer_restarted(make_host: HostFactory) -> None:
    identity = Identity.generate()
    a, b = await make_host(), await make_host(identity)
    introduce(a, b)
    await a.send(b.peer_id, b"before")
    assert await receive(b, 1) == [(a.peer_id, b"before")]
    port = int(b.listen_addrs()[0].rsplit("/", 1)[1])
    await b.stop()
    b2 = await make_host(identity, port=port)
    await until(lambda: b.peer_id not in a.connected_peers())
    await a.send(b2.peer_id, b"after")
    assert await receive(b2, 1) == [(a.peer_id, b"after")]


async def test_disconnect_then_send_redials(make_host: HostFactory) -> None:
    a, b = await make_host(), await make_host()
    introduce(a, b)
    await a.send(b.peer_id, b"one")
    await receive(b, 1)
    await a.disconnect(b.peer_id)
    assert a.connected_peers() == []
    await until(lambda: b.connected_peers() == [])
    await a.send(b.peer_id, b"two")
    assert await receive(b, 1) == [(a.peer_id, b"two")]


async def test_idle_message_stream_is_closed_and_reopened(make_host: HostFactory,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_engine, "IDLE_WRITER_SECONDS", 0.2)
    a, b = await make_host(), await make_host()
    introduce(a, b)
    await a.send(b.peer_id, b"one")
    await receive(b, 1)
    engine = a._engine
    assert engine is not None
    await until(lambda: not engine._outbound)  # the writer closed the stream and left
    await a.send(b.peer_id, b"two")
    assert await receive(b, 1) == [(a.peer_id, b"two")]
    assert not b.violations


# -- misbehaving peers ----------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "reason"), [
    ((MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 100, "frame too large"),
    (b"\xde\xad\xbe\xef garbage, not a frame", "frame too large"),
    (encode_frame(b"y" * 100)[:40], "truncated frame"),
], ids=["oversized-length", "garbage", "truncated"])
async def test_bad_framing_is_reset_and_counted(make_host: HostFactory, raw: bytes,
                                                reason: str) -> None:
    seen: list[tuple[str, str]] = []
    victim = await make_host(on_violation=lambda peer, why: seen.append((peer, why)))
    bad, good = await make_host(), await make_host()
    introduce(victim, bad, good)
    await bad.send(victim.peer_id, b"a fine frame first")
    assert await receive(victim, 1) == [(bad.peer_id, b"a fine frame first")]

    await bad._send_raw(victim.peer_id, raw)
    await until(lambda: victim.violations[bad.peer_id] == 1)
    assert seen == [(bad.peer_id, reason)]
    assert victim.violations[good.peer_id] == 0

    # the victim still talks to everyone, the bad peer's other stream included
    await good.send(victim.peer_id, b"hello from good")
    await victim.send(good.peer_id, b"hello back")
    assert await receive(victim, 1) == [(good.peer_id, b"hello from good")]
    assert await receive(good, 1) == [(victim.peer_id, b"hello back")]
    await bad.send(victim.peer_id, b"still framed")
    assert await receive(victim, 1) == [(bad.peer_id, b"still framed")]
    await nothing_more(victim)


async def test_frame_rate_over_limit_is_a_violation(make_host: HostFactory) -> None:
    victim = await make_host(frame_rate=20.0, frame_burst=30)
    flood = await make_host()
    introduce(victim, flood)
    results = await asyncio.gather(*(flood.send(victim.peer_id, b"x") for _ in range(200)),
                                   return_exceptions=True)
    assert all(r is None or isinstance(r, PeerUnreachable) for r in results)
    await until(lambda: victim.violations[flood.peer_id] >= 1)
    got = await receive(victim, 30)  # the burst got through; the rest was refused
    assert all(payload == b"x" for _, payload in got)
    await asyncio.sleep(0.5)  # refill
    victim_inbox = victim.incoming()
    while victim._inbox.qsize():
        await anext(victim_inbox)
    await flood.send(victim.peer_id, b"later")
    assert await receive(victim, 1) == [(flood.peer_id, b"later")]


# -- request / response ---------------------------------------------------------------------------

async def test_request_response_round_trips(make_host: HostFactory) -> None:
    a, b = await make_host(), await make_host()
    introduce(a, b)
    blob = bytes(range(256)) * (2_000_000 // 256)
    calls: list[tuple[str, bytes]] = []

    async def serve(peer: str, payload: bytes) -> bytes:
        calls.append((peer, payload))
        if payload == b"blob":
            return blob
        if payload == b"fail":
            raise ValueError("handler bug")
        return payload.upper()

    b.set_request_handler(ECHO, serve)
    assert await a.request(b.peer_id, ECHO, b"ping") == b"PING"
    assert await a.request(b.peer_id, ECHO, b"blob", max_response=3_000_000) == blob
    with pytest.raises(RemoteError):
        await a.request(b.peer_id, ECHO, b"blob", max_response=1_000_000)
    with pytest.raises(RemoteError):
        await a.request(b.peer_id, ECHO, b"fail")
    with pytest.raises(RemoteError):
        await a.request(b.peer_id, "/p2pmarket/nobody-speaks-this/1.0.0", b"?")
    assert calls[0] == (a.peer_id, b"ping")
    # a handler set after start is served too, and both directions work at once
    a.set_request_handler(ECHO, serve)
    answers = await asyncio.gather(*(x.request(y.peer_id, ECHO, f"{i}".encode())
                                     for i in range(20) for x, y in ((a, b), (b, a))))
    assert answers == [f"{i}".encode() for i in range(20) for _ in (0, 1)]


async def test_request_timeout_cancels_nothing_else(make_host: HostFactory) -> None:
    a, b = await make_host(), await make_host()
    introduce(a, b)
    release = asyncio.Event()

    async def slow(peer: str, payload: bytes) -> bytes:
        await release.wait()
        return b"late"

    b.set_request_handler(ECHO, slow)
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        await a.request(b.peer_id, ECHO, b"?", timeout=0.5)
    assert time.monotonic() - started < 3.0
    release.set()
    await a.send(b.peer_id, b"still fine")
    assert await receive(b, 1) == [(a.peer_id, b"still fine")]


async def test_unreachable_peer_fails_fast(make_host: HostFactory) -> None:
    a = await make_host()
    nobody = Identity.generate().peer_id
    with pytest.raises(PeerUnreachable):  # no address known at all
        await a.send(nobody, b"x")
    a.add_peer(nobody, [f"/ip4/127.0.0.1/tcp/{closed_port()}"])
    for attempt in (a.send(nobody, b"x"), a.request(nobody, ECHO, b"x")):
        started = time.monotonic()
        with pytest.raises(PeerUnreachable):
            await attempt
        assert time.monotonic() - started < 5.0
    with pytest.raises(ValueError):
        a.add_peer("not a peer id", [])
    with pytest.raises(ValueError):
        a.add_peer(nobody, ["/ip4/127.0.0.1/tcp/1/p2p/" + Identity.generate().peer_id])


# -- lifecycle ------------------------------------------------------------------------------------

async def test_stop_settles_everything_pending(make_host: HostFactory) -> None:
    a, b = await make_host(), await make_host()
    introduce(a, b)
    handler_cancelled = asyncio.Event()

    async def forever(peer: str, payload: bytes) -> bytes:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            handler_cancelled.set()
            raise
        return b""

    a.set_request_handler(ECHO, forever)
    b.set_request_handler(ECHO, forever)
    inbox = asyncio.create_task(receive(a, 1_000_000))
    b_waits = asyncio.create_task(b.request(a.peer_id, ECHO, b"?", timeout=30))
    a_waits = asyncio.create_task(a.request(b.peer_id, ECHO, b"?", timeout=30))
    await until(lambda: len(a.handler_tasks) == 1 and len(b.handler_tasks) == 1)

    await a.stop()
    await a.stop()  # idempotent
    assert handler_cancelled.is_set()
    assert a._pending == set() and a.handler_tasks == set()
    with pytest.raises(P2PError):
        await a_waits  # a's own pending request: settled by a's stop
    with pytest.raises(RemoteError):
        await b_waits  # b's request to a: the stream went away
    await asyncio.wait_for(inbox, 5)  # the incoming iterator ended
    with pytest.raises(RuntimeStopped):
        await a.send(b.peer_id, b"x")
    assert a.listen_addrs() == [] and a.connected_peers() == []


async def test_start_on_a_taken_port_fails_cleanly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        host = Libp2pHost(Identity.generate(), port=taken.getsockname()[1])
        with pytest.raises(P2PError):
            await host.start()
    await host.stop()  # a no-op now
    assert not TrioRuntime.for_running_loop().running
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_start_stop_twice_in_one_loop() -> None:
    identity = Identity.generate()
    for _ in range(2):
        a, b = Libp2pHost(identity), Libp2pHost(Identity.generate())
        try:
            await asyncio.gather(a.start(), b.start())
            assert TrioRuntime.for_running_loop().running
            introduce(a, b)
            await b.send(a.peer_id, b"round")
            assert await receive(a, 1) == [(b.peer_id, b"round")]
        finally:
            await asyncio.gather(a.stop(), b.stop())
        assert not TrioRuntime.for_running_loop().running
    # the same instance starts again after a stop
    try:
        await a.start()
        with pytest.raises(P2PError):
            await a.start()
    finally:
        await a.stop()
    assert asyncio.all_tasks() == {asyncio.current_task()}
