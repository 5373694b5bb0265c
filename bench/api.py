"""Throughput and latency of the local HTTP API against a bare aiohttp handler, in one run.

    python bench/api.py [--seconds 3] [--concurrency 8] [--cached 2000] [--tiny]

The bench process runs a real `Node` (in-memory channels, its DHT socket bound) with its
`ApiServer` on 127.0.0.1, and a bare aiohttp app that answers the very same JSON bytes without
auth, routing table, validation or problem middleware. A second process (this script with
`--load`) drives each target in turn with `--concurrency` keep-alive connections for
`--seconds` (bounded by a request cap), so the load generator does not share the server's loop.

Targets: `GET /api/v1/listings/{id}` (one of my listings) and a cached search
(`GET /api/v1/search?q=bike&mode=cache`, 20 hits from `--cached` listings of other sellers).
Prints one JSON object: `listing_get`, `search_cached`, `baseline` (`listing`, `search`), each
with `rps`, `p50_ms`, `p99_ms`, `requests`; `ratios` (API rps / bare rps for the same JSON);
`setup`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from bench._harness import (  # noqa: E402
    Size,
    emit,
    ratio,
    resolve_sizes,
    size_parser,
    summary,
    to_ms,
)

MAX_REQUESTS = 200_000  # per target: the loop stops at this count or after --seconds
SIZES = {"seconds": Size(3.0, 0.3, "seconds of load per target", cast=float),
         "concurrency": Size(8, 2, "keep-alive connections"),
         "cached": Size(2000, 20, "listings of other sellers in the search cache")}


# -- load generator (the child process) ----------------------------------------------------------


async def hammer(url: str, token: str, seconds: float, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async def one() -> None:
            async with session.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url}: HTTP {resp.status}")

        for _ in range(concurrency * 20):  # warm up: connections, caches
            await one()
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline and len(latencies) < MAX_REQUESTS:
                start = time.perf_counter()
                await one()
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {"rps": round(len(latencies) / elapsed, 1),
            **summary(to_ms(latencies), ("p50", "p99"), digits=3),
            "requests": len(latencies)}


def load_main(args: argparse.Namespace) -> None:
    emit(asyncio.run(hammer(args.url, args.token, args.seconds, args.concurrency)))


async def measure(url: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--load", "--url", url, "--token", token, "--seconds",
        str(args.seconds), "--concurrency", str(args.concurrency),
        stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed on {url}")
    result: dict[str, Any] = json.loads(out)
    return result


# -- servers (this process) ----------------------------------------------------------------------


def seed_cache(node: Any, count: int) -> None:
    """`count` signed listings of 50 other sellers in the node's search cache."""
    from p2pmarket.identity import Identity
    from p2pmarket.wire.bodies import Listing, Location, Price
    from p2pmarket.wire.records import sign_record

    rng = random.Random(7)
    sellers = [Identity.generate() for _ in range(50)]
    words = ["bike", "lamp", "desk", "guitar", "camera", "kettle", "tent", "chair", "sofa",
             "drill"]
    for i in range(count):
        word = words[i % len(words)]
        body = Listing(id=f"cached-{i:06d}", title=f"{word} number {i}",
                       description=f"a used {word} in fair shape", price=Price(
                           rng.randrange(500, 90_000), "EUR"), category="other",
                       condition="good", quantity=1, location=Location("DE", "u33db"),
                       tags=(word,))
        node.search.cache.add(sign_record(rng.choice(sellers), body, seq=1))


async def bare_app(bodies: dict[str, bytes]) -> tuple[web.AppRunner, str]:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=bodies[request.match_info["name"]],
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/{name}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from node.api.server import ApiServer
    from node.app import Node
    from node.market.listings import build_listing
    from node.p2p.memory import MemoryNetwork
    from p2pmarket.identity import Identity
    from p2pmarket.storage import Database

    with tempfile.TemporaryDirectory() as tmp:
        identity = Identity.generate()
        db = Database.open(Path(tmp) / "node.db")
        node = Node(identity, db, MemoryNetwork().host(identity), datadir=Path(tmp))
        await node.start(dht_host="127.0.0.1", dht_port=0)
        api = ApiServer(Path(tmp), port=0)
        await api.start()
        api.attach(node)
        bare: web.AppRunner | None = None
        try:
            mine = await node.listings.create(build_listing({
                "id": "bench-listing-1", "title": "Bench road bike", "description": "56 cm",
                "price": {"amount": 25_000, "currency": "EUR"}, "category": "sports/bikes",
                "condition": "good", "quantity": 1, "tags": ["bike"],
                "location": {"country": "DE", "geohash": "u33db"}}))
            seed_cache(node, args.cached)
            listing_url = f"{api.url}/api/v1/listings/{mine.body.id}"
            search_url = f"{api.url}/api/v1/search?q=bike&mode=cache&page_size=20"
            headers = {"Authorization": f"Bearer {api.token}"}
            async with aiohttp.ClientSession(headers=headers) as session:
                bodies = {}
                for name, url in (("listing", listing_url), ("search", search_url)):
                    async with session.get(url) as resp:
                        assert resp.status == 200, await resp.text()
                        bodies[name] = await resp.read()
            bare, bare_url = await bare_app(bodies)
            results = {
                "listing_get": await measure(listing_url, api.token, args),
                "search_cached": await measure(search_url, api.token, args),
                "baseline": {"listing": await measure(f"{bare_url}/listing", "", args),
                             "search": await measure(f"{bare_url}/search", "", args)},
            }
        finally:
            if bare is not None:
                await bare.cleanup()
            await api.stop()
            await node.close()
            db.close()
    base = results["baseline"]
    results["ratios"] = {
        "listing_get_vs_baseline": ratio(results["listing_get"]["rps"], base["listing"]["rps"]),
        "search_cached_vs_baseline": ratio(results["search_cached"]["rps"],
                                           base["search"]["rps"]),
    }
    results["setup"] = {"seconds": args.seconds, "concurrency": args.concurrency,
                        "cached_listings": args.cached, "search_hits": 20,
                        "listing_bytes": len(bodies["listing"]),
                        "search_bytes": len(bodies["search"]), "cores": os.cpu_count(),
                        "load_generator": "separate process, aiohttp keep-alive"}
    return results


def main() -> None:
    parser = size_parser(__doc__, SIZES)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    args = resolve_sizes(parser.parse_args(), SIZES)
    if args.load:
        load_main(args)
    else:
        emit(asyncio.run(bench(args)), indent=2)


if __name__ == "__main__":
    main()
