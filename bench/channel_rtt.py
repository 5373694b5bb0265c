"""Message round trip over the node's channel API versus a raw libp2p stream echo.

    python bench/channel_rtt.py [--n 500] [--size 1024] [--tiny]

Two whole messengers (libp2p host, persistent outbox and inbox in SQLite files, signed and
framed messages, end-to-end acks) on loopback. A round trip is: `Messenger.send` of a chat of
`size` bytes until the sender sees the recipient's ack (`MessageDelivered`). The baseline, in the
same run and between the same two hosts, is a raw libp2p stream echo of `size` bytes
(`channel_rtt_raw.raw_echo_rtt`). Prints one JSON object:
`{"n", "size", "connect_ms", "channel": {p50_ms, p99_ms, mean_ms}, "raw": {...},
"ratio_p50", "ratio_p99"}`; the target is ratio_p50 <= 1.3.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import Size, emit, parse_sizes, ratio, sample  # noqa: E402
from bench.channel_rtt_raw import raw_echo_rtt, rtt_summary  # noqa: E402
from node.p2p.libp2p_host.host import Libp2pHost  # noqa: E402
from node.p2p.messenger import MessageDelivered, Messenger  # noqa: E402
from node.p2p.outbox import Outbox  # noqa: E402
from node.p2p.peers import PeerDirectory  # noqa: E402
from p2pmarket.identity import Identity  # noqa: E402
from p2pmarket.storage import Database  # noqa: E402
from p2pmarket.wire.messages import Chat  # noqa: E402

WARMUP = 20
SIZES = {"n": Size(500, 10, "round trips timed"), "size": Size(1024, 64, "chat bytes")}


async def run(n: int, size: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="p2pm-bench-"))
    ids = [Identity.generate(), Identity.generate()]
    hosts = [Libp2pHost(i) for i in ids]
    for h in hosts:
        await h.start()
    dbs = [Database.open(tmp / f"{i}.db") for i in range(2)]
    messengers = [Messenger(i, h, Outbox(db), PeerDirectory(i, h, None))
                  for i, h, db in zip(ids, hosts, dbs, strict=True)]
    hosts[0].add_peer(hosts[1].peer_id, hosts[1].listen_addrs())
    hosts[1].add_peer(hosts[0].peer_id, hosts[0].listen_addrs())
    started = time.perf_counter()
    await hosts[0].send(hosts[1].peer_id, b"")  # dial: TCP + Noise + yamux + first stream
    connect_ms = (time.perf_counter() - started) * 1000
    waiters: dict[str, asyncio.Future[None]] = {}

    def on_event(event: object) -> None:
        if isinstance(event, MessageDelivered) and event.id in waiters:
            waiters.pop(event.id).set_result(None)

    messengers[0].listeners.append(on_event)
    text = "x" * size

    async def round_trip() -> None:  # until the recipient's ack is back
        entry = messengers[0].send(ids[1].public, Chat(conversation="bench-0001", text=text))
        waiter = asyncio.get_running_loop().create_future()
        waiters[entry.id] = waiter
        await asyncio.wait_for(waiter, 30)

    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(m.run()) for m in messengers]
            samples = await sample(round_trip, n, warmup=WARMUP)
            raw = await raw_echo_rtt(n, size, hosts=(hosts[0], hosts[1]))
            for t in tasks:
                t.cancel()
    finally:
        for h in hosts:
            await h.stop()
        for db in dbs:
            db.close()
    channel = rtt_summary(samples)
    return {
        "n": n, "size": size, "connect_ms": round(connect_ms, 3),
        "channel": channel,
        "raw": {k: raw[k] for k in ("p50_ms", "p99_ms", "mean_ms")},
        "ratio_p50": ratio(channel["p50_ms"], raw["p50_ms"]),
        "ratio_p99": ratio(channel["p99_ms"], raw["p99_ms"]),
    }


def main() -> None:
    args = parse_sizes(__doc__, SIZES)
    emit(asyncio.run(run(args.n, args.size)))


if __name__ == "__main__":
    main()
