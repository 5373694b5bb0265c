"""Round trip of a raw libp2p stream echo between two hosts: the baseline for channel_rtt.py.

    python bench/channel_rtt_raw.py [--n 1000] [--size 1024] [--tiny]

`raw_echo_rtt(n, size)` starts two `Libp2pHost`s (or takes a started pair), registers an echo
protocol on one, opens one stream from the other and times `n` echoes of `size` bytes: awaited
one by one from asyncio (what node code pays, guest-mode hops included) and in a loop inside trio.
Prints one JSON object when run as a script.

Keys: `n`, `size`; `connect_ms` (dial: TCP + Noise + yamux); `stream_open_ms` (new stream +
multistream-select); `p50_ms`, `p99_ms`, `mean_ms` (each echo awaited from asyncio through the
trio guest run); `trio_p50_ms`, `trio_p99_ms`, `trio_mean_ms` (the same echoes timed in trio).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402

from bench._harness import Size, emit, parse_sizes, sample, summary, to_ms  # noqa: E402
from node.p2p.libp2p_host.host import Libp2pHost  # noqa: E402
from p2pmarket.identity import Identity  # noqa: E402

ECHO = TProtocol("/p2pmarket/bench-echo/1.0.0")
WARMUP = 20
SIZES = {"n": Size(1000, 10, "echoes timed"), "size": Size(1024, 64, "bytes per echo")}


def rtt_summary(samples: list[float]) -> dict[str, float | None]:
    """p50, p99 (nearest rank) and mean of round trips given in seconds, in ms."""
    return summary(to_ms(samples), ("p50", "p99", "mean"), digits=3, nearest=True)


async def _echo_handler(stream: Any) -> None:
    try:
        while True:
            data = await stream.read(64 * 1024)
            if not data:
                break
            await stream.write(data)
    except Exception:  # the client closed or reset: the echo is over
        pass
    finally:
        with trio.move_on_after(1):
            try:
                await stream.close()
            except Exception:
                pass


async def _echo_once(stream: Any, payload: bytes) -> float:
    started = time.perf_counter()
    await stream.write(payload)
    got = 0
    while got < len(payload):
        got += len(await stream.read(len(payload) - got))
    return time.perf_counter() - started


async def _echo_loop(stream: Any, payload: bytes, n: int) -> list[float]:
    return [await _echo_once(stream, payload) for _ in range(n)]


async def raw_echo_rtt(n: int, size: int, *,
                       hosts: tuple[Libp2pHost, Libp2pHost] | None = None) -> dict[str, Any]:
    """Time `n` raw echoes of `size` bytes over one libp2p stream (client -> server -> client).

    With `hosts` (started, client first) it measures between those two; the connection setup
    figure is then only measured if they were not connected yet.
    """
    own = hosts is None
    client, server = hosts if hosts is not None else (Libp2pHost(Identity.generate()),
                                                      Libp2pHost(Identity.generate()))
    try:
        if own:
            await client.start()
            await server.start()
        runtime, client_host = client._trio_side()
        _, server_host = server._trio_side()
        server_host.set_stream_handler(ECHO, _echo_handler)
        server_id = ID.from_base58(server.peer_id)
        nursery = runtime.nursery

        async def connect() -> None:  # dial + TCP + Noise + yamux, as libp2p does it
            network = client_host.get_network()
            if not network.get_connections(server_id):
                client_host.get_peerstore().add_addrs(
                    server_id, server_host.get_transport_addrs(), 0)
                await network.dial_peer(server_id)

        pending: set[asyncio.Future[Any]] = set()
        started = time.perf_counter()
        await runtime.call(nursery, connect, pending=pending)
        connect_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        stream = await runtime.call(nursery, client_host.new_stream, server_id, [ECHO],
                                    pending=pending)
        stream_ms = (time.perf_counter() - started) * 1000
        payload = bytes(i % 251 for i in range(size))
        try:
            awaited = await sample(
                lambda: runtime.call(nursery, _echo_once, stream, payload, pending=pending),
                n, warmup=WARMUP)
            inside = await runtime.call(nursery, _echo_loop, stream, payload, n,
                                        pending=pending)
        finally:
            await runtime.call(nursery, stream.close, pending=pending)
        return {"n": n, "size": size, "connect_ms": round(connect_ms, 3),
                "stream_open_ms": round(stream_ms, 3), **rtt_summary(awaited),
                **{f"trio_{k}": v for k, v in rtt_summary(inside).items()}}
    finally:
        if own:
            await client.stop()
            await server.stop()


def main() -> None:
    args = parse_sizes(__doc__, SIZES)
    emit(asyncio.run(raw_echo_rtt(args.n, args.size)))


if __name__ == "__main__":
    main()
