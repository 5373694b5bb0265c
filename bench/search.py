"""Marketplace search: network search (cold and warm cache) and local FTS search, with baselines.

    python bench/search.py [--quick | --tiny] [--nodes N] [--listings L] [--sellers S] ...

Starts N DHT nodes in one process on 127.0.0.1; S of them are sellers (node id = the seller's
identity) that publish L listings between them through `node.market.listings.Listings`. Readers
(non-seller nodes) then run keyword + filter searches through `node.market.search.Search`, first
with an empty listing cache (cold), then the same query again (warm), then the raw index fetch
alone (baseline). Recall is measured against ground truth computed from the published listings
as tests/integration/test_search.py `truth()` does. Finally C signed listings go into a
`ListingCache` on an in-memory database and local FTS searches are timed against a plain SQL
LIKE scan over the same rows. Prints one JSON object on stdout; progress goes to stderr. See
bench/README.md for what each key means.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import io
import json
import logging
import math
import os
import pstats
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
from dht.server import DhtNode, PutReport  # noqa: E402
from dht.testing import join_all, make_node  # noqa: E402
from node.market.cache import Filters, Hit, ListingCache, stored_listing  # noqa: E402
from node.market.listings import Listings, build_listing  # noqa: E402
from node.market.moderation import Blocklist  # noqa: E402
from node.market.search import INDEX_PAGES, Search, geo_terms  # noqa: E402
from node.market.terms import listing_terms, tokens  # noqa: E402
from p2pmarket import geohash  # noqa: E402
from p2pmarket.identity import Identity  # noqa: E402
from p2pmarket.storage import Database  # noqa: E402
from p2pmarket.wire.bodies import Listing  # noqa: E402
from p2pmarket.wire.dhtkeys import index_key  # noqa: E402
from p2pmarket.wire.records import AnyRecord, Record, sign_record  # noqa: E402

JOIN_BATCH = 25
QUERY_CAP = 120.0  # seconds one search may take before it counts as failed
FULL_PAGE = 1_000_000  # page size that returns every hit (recall is read from the whole set)
LOCAL_SORTS = ("relevance", "price", "newest", "distance")
SIZES = {"nodes": Size(200, 12, "DHT nodes", quick=60),
         "listings": Size(5000, 20, "listings published", quick=600),
         "cached": Size(100_000, 200, "listings in the local FTS cache", quick=10_000),
         "queries": Size(60, 3, "network queries", quick=30),
         "local_queries": Size(400, 8, "local FTS queries", quick=200)}


# -- realistic listings ----------------------------------------------------------------------------
# category -> (nouns, brands, typical price in cents). Nouns go in titles and tags, so they are
# the keywords people search for; brands and adjectives add realistic multi-word queries.

CATALOG: dict[str, tuple[list[str], list[str], int]] = {
    "sports/bikes": (["bike", "bicycle", "helmet", "saddle", "wheelset"],
                     ["trek", "cube", "gazelle", "specialized", "canyon"], 40_000),
    "sports/fitness": (["dumbbells", "treadmill", "kettlebell", "rower", "bench"],
                       ["decathlon", "kettler", "concept2"], 15_000),
    "sports/outdoor": (["tent", "backpack", "sleeping bag", "stove", "hiking boots"],
                       ["vaude", "deuter", "msr", "salomon"], 8_000),
    "sports/winter-sports": (["skis", "snowboard", "ski boots", "goggles"],
                             ["atomic", "burton", "rossignol"], 12_000),
    "home/furniture": (["sofa", "armchair", "bookshelf", "desk", "wardrobe", "table", "chair"],
                       ["ikea", "vitra", "muuto", "hay"], 20_000),
    "home/kitchen": (["kettle", "espresso machine", "blender", "toaster", "pan set"],
                     ["delonghi", "smeg", "bosch", "krups"], 6_000),
    "home/decor": (["lamp", "mirror", "rug", "vase", "poster"],
                   ["ikea", "artemide", "flos"], 4_000),
    "home/tools": (["drill", "saw", "sander", "toolbox", "ladder"],
                   ["bosch", "makita", "dewalt", "metabo"], 7_000),
    "home/garden": (["lawnmower", "barbecue", "hose", "planter"],
                    ["weber", "gardena", "stihl"], 9_000),
    "electronics/phones": (["phone", "smartphone", "charger", "case"],
                           ["iphone", "samsung", "pixel", "fairphone"], 25_000),
    "electronics/computers": (["laptop", "monitor", "keyboard", "mouse", "tablet"],
                              ["lenovo", "dell", "apple", "logitech"], 35_000),
    "electronics/cameras": (["camera", "lens", "tripod", "flash"],
                            ["canon", "nikon", "sony", "fujifilm", "leica"], 45_000),
    "electronics/audio": (["headphones", "speaker", "amplifier", "turntable"],
                          ["sennheiser", "bose", "sonos", "technics"], 15_000),
    "electronics/gaming": (["console", "controller", "game"],
                           ["playstation", "nintendo", "xbox"], 20_000),
    "music/instruments": (["guitar", "piano", "violin", "drum kit", "keyboard"],
                          ["fender", "yamaha", "gibson", "roland"], 30_000),
    "music/vinyl": (["record", "vinyl", "lp", "boxset"],
                    ["bluenote", "motown", "ecm"], 2_500),
    "fashion/men": (["jacket", "coat", "shirt", "jeans", "sneakers"],
                    ["levis", "patagonia", "barbour", "nike"], 5_000),
    "fashion/women": (["dress", "coat", "boots", "handbag", "jacket"],
                      ["zara", "mango", "cos", "acne"], 5_000),
    "fashion/watches": (["watch", "strap", "chronograph"],
                        ["seiko", "casio", "omega", "swatch"], 20_000),
    "books/fiction": (["novel", "paperback", "hardcover"],
                      ["penguin", "suhrkamp", "gallimard"], 800),
    "toys/games": (["lego", "puzzle", "board game", "doll"],
                   ["lego", "playmobil", "ravensburger", "hasbro"], 3_000),
    "toys/baby": (["stroller", "crib", "high chair", "car seat"],
                  ["bugaboo", "stokke", "cybex"], 15_000),
    "vehicles/parts": (["tyres", "roof box", "bike rack", "battery"],
                       ["thule", "michelin", "bosch"], 12_000),
    "collectibles/coins": (["coin", "medal", "banknote"], ["euro", "mark", "franc"], 3_000),
}
CATEGORY_WEIGHT = {c: w for c, w in zip(CATALOG, (
    9, 4, 4, 2, 10, 6, 6, 5, 3, 8, 7, 5, 5, 4, 5, 3, 7, 7, 3, 3, 5, 3, 2, 1), strict=True)}
ADJECTIVES = ["vintage", "retro", "wooden", "electric", "compact", "classic", "modern",
              "portable", "black", "white", "red", "blue", "leather", "steel", "solid",
              "barely", "mint", "refurbished", "handmade", "large", "small", "kids"]
DETAILS = ["", "", "", "2019", "2021", "xl", "size 42", "54cm", "128gb", "pair", "set of 4",
           "with case", "boxed", "original"]
DESCRIPTIONS = ["In working order, pick up or post.", "Smoke-free home, collection only.",
                "Lightly used, some marks, see photos.", "Moving out, must go this week.",
                "Barely used, comes with receipt.", "Cash on collection, can post at cost."]
# city: (lat, lon, country, weight); listings scatter around their seller's home city
CITIES: dict[str, tuple[float, float, str, int]] = {
    "berlin": (52.520, 13.405, "DE", 5), "hamburg": (53.551, 9.994, "DE", 3),
    "munich": (48.137, 11.575, "DE", 3), "cologne": (50.938, 6.960, "DE", 2),
    "paris": (48.857, 2.352, "FR", 5), "lyon": (45.764, 4.836, "FR", 2),
    "amsterdam": (52.370, 4.895, "NL", 3), "vienna": (48.208, 16.373, "AT", 2),
}
CONDITIONS = ["new", "like-new", "good", "fair", "for-parts"]
CONDITION_WEIGHT = [10, 20, 40, 20, 10]


def weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def home_city(rng: random.Random) -> str:
    return weighted(rng, {c: v[3] for c, v in CITIES.items()})


def listing_fields(rng: random.Random, listing_id: str, city: str) -> dict[str, Any]:
    """One listing's fields (tests/integration/test_search.py `listing_fields`, extended)."""
    category = weighted(rng, CATEGORY_WEIGHT)
    nouns, brands, typical = CATALOG[category]
    noun = rng.choice(nouns)
    parts = [rng.choice(ADJECTIVES) if rng.random() < 0.7 else "",
             rng.choice(brands) if rng.random() < 0.6 else "", noun, rng.choice(DETAILS)]
    title = " ".join(p for p in parts if p)
    tags = list(dict.fromkeys(
        [noun] + rng.sample(nouns, k=rng.randint(0, 2)) + ([rng.choice(brands)]
                                                            if rng.random() < 0.3 else [])))
    lat0, lon0, country, _ = CITIES[city]
    km = abs(rng.gauss(0, 12))  # most within ~25 km of the centre, a tail further out
    bearing = rng.uniform(0, 2 * math.pi)
    lat = lat0 + km * math.cos(bearing) / 111.0
    lon = lon0 + km * math.sin(bearing) / (111.0 * math.cos(math.radians(lat0)))
    amount = max(100, int(typical * rng.lognormvariate(0, 0.8)))
    return {
        "id": listing_id,
        "title": title,
        "description": rng.choice(DESCRIPTIONS),
        "price": {"amount": amount, "currency": "EUR"},
        "category": category,
        "condition": rng.choices(CONDITIONS, weights=CONDITION_WEIGHT)[0],
        "quantity": 1 if rng.random() < 0.9 else rng.randint(2, 5),
        "location": {"country": country, "geohash": geohash.encode(lat, lon, 6)},
        "tags": tags,
    }


def make_query(rng: random.Random) -> tuple[str, Filters]:
    """A realistic keyword + filter query (kind, filters)."""
    category = weighted(rng, CATEGORY_WEIGHT)
    nouns, brands, typical = CATALOG[category]
    noun = rng.choice(nouns)
    city = home_city(rng)
    lat0, lon0, _, _ = CITIES[city]
    near = (lat0 + rng.uniform(-0.05, 0.05), lon0 + rng.uniform(-0.05, 0.05))
    radius = rng.choice([5, 10, 25, 50])
    lo = int(typical * rng.uniform(0.2, 0.8))
    hi = int(typical * rng.uniform(1.2, 3.0))
    kind = rng.choices(["kw", "brand_kw", "adj_kw", "kw_price", "subcat_price",
                        "cat_cond_price", "kw_near", "subcat_near"],
                       weights=[20, 10, 10, 10, 10, 10, 20, 10])[0]
    match kind:
        case "kw":
            f = Filters(text=noun)
        case "brand_kw":
            f = Filters(text=f"{rng.choice(brands)} {noun}")
        case "adj_kw":
            f = Filters(text=f"{rng.choice(ADJECTIVES)} {noun}")
        case "kw_price":
            f = Filters(text=noun, price_min=lo, price_max=hi)
        case "subcat_price":
            f = Filters(category=category, price_max=hi)
        case "cat_cond_price":
            f = Filters(category=category.split("/")[0], price_min=lo, price_max=hi,
                        conditions=tuple(rng.sample(CONDITIONS, k=2)))
        case "kw_near":
            f = Filters(text=noun, near=near, radius_km=radius)
        case _:
            f = Filters(category=category, near=near, radius_km=radius,
                        conditions=tuple(rng.sample(CONDITIONS, k=3)))
    return kind, f


def describe(f: Filters) -> str:
    parts = []
    if f.text:
        parts.append(f"text={f.text!r}")
    if f.category:
        parts.append(f"cat={f.category}")
    if f.price_min is not None or f.price_max is not None:
        parts.append(f"price={f.price_min}..{f.price_max}")
    if f.conditions:
        parts.append("cond=" + ",".join(f.conditions))
    if f.near is not None:
        parts.append(f"near=({f.near[0]:.3f},{f.near[1]:.3f}) r={f.radius_km}km")
    return " ".join(parts)


def truth(published: Iterable[Record[Listing]], f: Filters) -> set[tuple[bytes, str]]:
    """Ground truth, as tests/integration/test_search.py `truth()` (keyed by seller and id)."""
    out = set()
    for rec in published:
        body = rec.body
        words = set(tokens(" ".join((body.title, *body.tags))))
        if f.text and not set(tokens(f.text)) <= words:
            continue
        if f.category and not (body.category == f.category
                               or body.category.startswith(f.category + "/")):
            continue
        if f.price_min is not None and body.price.amount < f.price_min:
            continue
        if f.price_max is not None and body.price.amount > f.price_max:
            continue
        if f.conditions and body.condition not in f.conditions:
            continue
        if f.near is not None and f.radius_km is not None and geohash.distance_km(
                f.near, geohash.decode(body.location.geohash)) > f.radius_km:
            continue
        out.add((rec.publisher, body.id))
    return out


def index_groups(f: Filters) -> list[list[bytes]]:
    """The index keys `Search.refresh` fetches for these filters, grouped the same way."""
    groups: list[list[bytes]] = [[index_key("kw", w)] for w in tokens(f.text)]
    if f.category:
        groups.append([index_key("cat", f.category)])
    if f.near is not None and f.radius_km is not None:
        cells = geo_terms(f.near, f.radius_km)
        if cells:
            groups.append([index_key("geo", c) for c in cells])
    return groups


# -- measurement -----------------------------------------------------------------------------------

def latency(ms: list[float]) -> dict[str, Any]:
    return summary(ms, ("p50", "p90", "p99", "max"))


def udp_drops(ports: set[int]) -> int | None:
    """Datagrams the kernel dropped on our sockets' full receive buffers (Linux /proc/net/udp,
    the `drops` column summed over the sockets bound to `ports`, i.e. this run's nodes only)."""
    try:
        with open("/proc/net/udp") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return None
    total = 0
    for line in lines:
        cols = line.split()
        if len(cols) >= 13 and int(cols[1].rsplit(":", 1)[1], 16) in ports:
            total += int(cols[-1])
    return total


def rpc_stats(nodes: list[DhtNode]) -> Counter[str]:
    """`MarketProtocol.stats` summed over all nodes (RPCs sent, timeouts, rate limited)."""
    out: Counter[str] = Counter()
    for n in nodes:
        if n.protocol is not None:
            st = n.protocol.stats
            out.update(rpcs=st.rpcs_sent, timeouts=st.timeouts, rate_limited=st.rate_limited)
    return out


# -- publishing ------------------------------------------------------------------------------------

@dataclass
class PutStats:
    puts: int = 0
    ok: int = 0
    accepted: int = 0
    stored_locally: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    listing_not_stored: int = 0

    def add(self, report: PutReport) -> None:
        self.puts += 1
        self.ok += report.ok
        self.accepted += report.accepted
        self.stored_locally += report.stored_locally
        self.refused.update(report.refused)


def count_puts(node: DhtNode, stats: PutStats) -> None:
    """Wrap this node's `put` (instance attribute) to count what every put reported."""
    original = node.put

    async def put(record: AnyRecord, *, remember: bool = True) -> PutReport:
        report = await original(record, remember=remember)
        stats.add(report)
        if record.kind == "listing" and not report.ok:
            stats.listing_not_stored += 1
        return report

    node.put = put  # type: ignore[method-assign]


async def publish_all(sellers: list[tuple[Identity, DhtNode]], per_seller: int,
                      rng: random.Random, concurrency: int, stats: PutStats
                      ) -> list[Record[Listing]]:
    plans = []
    for s, (_seller, node) in enumerate(sellers):
        city = home_city(rng)
        plans.append([listing_fields(rng, f"s{s:03d}-{i:05d}", city) for i in range(per_seller)])
        count_puts(node, stats)
    published: list[Record[Listing]] = []
    sem = asyncio.Semaphore(concurrency)
    done = 0
    t0 = time.perf_counter()

    async def one(s: int) -> None:
        nonlocal done
        seller, node = sellers[s]
        listings = Listings(seller, Database.open(":memory:"), node)
        async with sem:
            for fields in plans[s]:
                published.append(await listings.create(build_listing(fields)))
        done += 1
        if done % max(1, len(sellers) // 10) == 0 or done == len(sellers):
            progress(f"publish: {done}/{len(sellers)} sellers, {len(published)} listings, "
                     f"{stats.puts} puts, {time.perf_counter() - t0:.1f} s")

    await asyncio.gather(*(one(s) for s in range(len(sellers))))
    return published


# -- network search --------------------------------------------------------------------------------

@dataclass
class QueryResult:
    kind: str
    filters: Filters
    expected: int
    cold_ms: float
    warm_ms: float
    index_ms: float
    cold_found: int
    warm_found: int
    cold_extra: int  # hits outside the ground truth (e.g. prefix match, word in description)
    violations: int  # hits that break a non-text filter
    index_stored: int  # index entries published under the query's keys (sum over keys)
    index_fetched: int  # entries one raw get_all per key returned (sum over keys)
    truncated_keys: int  # keys where the raw fetch returned fewer entries than were published
    failed: bool = False


async def index_fetch(node: DhtNode, f: Filters) -> dict[bytes, int]:
    """Baseline: the raw index fetch of the query's keys, group by group as Search.refresh."""
    fetched: dict[bytes, int] = {}
    for group in index_groups(f):
        got = await asyncio.gather(*(node.get_all(k, max_pages=INDEX_PAGES) for k in group))
        fetched.update({k: len(v) for k, v in zip(group, got, strict=True)})
    return fetched


def found_ids(hits: list[Hit]) -> set[tuple[bytes, str]]:
    return {(h.record.publisher, h.record.body.id) for h in hits}


async def run_query(reader: DhtNode, kind: str, f: Filters, published: list[Record[Listing]],
                    stored_per_key: Counter[bytes], page_size: int) -> QueryResult:
    expected = truth(published, f)
    loose = truth(published, Filters(category=f.category, price_min=f.price_min,
                                     price_max=f.price_max, conditions=f.conditions,
                                     near=f.near, radius_km=f.radius_km))
    db = Database.open(":memory:")  # a cold listing cache
    search = Search(reader, ListingCache(db), Blocklist(db))
    cold_ms, _, ok1 = await timed(search.search(f, page_size=page_size), QUERY_CAP, "search")
    cold_hits = found_ids(search.local(f, page_size=FULL_PAGE).hits)
    warm_ms, _, ok2 = await timed(search.search(f, page_size=page_size), QUERY_CAP, "search")
    warm_hits = found_ids(search.local(f, page_size=FULL_PAGE).hits)
    index_ms, fetched, ok3 = await timed(index_fetch(reader, f), QUERY_CAP, "search")
    db.close()
    fetched = fetched or {}
    keys = [k for g in index_groups(f) for k in g]
    return QueryResult(
        kind=kind, filters=f, expected=len(expected), cold_ms=cold_ms, warm_ms=warm_ms,
        index_ms=index_ms, cold_found=len(expected & cold_hits),
        warm_found=len(expected & warm_hits), cold_extra=len(cold_hits - expected),
        violations=len(cold_hits - loose),
        index_stored=sum(stored_per_key[k] for k in keys),
        index_fetched=sum(fetched.get(k, 0) for k in keys),
        truncated_keys=sum(fetched.get(k, 0) < stored_per_key[k] for k in keys),
        failed=not (ok1 and ok2 and ok3))


def summarize_network(results: list[QueryResult]) -> dict[str, Any]:
    expected = sum(r.expected for r in results)

    def phase(name: str) -> dict[str, Any]:
        found = [getattr(r, f"{name}_found") for r in results]
        recalls = [n / r.expected for n, r in zip(found, results, strict=True) if r.expected]
        return {**latency([getattr(r, f"{name}_ms") for r in results]),
                "recall": rnd(sum(found) / expected if expected else None, 4),
                "recall_min": rnd(min(recalls) if recalls else None, 4),
                "queries_full_recall": sum(x >= 1.0 for x in recalls)}

    cold = phase("cold")
    cold["hits_outside_truth"] = sum(r.cold_extra for r in results)
    cold["filter_violations"] = sum(r.violations for r in results)
    return {"cold": cold, "warm": phase("warm")}


def recall_by_kind(results: list[QueryResult]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({r.kind for r in results}):
        rs = [r for r in results if r.kind == kind]
        exp = sum(r.expected for r in rs)
        out[kind] = {"queries": len(rs), "expected": exp,
                     "recall": rnd(sum(r.cold_found for r in rs) / exp if exp else None, 4),
                     "cold_p50_ms": rnd(percentile([r.cold_ms for r in rs], 0.5))}
    return out


async def network_phase(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    seller_ids = [Identity.from_seed(hashlib.sha256(b"seller%d" % i).digest())
                  for i in range(args.sellers)]
    # sellers are nodes of the network whose node id is their identity's, so `DhtNode.put`
    # remembers their own records (what a real seller's node does)
    nodes = [make_node(seller, ksize=args.ksize) for seller in seller_ids]
    nodes += [make_node(ksize=args.ksize) for _ in range(args.nodes - args.sellers)]
    order = list(range(len(nodes)))
    rng.shuffle(order)
    nodes = [nodes[i] for i in order]
    sellers = [(n.identity, n) for n in nodes if n.identity in seller_ids]
    sellers.sort(key=lambda s: seller_ids.index(s[0]))
    readers = [n for n in nodes if n.identity not in seller_ids]
    out: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        random.seed(args.seed)  # join_all picks bootstrap peers from the global generator
        await join_all(nodes, batch=JOIN_BATCH)
        out["build_s"] = round(time.perf_counter() - t0, 2)
        out["contacts_mean"] = round(sum(n.contact_count() for n in nodes) / len(nodes), 1)
        progress(f"network: {len(nodes)} nodes joined in {out['build_s']} s, "
                 f"{out['contacts_mean']} contacts each")

        stats = PutStats()
        per_seller = args.listings // args.sellers
        ports = {n.address[1] for n in nodes}
        drops0 = udp_drops(ports)
        rpc0 = rpc_stats(nodes)
        profiler = cProfile.Profile() if args.profile else None
        t0 = time.perf_counter()
        with GcMonitor() as gcm, LagMonitor() as lag:
            if profiler:
                profiler.enable()
            published = await publish_all(sellers, per_seller, rng, args.seller_concurrency,
                                          stats)
            if profiler:
                profiler.disable()
        publish_s = time.perf_counter() - t0
        drops1 = udp_drops(ports)
        rpc1 = rpc_stats(nodes)
        if profiler:
            profiler.dump_stats(args.profile)
            buf = io.StringIO()
            pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(40)
            progress(f"publish profile (cumulative, top 40), saved to {args.profile}:\n"
                     + buf.getvalue())
        stored_per_key: Counter[bytes] = Counter()
        for rec in published:
            for scope, term in listing_terms(rec.body):
                stored_per_key[index_key(scope, term)] += 1
        out["publish"] = {
            "s": round(publish_s, 1),
            "listings": len(published),
            "puts": stats.puts,
            "puts_per_s": round(stats.puts / publish_s, 1),
            "listings_per_s": round(len(published) / publish_s, 2),
            "puts_ok": stats.ok,
            "replicas_mean": round(stats.accepted / stats.puts, 2) if stats.puts else None,
            "refused": dict(stats.refused),
            "listings_not_stored": stats.listing_not_stored,
            "index_keys": len(stored_per_key),
            "index_entries_max_per_key": max(stored_per_key.values(), default=0),
            "seller_concurrency": args.seller_concurrency,
            "gc_max_ms": round(gcm.max_ms, 1),
            "loop_lag_max_ms": round(lag.max_ms, 1),
            "udp_drops": diff(drops1, drops0),
            **{f"{k}_all_nodes": rpc1[k] - rpc0[k] for k in rpc0},
        }
        progress(f"publish: {json.dumps(out['publish'])}")
        held = [n.records.count() for n in nodes]
        out["records_held_mean"] = round(sum(held) / len(held), 1)

        gc.collect()
        gc.freeze()  # 200 nodes share one heap: keep full collections out of the timings
        queries: list[tuple[str, Filters]] = []
        qrng = random.Random(args.seed + 1)
        while len(queries) < args.queries:
            kind, f = make_query(qrng)
            if truth(published, f):  # a query nobody's listing matches says nothing on recall
                queries.append((kind, f))
        results: list[QueryResult] = []
        drops0 = udp_drops(ports)
        t0 = time.perf_counter()
        with GcMonitor() as gcm, LagMonitor() as lag:
            for i, (kind, f) in enumerate(queries):
                reader = readers[i % len(readers)]
                r = await run_query(reader, kind, f, published, stored_per_key, args.page_size)
                results.append(r)
                progress(f"q{i:03d} {kind:14s} expected {r.expected:4d} cold {r.cold_ms:7.1f} ms "
                         f"found {r.cold_found:4d} | warm {r.warm_ms:6.1f} ms found "
                         f"{r.warm_found:4d} | index {r.index_ms:6.1f} ms fetched "
                         f"{r.index_fetched}/{r.index_stored} ({r.truncated_keys} short keys) | "
                         f"{describe(f)}")
        drops1 = udp_drops(ports)
        out["queries_wall_s"] = round(time.perf_counter() - t0, 1)
        out.update(summarize_network(results))
        out["index_fetch"] = latency([r.index_ms for r in results])
        out["index_fetch"].update({
            "entries_stored": sum(r.index_stored for r in results),
            "entries_fetched": sum(r.index_fetched for r in results),
            "keys_short": sum(r.truncated_keys for r in results),
            "keys": sum(len(k) for r in results for k in index_groups(r.filters)),
        })
        out["failed_queries"] = sum(r.failed for r in results)
        out["by_kind"] = recall_by_kind(results)
        out["worst"] = [{"kind": r.kind, "query": describe(r.filters), "expected": r.expected,
                         "found": r.cold_found, "index_fetched": r.index_fetched,
                         "index_stored": r.index_stored}
                        for r in sorted(results, key=lambda r: r.cold_found / r.expected)[:5]
                        if r.cold_found < r.expected]
        out["queries_gc_max_ms"] = round(gcm.max_ms, 1)
        out["queries_loop_lag_max_ms"] = round(lag.max_ms, 1)
        out["queries_udp_drops"] = diff(drops1, drops0)
        out["expected_mean"] = round(sum(r.expected for r in results) / len(results), 1)
        return out
    finally:
        for node in nodes:
            node.stop()
        await asyncio.sleep(0.1)
        for node in nodes:
            node.records.db.close()
        gc.unfreeze()
        gc.collect()


# -- local FTS -------------------------------------------------------------------------------------

def like_search(db: Database, f: Filters, *, sort: str, limit: int,
                now: float | None = None) -> list[Hit]:
    """Baseline: `ListingCache.search` with the FTS5 MATCH replaced by a plain LIKE scan.

    Same filters, same limit (and the same `limit * 20` over-fetch for radius queries), the same
    decoding of every returned row; relevance (bm25) becomes newest-first.
    """
    sql = ["SELECT c.raw, c.lat, c.lon FROM listing_cache c WHERE c.expires > ?"]
    args: list[object] = [time.time() if now is None else now]
    for w in tokens(f.text):
        sql.append("AND (c.title || ' ' || c.description || ' ' || c.tags) LIKE ?")
        args.append(f"%{w}%")
    if f.category:
        sql.append("AND (c.category = ? OR c.category LIKE ?)")
        args += [f.category, f.category + "/%"]
    if f.price_min is not None:
        sql.append("AND c.amount >= ?")
        args.append(f.price_min)
    if f.price_max is not None:
        sql.append("AND c.amount <= ?")
        args.append(f.price_max)
    if f.conditions:
        sql.append(f"AND c.condition IN ({','.join('?' * len(f.conditions))})")
        args += list(f.conditions)
    if not f.include_sold_out:
        sql.append("AND c.quantity > 0")
    sql.append("ORDER BY " + {"price": "c.amount"}.get(sort, "c.created DESC"))
    sql.append("LIMIT ?")
    args.append(limit if f.near is None else limit * 20)
    hits: list[Hit] = []
    for row in db.query(" ".join(sql), args):
        distance = None
        if f.near is not None:
            distance = geohash.distance_km(f.near, (row["lat"], row["lon"]))
            if f.radius_km is not None and distance > f.radius_km:
                continue
        hits.append(Hit(stored_listing(row["raw"]), distance, 0.0))
    if sort == "distance" and f.near is not None:
        hits.sort(key=lambda h: h.distance_km or 0.0)
    return hits[:limit]


def local_phase(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed + 2)
    signers = [Identity.from_seed(hashlib.sha256(b"cache%d" % i).digest()) for i in range(5)]
    db = Database.open(":memory:")
    cache = ListingCache(db)
    now = int(time.time())
    t0 = time.perf_counter()
    city = home_city(rng)
    sign_s = 0.0
    with db.transaction():
        for i in range(args.cached):
            if i % 100 == 0:
                city = home_city(rng)  # listings come in batches per seller and city
            fields = listing_fields(rng, f"c{i:07d}", city)
            t1 = time.perf_counter()
            # spread `created` over 29 days so "newest" has something to sort
            rec = sign_record(signers[i % len(signers)], build_listing(fields),
                              seq=1, created=now - rng.randrange(29 * 86_400), ttl=30 * 86_400)
            sign_s += time.perf_counter() - t1
            cache.add(rec)
            if (i + 1) % 20_000 == 0:
                progress(f"local: {i + 1} listings cached, {time.perf_counter() - t0:.1f} s")
    fill_s = time.perf_counter() - t0
    count = cache.count()
    progress(f"local: {count} cached in {fill_s:.1f} s ({sign_s:.1f} s signing)")

    qrng = random.Random(args.seed + 3)
    queries = []
    for i in range(args.local_queries):
        kind, f = make_query(qrng)
        sort = LOCAL_SORTS[i % len(LOCAL_SORTS)]
        if sort == "distance" and f.near is None:
            sort = "relevance"
        queries.append((kind, f, sort))
    limit = args.page_size + 1  # what Search.local asks for the first page
    # warm both paths up once (page cache, statement cache)
    for _, f, sort in queries[:5]:
        cache.search(f, sort=sort, limit=limit)
        like_search(db, f, sort=sort, limit=limit)
    fts_ms: list[float] = []
    like_ms: list[float] = []
    short_pages = near_queries = 0
    per_group: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    with GcMonitor() as gcm:
        for i, (kind, f, sort) in enumerate(queries):
            for name in ("fts", "like") if i % 2 == 0 else ("like", "fts"):  # alternate
                t1 = time.perf_counter()
                hits = (cache.search(f, sort=sort, limit=limit) if name == "fts"
                        else like_search(db, f, sort=sort, limit=limit))
                ms = (time.perf_counter() - t1) * 1000
                (fts_ms if name == "fts" else like_ms).append(ms)
                per_group[("sort", sort, name)].append(ms)
                per_group[("kind", kind, name)].append(ms)
                if name == "fts" and f.near is not None:
                    # the first page of a radius query should be full when the cache holds
                    # enough matches; `limit * 20` rows are read before the radius filter
                    near_queries += 1
                    full = cache.search(f, sort=sort, limit=FULL_PAGE)
                    if len(hits) < min(limit, len(full)):
                        short_pages += 1
    db.close()
    return {
        "cached": count,
        "fill_s": round(fill_s, 1),
        "queries": len(queries),
        "limit": limit,
        **latency(fts_ms),
        "radius_queries": near_queries,
        "radius_short_pages": short_pages,
        "gc_max_ms": round(gcm.max_ms, 1),
        **{f"by_{axis}": {
            value: {"queries": len(per_group[(axis, value, "fts")]),
                    "p50_ms": rnd(percentile(per_group[(axis, value, "fts")], 0.5)),
                    "p99_ms": rnd(percentile(per_group[(axis, value, "fts")], 0.99)),
                    "like_p50_ms": rnd(percentile(per_group[(axis, value, "like")], 0.5))}
            for value in sorted({v for a, v, _ in per_group if a == axis})}
            for axis in ("sort", "kind")},
        "baseline_like": latency(like_ms),
    }


# -- main ------------------------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_start = loadavg()
    # which code was measured: hash of dht/*.py and node/market/*.py, git head, local changes
    code = code_version(["dht", "node/market"], hash_key="sha256", dirty_key="dirty",
                        relative_names=True)
    progress(f"plan: {args.nodes} nodes, {args.sellers} sellers x "
             f"{args.listings // args.sellers} listings, {args.queries} queries, "
             f"{args.cached} cached for local FTS, seed {args.seed}")
    t0 = time.perf_counter()
    net = await network_phase(args)
    local = local_phase(args)
    index = net.pop("index_fetch")
    like = local.pop("baseline_like")
    return {
        "nodes": args.nodes,
        "listings": net["publish"]["listings"],
        "sellers": args.sellers,
        "queries": args.queries,
        "page_size": args.page_size,
        "ksize": args.ksize,
        "publish": net.pop("publish"),
        "cold": net.pop("cold"),
        "warm": net.pop("warm"),
        "local_fts": local,
        "baseline": {"index_fetch": index, "like_scan": like},
        "network": net,
        "seed": args.seed,
        "quick": args.quick,
        "wall_s": round(time.perf_counter() - t0, 1),
        "loadavg": [load_start, loadavg()],
        "cpus": os.cpu_count(),
        "code": code,
    }


def add_ratios(out: dict[str, Any]) -> dict[str, Any]:
    idx, like = out["baseline"]["index_fetch"], out["baseline"]["like_scan"]
    ratios = {
        "ratio_cold_p50": ratio(out["cold"]["p50_ms"], idx["p50_ms"]),
        "ratio_cold_p99": ratio(out["cold"]["p99_ms"], idx["p99_ms"]),
        "ratio_warm_p50": ratio(out["warm"]["p50_ms"], idx["p50_ms"]),
        "ratio_warm_p99": ratio(out["warm"]["p99_ms"], idx["p99_ms"]),
        "ratio_local_fts_p50": ratio(out["local_fts"]["p50_ms"], like["p50_ms"]),
        "ratio_local_fts_p99": ratio(out["local_fts"]["p99_ms"], like["p99_ms"]),
    }
    keys = list(out)
    at = keys.index("baseline") + 1
    return {**{k: out[k] for k in keys[:at]}, **ratios, **{k: out[k] for k in keys[at:]}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = size_parser(__doc__, SIZES,
                    quick="a shorter run: 60 nodes, 600 listings, 10k cached unless given")
    p.add_argument("--sellers", type=int, help="sellers (default listings / 100)")
    p.add_argument("--page-size", type=int, default=20, help="page size of timed searches")
    p.add_argument("--seller-concurrency", type=int, default=3,
                   help="sellers publishing at once (each keeps 8 puts in flight)")
    p.add_argument("--ksize", type=int, default=20, help="Kademlia k (replicas per record)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", metavar="FILE", help="cProfile the publish phase into FILE")
    args = resolve_sizes(p.parse_args(argv), SIZES)
    args.sellers = args.sellers or max(1, args.listings // 100)
    if args.sellers >= args.nodes or args.listings < args.sellers:
        p.error("need --sellers < --nodes (readers are the other nodes) and "
                "--listings >= --sellers")
    return args


if __name__ == "__main__":
    options = parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    raise_nofile_limit()
    emit(add_ratios(asyncio.run(main(options))))
