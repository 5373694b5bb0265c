"""Get latency of our DHT against the stock `kademlia` package, healthy and under churn.

    python bench/dht_lookup.py --nodes N --keys K [--latency-ms L] [--kill 0.2] [--seed S]
                               [--quick | --tiny]

Builds the same network twice in one process on 127.0.0.1 (same node ids, same join order, same
keys, same publishers, same readers, same killed nodes): once with `dht.server.DhtNode`, once with
the stock `kademlia.network.Server`. Stores K records, then measures gets on the healthy network
and again right after stopping the given fraction of nodes. Prints one JSON object on stdout;
progress goes to stderr. See bench/README.md for what each key means.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kademlia.crawling import ValueSpiderCrawl  # noqa: E402
from kademlia.network import Server  # noqa: E402
from kademlia.node import Node  # noqa: E402
from kademlia.protocol import KademliaProtocol  # noqa: E402

from bench._harness import (  # noqa: E402
    GcMonitor,
    LagMonitor,
    Size,
    code_version,
    diff,
    emit,
    loadavg,
    percentile,
    progress,
    raise_nofile_limit,
    ratio,
    resolve_sizes,
    rnd,
    size_parser,
    summary,
    timed,
)
from dht.server import DhtNode  # noqa: E402
from dht.testing import make_node  # noqa: E402
from p2pmarket.identity import Identity  # noqa: E402
from p2pmarket.wire import bodies as b  # noqa: E402
from p2pmarket.wire.dhtkeys import record_key  # noqa: E402
from p2pmarket.wire.records import Record, sign_record  # noqa: E402

CONCURRENCY = 16  # gets (and puts) in flight at once
MAX_GETS = 200  # gets per phase at most
SEQUENTIAL_GETS = 50  # extra healthy gets run one at a time
GET_CAP = 60.0  # seconds one get may take before it counts as failed
JOIN_BATCH = 25  # nodes bootstrapping at once (as dht.testing.join_all)
SIZES = {"nodes": Size(1000, 12, "network size", quick=200),
         "keys": Size(1000, 8, "records stored", quick=100)}


def quiet_stock_logs() -> None:
    # kademlia warns on every dropped contact; rpcudp logs every 5 s call timeout at ERROR, which
    # would print thousands of lines in the churn phase, so it is lowered one step further.
    logging.getLogger("kademlia").setLevel(logging.ERROR)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)


# -- records -------------------------------------------------------------------------------------

def make_listing(listing_id: str, rng: random.Random) -> b.Listing:
    """A listing body like tests/unit/test_records.py `make_listing()` (copied, not imported)."""
    return b.Listing(
        id=listing_id, title=f"Road bike, {rng.randint(48, 62)} cm",
        description="Steel frame, new tyres.", price=b.Price(rng.randint(1000, 90_000), "EUR"),
        category="sports/bikes", condition="good", quantity=1, location=b.Location("DE", "u33db"),
        shipping=(b.ShippingOption("DE", 1500, 2, 5),),
        images=(b.ImageRef(rng.randbytes(32), "image/jpeg", 48_213),), tags=("bike", "steel"),
    )


@dataclass(slots=True)
class Item:
    publisher: int  # index of the node that stores it
    key: bytes
    record: Record[Any]

    @property
    def raw(self) -> bytes:
        return self.record.raw


# -- measurement ---------------------------------------------------------------------------------

@dataclass(slots=True)
class GetResult:
    ms: float
    ok: bool
    rounds: int
    rpcs: int


def udp_rcvbuf_errors() -> int | None:
    """Datagrams the kernel dropped on a full socket receive buffer (Linux, host-wide)."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return None


def summarize(results: list[GetResult], wall: float, lag: LagMonitor) -> dict[str, Any]:
    ms = [r.ms for r in results]
    n = len(results)
    return {
        **summary(ms, ("p50", "p90", "p99")),
        "rounds_mean": rnd(sum(r.rounds for r in results) / n if n else None, 3),
        "rpcs_mean": rnd(sum(r.rpcs for r in results) / n if n else None, 3),
        "success": rnd(sum(r.ok for r in results) / n if n else None, 4),
        "gets": n,
        "failed": sum(not r.ok for r in results),
        "max_ms": rnd(max(ms) if ms else None),
        "wall_s": round(wall, 2),
        "loop_lag_max_ms": round(lag.max_ms, 1),
        "loop_lag_p99_ms": rnd(percentile(lag.samples, 0.99), 1),
    }


async def bounded(jobs: list[Callable[[], Awaitable[Any]]], limit: int = CONCURRENCY) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await job()

    return await asyncio.gather(*(one(j) for j in jobs))


async def timed_get(fn: Callable[[], Awaitable[tuple[bool, int, int]]]) -> GetResult:
    ms, out, _ = await timed(fn(), GET_CAP, "get")  # a crash or the cap counts as failed
    ok, rounds, rpcs = out if out is not None else (False, 0, 0)
    return GetResult(ms, ok, rounds, rpcs)


@dataclass(slots=True)
class Plan:
    """Everything random, drawn once and shared by both networks."""

    identities: list[Identity]
    boot: list[int]  # boot[i]: index of the already-joined node node i bootstraps through
    items: list[Item]
    healthy: list[tuple[int, int]]  # (item index, reader index)
    sequential: list[tuple[int, int]]  # healthy gets run one at a time (extra measurement)
    killed: list[int]
    churn: list[tuple[int, int]]  # readers are survivors


def make_plan(n: int, k: int, kill: float, seed: int) -> Plan:
    rng = random.Random(seed)
    identities = [Identity.from_seed(rng.randbytes(32)) for _ in range(n)]
    boot = [0] + [rng.randrange(0, (i - 1) // JOIN_BATCH * JOIN_BATCH + 1) for i in range(1, n)]
    items = []
    for i in range(k):
        pub = rng.randrange(n)
        record: Record[Any] = sign_record(identities[pub], make_listing(f"lst-{i:06d}", rng),
                                          seq=1)
        items.append(Item(pub, record_key(record), record))
    gets = min(k, MAX_GETS)
    healthy = [(i, rng.randrange(n)) for i in rng.sample(range(k), gets)]
    killed = sorted(rng.sample(range(n), int(round(n * kill))))
    dead = set(killed)
    survivors = [i for i in range(n) if i not in dead]
    churn = [(i, rng.choice(survivors)) for i in rng.sample(range(k), gets)]
    sequential = [(i, rng.randrange(n)) for i in rng.sample(range(k), min(k, SEQUENTIAL_GETS))]
    return Plan(identities, boot, items, healthy, sequential, killed, churn)


class Network:
    """One of the two networks under test, driven the same way by `measure`."""

    name = ""

    def __init__(self, plan: Plan, latency_ms: float) -> None:
        self.plan = plan
        self.latency_ms = latency_ms

    async def listen(self, i: int) -> None:
        raise NotImplementedError

    async def bootstrap(self, i: int, via: int) -> None:
        raise NotImplementedError

    def contacts_mean(self) -> float:
        raise NotImplementedError

    async def put(self, item: Item) -> bool:
        raise NotImplementedError

    async def get(self, item: Item, reader: int) -> tuple[bool, int, int]:
        """(right value returned, lookup rounds, lookup RPCs)."""
        raise NotImplementedError

    def kill(self, i: int) -> None:
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        """Totals over all nodes, reported as per-phase differences."""
        return {}

    async def close(self) -> None:
        raise NotImplementedError


async def safe_put(net: Network, item: Item) -> bool | None:
    """True if stored, False if refused everywhere, None if the put raised."""
    try:
        return await net.put(item)
    except Exception as exc:
        progress(f"{net.name}: put of {item.key.hex()[:12]} raised {type(exc).__name__}: {exc}")
        return None


async def run_phase(net: Network, pairs: list[tuple[int, int]], limit: int) -> dict[str, Any]:
    items = net.plan.items
    before = net.counters()
    t0 = time.monotonic()
    drops = udp_rcvbuf_errors()
    with LagMonitor() as lag, GcMonitor() as gcm:
        results = await bounded(
            [partial(timed_get, partial(net.get, items[i], r)) for i, r in pairs], limit)
    out = summarize(results, time.monotonic() - t0, lag)
    out["gc_max_ms"] = round(gcm.max_ms, 1)
    out["udp_drops"] = diff(udp_rcvbuf_errors(), drops)
    after = net.counters()
    out.update({k: after[k] - before.get(k, 0) for k in after})
    return out


async def measure(net: Network) -> dict[str, Any]:
    plan = net.plan
    n = len(plan.identities)
    out: dict[str, Any] = {}
    try:
        progress(f"{net.name}: joining {n} nodes")
        t0 = time.monotonic()
        drops = udp_rcvbuf_errors()
        for i in range(n):
            await net.listen(i)
        for start in range(1, n, JOIN_BATCH):
            group = range(start, min(n, start + JOIN_BATCH))
            await asyncio.gather(*(net.bootstrap(i, plan.boot[i]) for i in group))
            if start // JOIN_BATCH % 8 == 0:
                progress(f"  joined {min(n, start + JOIN_BATCH)}/{n}")
        out["build_s"] = round(time.monotonic() - t0, 2)
        out["build_udp_drops"] = diff(udp_rcvbuf_errors(), drops)
        out["contacts_mean"] = round(net.contacts_mean(), 1)

        progress(f"{net.name}: storing {len(plan.items)} records")
        t0 = time.monotonic()
        drops = udp_rcvbuf_errors()
        stored = await bounded([partial(safe_put, net, it) for it in plan.items])
        out["store_s"] = round(time.monotonic() - t0, 2)
        out["store_udp_drops"] = diff(udp_rcvbuf_errors(), drops)
        out["stored_ok"] = sum(1 for r in stored if r is True)
        out["put_errors"] = sum(1 for r in stored if r is None)

        # N nodes' objects live in one heap here (one process per node in real life): move them
        # out of the collector's reach so a full collection does not stall the measured phases
        gc.collect()
        gc.freeze()
        progress(f"{net.name}: healthy: {len(plan.healthy)} gets, {CONCURRENCY} at a time")
        out["healthy"] = await run_phase(net, plan.healthy, CONCURRENCY)
        progress(f"{net.name}: healthy: {json.dumps(out['healthy'])}")
        seq = await run_phase(net, plan.sequential, 1)
        out["healthy"]["sequential"] = {k: seq[k] for k in (
            "p50_ms", "p90_ms", "p99_ms", "rounds_mean", "rpcs_mean", "success", "gets")}
        progress(f"{net.name}: healthy, one at a time: {json.dumps(out['healthy']['sequential'])}")

        for i in plan.killed:
            net.kill(i)
        progress(f"{net.name}: stopped {len(plan.killed)} nodes; churn: {len(plan.churn)} gets")
        out["churn"] = await run_phase(net, plan.churn, CONCURRENCY)
        progress(f"{net.name}: churn: {json.dumps(out['churn'])}")
    finally:
        await net.close()
        gc.unfreeze()
        gc.collect()
    return out


# -- our DHT -------------------------------------------------------------------------------------

class Ours(Network):
    name = "ours"

    def __init__(self, plan: Plan, latency_ms: float) -> None:
        super().__init__(plan, latency_ms)
        self.nodes: list[DhtNode] = [make_node(ident, latency_ms=latency_ms)
                                     for ident in plan.identities]

    async def listen(self, i: int) -> None:
        await self.nodes[i].listen(0, "127.0.0.1")

    async def bootstrap(self, i: int, via: int) -> None:
        await self.nodes[i].bootstrap([self.nodes[via].address])

    def contacts_mean(self) -> float:
        return sum(nd.contact_count() for nd in self.nodes) / len(self.nodes)

    async def put(self, item: Item) -> bool:
        report = await self.nodes[item.publisher].put(item.record)
        return report.accepted > 0  # stored_locally alone does not count: nobody else has it

    async def get(self, item: Item, reader: int) -> tuple[bool, int, int]:
        report = await self.nodes[reader].get_report(item.key)
        ok = bool(report.records) and report.records[0].raw == item.raw
        return ok, report.rounds, report.rpcs

    def kill(self, i: int) -> None:
        self.nodes[i].stop()

    def counters(self) -> dict[str, int]:
        # everything every node sent or refused (read repair, identify, pings included)
        total = {"rpcs_all_nodes": 0, "timeouts_all_nodes": 0, "rate_limited_all_nodes": 0}
        for nd in self.nodes:
            if nd.protocol is not None:
                total["rpcs_all_nodes"] += nd.protocol.stats.rpcs_sent
                total["timeouts_all_nodes"] += nd.protocol.stats.timeouts
                total["rate_limited_all_nodes"] += nd.protocol.stats.rate_limited
        return total

    async def close(self) -> None:
        for nd in self.nodes:
            nd.stop()
        await asyncio.sleep(0.1)
        for nd in self.nodes:
            nd.records.db.close()


# -- stock kademlia ------------------------------------------------------------------------------

class DelayedTransport:
    """Wraps a datagram transport so every datagram leaves `delay` seconds later."""

    def __init__(self, transport: asyncio.DatagramTransport, delay: float) -> None:
        self._transport = transport
        self._delay = delay

    def sendto(self, data: bytes, addr: Any = None) -> None:
        asyncio.get_running_loop().call_later(self._delay, self._send_now, data, addr)

    def _send_now(self, data: bytes, addr: Any) -> None:
        if not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _NullTransport:
    """What a stopped stock node sends through: nothing."""

    def sendto(self, data: bytes, addr: Any = None) -> None:
        pass

    def is_closing(self) -> bool:
        return True

    def close(self) -> None:
        pass


class DelayedKademliaProtocol(KademliaProtocol):  # type: ignore[misc]
    send_delay = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.send_delay > 0:
            transport = DelayedTransport(transport, self.send_delay)  # type: ignore[arg-type,assignment]
        super().connection_made(transport)


def stock_server_class(latency_ms: float) -> type[Server]:
    proto = type("StockProtocol", (DelayedKademliaProtocol,), {"send_delay": latency_ms / 1000})
    return type("StockServer", (Server,), {"protocol_class": proto})


class CountingValueCrawl(ValueSpiderCrawl):  # type: ignore[misc]
    """Stock `ValueSpiderCrawl` that counts its rounds (`_find` calls) and FIND_VALUE RPCs.

    The store-back of the value to the nearest node without it is started but not awaited, like
    our read repair, so it is not part of the measured latency (stock `get` awaits it).
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.rounds = 0
        self.rpcs = 0
        self.background: list[asyncio.Future[Any]] = []

    async def _find(self, rpcmethod: Callable[..., Awaitable[Any]]) -> Any:
        self.rounds += 1

        def counted(peer: Node, node: Node) -> Awaitable[Any]:
            self.rpcs += 1
            return rpcmethod(peer, node)

        return await super()._find(counted)

    async def _handle_found_values(self, values: list[Any]) -> Any:
        value = Counter(values).most_common(1)[0][0]  # majority, as the stock code
        peer = self.nearest_without_value.popleft()
        if peer:
            self.background.append(asyncio.ensure_future(
                self.protocol.call_store(peer, self.node.id, value)))
        return value


class Stock(Network):
    name = "stock"

    def __init__(self, plan: Plan, latency_ms: float) -> None:
        super().__init__(plan, latency_ms)
        cls = stock_server_class(latency_ms)
        # same node ids as ours, so both networks have the same shape
        self.servers: list[Server] = [cls(node_id=ident.node_id) for ident in plan.identities]
        self.addrs: dict[int, tuple[str, int]] = {}
        self.background: list[asyncio.Future[Any]] = []
        self.rpcs = 0

    async def listen(self, i: int) -> None:
        await self.servers[i].listen(0, interface="127.0.0.1")
        host, port = self.servers[i].transport.get_extra_info("sockname")[:2]
        self.addrs[i] = (host, port)

    async def bootstrap(self, i: int, via: int) -> None:
        await self.servers[i].bootstrap([self.addrs[via]])

    def contacts_mean(self) -> float:
        return sum(len(bk) for s in self.servers for bk in s.protocol.router.buckets) / len(
            self.servers)

    async def put(self, item: Item) -> bool:
        return bool(await self.servers[item.publisher].set_digest(item.key, item.raw))

    async def get(self, item: Item, reader: int) -> tuple[bool, int, int]:
        # `Server.get` without its local short-circuit: always ask the network, like ours does
        server = self.servers[reader]
        target = Node(item.key)
        nearest = server.protocol.router.find_neighbors(target)
        if not nearest:
            return False, 0, 0
        crawl = CountingValueCrawl(server.protocol, target, nearest, server.ksize, server.alpha)
        value = await crawl.find()
        self.background.extend(crawl.background)
        return value == item.raw, crawl.rounds, crawl.rpcs

    def kill(self, i: int) -> None:
        self.servers[i].stop()
        # requests it had already accepted would answer through the closed socket and raise
        self.servers[i].protocol.transport = _NullTransport()

    async def close(self) -> None:
        for s in self.servers:
            s.stop()
            if s.protocol is not None:
                s.protocol.transport = _NullTransport()
        for task in self.background:
            task.cancel()
        await asyncio.sleep(0.1)


# -- main ----------------------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_start = loadavg()
    # which dht/ code was measured: its sources' hash, and the git commit if there is one
    code = code_version(["dht"], hash_key="dht_sha256", dirty_key="dht_dirty",
                        relative_names=False)
    plan = make_plan(args.nodes, args.keys, args.kill, args.seed)
    random.seed(args.seed)  # the stock library draws from the global generator
    progress(f"plan: {args.nodes} nodes, {args.keys} keys, {len(plan.healthy)} gets per phase, "
             f"kill {len(plan.killed)}, latency {args.latency_ms} ms, seed {args.seed}")
    ours = await measure(Ours(plan, args.latency_ms))
    stock = await measure(Stock(plan, args.latency_ms))
    return {
        "nodes": args.nodes,
        "keys": args.keys,
        "latency_ms": args.latency_ms,
        "kill": args.kill,
        "ours": ours,
        "stock": stock,
        "ratio_healthy_p50": ratio(ours["healthy"]["p50_ms"], stock["healthy"]["p50_ms"], 4),
        "ratio_churn_p50": ratio(ours["churn"]["p50_ms"], stock["churn"]["p50_ms"], 4),
        "gets": len(plan.healthy),
        "killed": len(plan.killed),
        "concurrency": CONCURRENCY,
        "seed": args.seed,
        "quick": args.quick,
        # 1-minute load average before and after: other work on the machine slows the runs
        "loadavg": [load_start, loadavg()],
        "cpus": os.cpu_count(),
        "code": code,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = size_parser(__doc__, SIZES, quick="a shorter run: 200 nodes, 100 keys unless given")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="injected one-way latency per datagram, both networks")
    p.add_argument("--kill", type=float, default=0.2,
                   help="fraction of nodes stopped before the churn phase")
    p.add_argument("--seed", type=int, default=1,
                   help="seed for identities, records, join order, readers, kills")
    args = resolve_sizes(p.parse_args(argv), SIZES)
    if args.nodes < 2 or args.keys < 1 or not 0 <= args.kill < 1 or args.latency_ms < 0:
        p.error("need --nodes >= 2, --keys >= 1, 0 <= --kill < 1, --latency-ms >= 0")
    return args


if __name__ == "__main__":
    options = parse_args()
    quiet_stock_logs()
    raise_nofile_limit()
    emit(asyncio.run(main(options)))
