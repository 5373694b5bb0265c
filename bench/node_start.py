"""How fast `p2pmarket run` answers its API, and its memory, against a bare aiohttp app.

    python bench/node_start.py [--cached 100000] [--rss-after 2] [--tiny]

Times from process start until `GET /api/v1/version` answers (polling every 5 ms), and the
process RSS `--rss-after` seconds after start (2; or when it answers, if later), for a node
with an empty data dir and one whose listing cache holds `--cached` listings; the same for a
bare aiohttp app in a subprocess, measured in the same run. Prints one JSON object:
{"empty": {...}, "cached": {...}, "baseline": {...}, "ratio_ready_empty", "ratio_ready_cached",
"targets": {...}}. Targets: ready < 1 s, RSS < 160 MB.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import Size, emit, parse_sizes, ratio  # noqa: E402
from node.market.cache import ListingCache  # noqa: E402
from p2pmarket import geohash  # noqa: E402
from p2pmarket.identity import Identity  # noqa: E402
from p2pmarket.storage import Database  # noqa: E402
from p2pmarket.wire.bodies import Listing, Location, Price  # noqa: E402
from p2pmarket.wire.records import sign_record  # noqa: E402

BARE_APP = """
import sys
from aiohttp import web
async def version(request):
    return web.json_response({"version": "0.1.0"})
app = web.Application()
app.router.add_get("/api/v1/version", version)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""
SIZES = {"cached": Size(100_000, 50, "listings in the second node's cache"),
         "rss_after": Size(2.0, 0.0, "seconds after start when RSS is read", cast=float)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def wait_ready(url_of: Any, started: float, timeout: float = 30.0) -> float:
    while time.perf_counter() - started < timeout:
        url = url_of()
        if url:
            try:
                with urllib.request.urlopen(url + "/api/v1/version", timeout=1) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
        time.sleep(0.005)
    raise TimeoutError("the API never answered")


def measure(cmd: list[str], url_of: Any, env: dict[str, str],
            rss_after: float) -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        ready = wait_ready(url_of, started)
        time.sleep(max(0.0, rss_after - (time.perf_counter() - started)))
        rss = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"ready_s": round(ready, 3), "rss_mb": rss}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_cmd(datadir: Path) -> list[str]:
    return [sys.executable, "-m", "p2pmarket", "run", "--datadir", str(datadir),
            "--dht-host", "127.0.0.1", "--dht-port", "0", "--p2p-host", "127.0.0.1",
            "--p2p-port", "0", "--api-port", "0", "--log-level", "WARNING"]


def api_url(datadir: Path) -> str | None:
    try:
        return (datadir / "api.url").read_text().strip().removesuffix("/api/v1") or None
    except OSError:
        return None


def fill_cache(datadir: Path, n: int) -> None:
    db = Database.open(datadir / "node.db")
    cache = ListingCache(db)
    sellers = [Identity.generate() for _ in range(20)]
    with db.transaction():
        for i in range(n):
            body = Listing(id=f"item-{i:07d}", title=f"vintage bike {i}", description="ok",
                           price=Price(1000 + i, "EUR"), category="sports/bikes",
                           condition="good", quantity=1,
                           location=Location("DE", geohash.encode(52.5, 13.4, 6)))
            cache.add(sign_record(sellers[i % 20], body, seq=1))
    db.close()


def init(datadir: Path, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "p2pmarket", "init", "--no-show-mnemonic",
                    "--datadir", str(datadir), "--insecure-no-passphrase"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def main() -> None:
    args = parse_sizes(__doc__, SIZES)
    tmp = Path(tempfile.mkdtemp(prefix="p2pm-start-"))
    env = {**os.environ, "P2PMARKET_TEST_FAST_KDF": "1", "PYTHONPATH": str(Path.cwd())}
    empty, cached = tmp / "empty", tmp / "cached"
    init(empty, env)
    init(cached, env)
    fill_started = time.perf_counter()
    fill_cache(cached, args.cached)
    fill_s = time.perf_counter() - fill_started
    result_empty = measure(node_cmd(empty), lambda: api_url(empty), env, args.rss_after)
    result_cached = measure(node_cmd(cached), lambda: api_url(cached), env, args.rss_after)
    port = free_port()
    baseline = measure([sys.executable, "-c", BARE_APP, str(port)],
                       lambda: f"http://127.0.0.1:{port}", env, args.rss_after)
    emit({
        "empty": result_empty,
        "cached": {**result_cached, "listings": args.cached, "fill_s": round(fill_s, 1)},
        "baseline": baseline,
        "ratio_ready_empty": ratio(result_empty["ready_s"], baseline["ready_s"], 2),
        "ratio_ready_cached": ratio(result_cached["ready_s"], baseline["ready_s"], 2),
        "targets": {"ready_s": 1.0, "rss_mb": 160},
    })


if __name__ == "__main__":
    main()
