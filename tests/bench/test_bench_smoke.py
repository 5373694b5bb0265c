"""Every bench/*.py script runs in its smallest configuration and keeps its output contract: one
JSON object, the keys users' scripts read, finite numbers, ratios that are figure / baseline.

Nothing here asserts a speed; a new script fails until it has an entry in SMOKE.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SCRIPTS = sorted(f"bench/{p.name}" for p in BENCH.glob("*.py") if not p.name.startswith("_"))
RUN_TIMEOUT = 100  # seconds; a --tiny run takes a few (pytest's own timeout is 120)
RATIO_SLACK = 0.005 + 1e-9  # ratios are rounded to 2 to 4 digits


@dataclass(frozen=True)
class Smoke:
    """How to run one script small, and what its JSON must hold."""

    args: tuple[str, ...]
    # exact key sets: "" is the top level, "a.b" the object under a, then b
    keys: dict[str, set[str]]
    # ratio -> (figure, baseline): the ratio must be figure / baseline (all dotted paths)
    ratios: dict[str, tuple[str, str]] = field(default_factory=dict)
    # keys whose value may be null (a phase shorter than one lag sample, a counter off Linux)
    nullable: frozenset[str] = frozenset()


LATENCY = {"p50_ms", "p90_ms", "p99_ms", "max_ms"}
API_TARGET = {"rps", "p50_ms", "p99_ms", "requests"}
RTT = {"p50_ms", "p99_ms", "mean_ms"}
SPREAD = {"p50_ms", "min_ms", "max_ms"}
DHT_NET = {"build_s", "build_udp_drops", "contacts_mean", "store_s", "store_udp_drops",
           "stored_ok", "put_errors", "healthy", "churn"}
DHT_PHASE = {"p50_ms", "p90_ms", "p99_ms", "rounds_mean", "rpcs_mean", "success", "gets",
             "failed", "max_ms", "wall_s", "loop_lag_max_ms", "loop_lag_p99_ms", "gc_max_ms",
             "udp_drops"}
DHT_OURS = {"rpcs_all_nodes", "timeouts_all_nodes", "rate_limited_all_nodes"}
DHT_SEQUENTIAL = {"p50_ms", "p90_ms", "p99_ms", "rounds_mean", "rpcs_mean", "success", "gets"}
ESCROW_STEPS = {"key_exchange", "funding_sent", "funding_seen", "release_signed",
                "broadcast_accepted", "total"}
RECALL = LATENCY | {"recall", "recall_min", "queries_full_recall"}
UDP = frozenset({"udp_drops", "build_udp_drops", "store_udp_drops", "queries_udp_drops"})

SMOKE: dict[str, Smoke] = {
    "bench/api.py": Smoke(
        ("--tiny",),
        {"": {"listing_get", "search_cached", "baseline", "ratios", "setup"},
         "listing_get": API_TARGET, "search_cached": API_TARGET,
         "baseline": {"listing", "search"}, "baseline.listing": API_TARGET,
         "baseline.search": API_TARGET,
         "ratios": {"listing_get_vs_baseline", "search_cached_vs_baseline"},
         "setup": {"seconds", "concurrency", "cached_listings", "search_hits", "listing_bytes",
                   "search_bytes", "cores", "load_generator"}},
        {"ratios.listing_get_vs_baseline": ("listing_get.rps", "baseline.listing.rps"),
         "ratios.search_cached_vs_baseline": ("search_cached.rps", "baseline.search.rps")}),
    "bench/channel_rtt.py": Smoke(
        ("--tiny",),
        {"": {"n", "size", "connect_ms", "channel", "raw", "ratio_p50", "ratio_p99"},
         "channel": RTT, "raw": RTT},
        {"ratio_p50": ("channel.p50_ms", "raw.p50_ms"),
         "ratio_p99": ("channel.p99_ms", "raw.p99_ms")}),
    # the baseline of channel_rtt.py: no ratio of its own
    "bench/channel_rtt_raw.py": Smoke(
        ("--tiny",),
        {"": {"n", "size", "connect_ms", "stream_open_ms", "p50_ms", "p99_ms", "mean_ms",
              "trio_p50_ms", "trio_p99_ms", "trio_mean_ms"}}),
    "bench/dht_lookup.py": Smoke(
        ("--tiny",),
        {"": {"nodes", "keys", "latency_ms", "kill", "ours", "stock", "ratio_healthy_p50",
              "ratio_churn_p50", "gets", "killed", "concurrency", "seed", "quick", "loadavg",
              "cpus", "code"},
         "ours": DHT_NET, "stock": DHT_NET,
         "ours.healthy": DHT_PHASE | DHT_OURS | {"sequential"},
         "ours.churn": DHT_PHASE | DHT_OURS,
         "stock.healthy": DHT_PHASE | {"sequential"}, "stock.churn": DHT_PHASE,
         "ours.healthy.sequential": DHT_SEQUENTIAL, "stock.healthy.sequential": DHT_SEQUENTIAL},
        {"ratio_healthy_p50": ("ours.healthy.p50_ms", "stock.healthy.p50_ms"),
         "ratio_churn_p50": ("ours.churn.p50_ms", "stock.churn.p50_ms")},
        UDP | {"loop_lag_p99_ms"}),
    "bench/escrow.py": Smoke(
        ("--tiny",),
        {"": {"trades", "poll_s", "amount_sats", "setup_s", "nodes_ms", "first_trade_ms",
              "baseline_ms", "ratio_total", "cpus", "loadavg"},
         "nodes_ms": ESCROW_STEPS, "first_trade_ms": ESCROW_STEPS,
         "baseline_ms": {"key_exchange_and_funding_sent", "funding_seen",
                         "release_signed_and_broadcast", "total"}},
        {"ratio_total": ("nodes_ms.total", "baseline_ms.total")}),
    "bench/node_start.py": Smoke(
        ("--tiny",),
        {"": {"empty", "cached", "baseline", "ratio_ready_empty", "ratio_ready_cached",
              "targets"},
         "empty": {"ready_s", "rss_mb"}, "cached": {"ready_s", "rss_mb", "listings", "fill_s"},
         "baseline": {"ready_s", "rss_mb"}, "targets": {"ready_s", "rss_mb"}},
        {"ratio_ready_empty": ("empty.ready_s", "baseline.ready_s"),
         "ratio_ready_cached": ("cached.ready_s", "baseline.ready_s")}),
    "bench/search.py": Smoke(
        ("--tiny",),
        {"": {"nodes", "listings", "sellers", "queries", "page_size", "ksize", "publish", "cold",
              "warm", "local_fts", "baseline", "ratio_cold_p50", "ratio_cold_p99",
              "ratio_warm_p50", "ratio_warm_p99", "ratio_local_fts_p50", "ratio_local_fts_p99",
              "network", "seed", "quick", "wall_s", "loadavg", "cpus", "code"},
         "publish": {"s", "listings", "puts", "puts_per_s", "listings_per_s", "puts_ok",
                     "replicas_mean", "refused", "listings_not_stored", "index_keys",
                     "index_entries_max_per_key", "seller_concurrency", "gc_max_ms",
                     "loop_lag_max_ms", "udp_drops", "rpcs_all_nodes", "timeouts_all_nodes",
                     "rate_limited_all_nodes"},
         "cold": RECALL | {"hits_outside_truth", "filter_violations"}, "warm": RECALL,
         "local_fts": LATENCY | {"cached", "fill_s", "queries", "limit", "radius_queries",
                                 "radius_short_pages", "gc_max_ms", "by_sort", "by_kind"},
         "baseline": {"index_fetch", "like_scan"},
         "baseline.index_fetch": LATENCY | {"entries_stored", "entries_fetched", "keys_short",
                                            "keys"},
         "baseline.like_scan": LATENCY,
         "network": {"build_s", "contacts_mean", "records_held_mean", "queries_wall_s",
                     "failed_queries", "by_kind", "worst", "queries_gc_max_ms",
                     "queries_loop_lag_max_ms", "queries_udp_drops", "expected_mean"}},
        {"ratio_cold_p50": ("cold.p50_ms", "baseline.index_fetch.p50_ms"),
         "ratio_cold_p99": ("cold.p99_ms", "baseline.index_fetch.p99_ms"),
         "ratio_warm_p50": ("warm.p50_ms", "baseline.index_fetch.p50_ms"),
         "ratio_warm_p99": ("warm.p99_ms", "baseline.index_fetch.p99_ms"),
         "ratio_local_fts_p50": ("local_fts.p50_ms", "baseline.like_scan.p50_ms"),
         "ratio_local_fts_p99": ("local_fts.p99_ms", "baseline.like_scan.p99_ms")},
        UDP),
    "bench/tui_render.py": Smoke(
        ("--tiny",),
        {"": {"rows", "runs", "first_screen", "search_to_table", "baseline_bare_table",
              "ratio_p50", "loadavg"},
         "first_screen": SPREAD, "search_to_table": SPREAD, "baseline_bare_table": SPREAD},
        {"ratio_p50": ("search_to_table.p50_ms", "baseline_bare_table.p50_ms")}),
}


def at(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for key in filter(None, path.split(".")):
        assert isinstance(value, dict) and key in value, f"no {path!r} in the output"
        value = value[key]
    return value


def bad_values(value: Any, nullable: frozenset[str], path: str = "") -> Iterator[str]:
    """Paths of numbers that are not finite, and of nulls where a number belongs."""
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None and key in nullable:
                continue
            yield from bad_values(item, nullable, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from bad_values(item, nullable, f"{path}[{i}]")
    elif value is None:
        yield f"{path} is null"
    elif isinstance(value, float) and not math.isfinite(value):
        yield f"{path} is {value}"


def run_tiny(script: str, spec: Smoke) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(ROOT / script), *spec.args], cwd=ROOT,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout)  # one JSON object and nothing else on stdout
    assert isinstance(result, dict), f"{script} printed {type(result).__name__}"
    return result


def test_every_entry_names_a_script() -> None:
    assert sorted(SMOKE) == SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_runs_tiny(script: str) -> None:
    spec = SMOKE.get(script)
    assert spec is not None, f"{script} has no SMOKE entry: give it tiny flags and keys"
    result = run_tiny(script, spec)
    for path, keys in spec.keys.items():
        section = at(result, path)
        assert isinstance(section, dict) and set(section) == keys, (
            f"{path or 'top level'}: missing {sorted(keys - set(section))}, "
            f"unexpected {sorted(set(section) - keys)}")
    assert list(bad_values(result, spec.nullable)) == []
    for name, (figure_path, baseline_path) in spec.ratios.items():
        value, figure, baseline = (at(result, p) for p in (name, figure_path, baseline_path))
        assert all(isinstance(x, int | float) for x in (value, figure, baseline)), name
        assert baseline > 0, f"{baseline_path} is {baseline}"
        assert abs(value - figure / baseline) <= RATIO_SLACK, (
            f"{name} = {value}, but {figure_path} / {baseline_path} = {figure} / {baseline}")
