"""What the benchmark scripts share: percentiles and latency summaries, GC and event-loop-lag
monitors, timing loops, the figure/baseline ratio, size flags (`--tiny`) and the JSON output.

Not a benchmark itself (the smoke test runs every bench/*.py whose name does not start with `_`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# -- numbers ---------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default; q=0.5 is the median)."""
    s = sorted(values)
    if not s:
        return None
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def nearest_rank(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest sample with at least q of all samples at or below."""
    s = sorted(values)
    if not s:
        return None
    return s[max(0, math.ceil(q * len(s)) - 1)]


def rnd(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def to_ms(seconds: Iterable[float]) -> list[float]:
    return [s * 1000 for s in seconds]


def summary(ms: Sequence[float], stats: Sequence[str] = ("p50", "p99"), *, digits: int = 2,
            nearest: bool = False) -> dict[str, float | None]:
    """`{"<stat>_ms": value}` for stats named `pNN`, `mean`, `min` or `max` (None if no samples).

    Percentiles interpolate linearly unless `nearest` asks for nearest-rank.
    """
    pick = nearest_rank if nearest else percentile
    out: dict[str, float | None] = {}
    for stat in stats:
        value: float | None
        if not ms:
            value = None
        elif stat == "mean":
            value = statistics.fmean(ms)
        elif stat == "min":
            value = min(ms)
        elif stat == "max":
            value = max(ms)
        elif stat.startswith("p"):
            value = pick(ms, int(stat[1:]) / 100)
        else:
            raise ValueError(f"unknown statistic {stat!r}")
        out[f"{stat}_ms"] = rnd(value, digits)
    return out


def ratio(figure: float | None, baseline: float | None, digits: int = 3) -> float | None:
    """Figure over the baseline measured in the same run; None when either is missing or 0."""
    if figure is None or not baseline:
        return None
    return round(figure / baseline, digits)


def diff(after: int | None, before: int | None) -> int | None:
    """A counter's change over a phase; None when the counter could not be read."""
    return None if after is None or before is None else after - before


# -- monitors --------------------------------------------------------------------------------------


class GcMonitor:
    """Longest garbage-collector pause while in the `with` block."""

    def __init__(self) -> None:
        self.max_ms = 0.0
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.max_ms = max(self.max_ms, (time.perf_counter() - self._start) * 1000)

    def __enter__(self) -> GcMonitor:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


class LagMonitor:
    """How late a 10 ms sleep wakes up: event loop stalls caused by synchronous work."""

    def __init__(self, every: float = 0.01) -> None:
        self.every = every
        self.samples: list[float] = []
        self.max_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.every)
            lag = (loop.time() - t0 - self.every) * 1000
            self.samples.append(lag)
            self.max_ms = max(self.max_ms, lag)

    def __enter__(self) -> LagMonitor:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


# -- timing loops ----------------------------------------------------------------------------------


async def sample(fn: Callable[[], Awaitable[Any]], n: int, *, warmup: int = 0) -> list[float]:
    """Await `fn()` `warmup` times untimed, then `n` times one after the other: seconds each."""
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


async def timed(aw: Awaitable[T], cap: float, what: str) -> tuple[float, T | None, bool]:
    """(milliseconds, result, ok): a raise or running past `cap` seconds counts as a failure."""
    started = time.perf_counter()
    try:
        out: T | None = await asyncio.wait_for(aw, cap)
        ok = True
    except Exception as exc:  # noqa: BLE001 - a crash or the cap is a measured failure
        progress(f"{what} failed: {type(exc).__name__}: {exc}")
        out, ok = None, False
    return (time.perf_counter() - started) * 1000, out, ok


# -- the run's context -----------------------------------------------------------------------------


def progress(msg: str) -> None:
    """A timestamped line on stderr (stdout holds only the JSON result)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    """The 1-minute load average: a busy machine slows every figure."""
    return round(os.getloadavg()[0], 2)


def raise_nofile_limit() -> None:
    """One UDP socket per simulated node: allow as many open files as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def code_version(dirs: Sequence[str], *, hash_key: str, dirty_key: str,
                 relative_names: bool) -> dict[str, Any]:
    """Which code was measured: a hash of `dirs`/*.py, the git commit and uncommitted changes.

    Each file enters the hash under its name (or its path from the repo root when
    `relative_names`), so a script's figure stays comparable with its earlier runs.
    """
    h = hashlib.sha256()
    paths = sorted(p for d in dirs for p in (ROOT / d).glob("*.py"))
    for path in paths:
        name = str(path.relative_to(ROOT)) if relative_names else path.name
        h.update(name.encode() + b"\0" + path.read_bytes())
    out: dict[str, Any] = {hash_key: h.hexdigest()[:16]}
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=True)
        # no optional locks: reading the status must not rewrite the index under another git
        dirty = subprocess.run(["git", "-C", str(ROOT), "--no-optional-locks", "status",
                                "--porcelain", "--", *dirs],
                               capture_output=True, text=True, timeout=5, check=True)
        out.update({"git_head": head.stdout.strip(), dirty_key: bool(dirty.stdout.strip())})
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def emit(result: dict[str, Any], *, indent: int | None = None) -> None:
    """The run's one JSON object on stdout."""
    print(json.dumps(result, indent=indent), flush=True)


# -- command line ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Size:
    """A flag that scales the run: its default, its `--tiny` value and maybe a `--quick` one."""

    default: int | float  # a float size (seconds, say) takes cast=float
    tiny: int | float
    help: str
    quick: int | float | None = None
    cast: Callable[[str], Any] = int


def size_parser(doc: str | None, sizes: dict[str, Size], *,
                quick: str | None = None) -> argparse.ArgumentParser:
    """A parser with one flag per size, `--tiny` (the smoke test's run) and `--quick` if given.

    Sizes default to None so `resolve_sizes` can tell a given value from a preset's.
    """
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    for name, size in sizes.items():
        presets = [f"default {size.default:g}"]
        if size.quick is not None:
            presets.append(f"{size.quick:g} with --quick")
        presets.append(f"{size.tiny:g} with --tiny")
        p.add_argument("--" + name.replace("_", "-"), type=size.cast, default=None,
                       help=f"{size.help} ({'; '.join(presets)})")
    if quick is not None:
        p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--tiny", action="store_true",
                   help="smallest run, for the smoke test: every size at its --tiny value "
                        "unless given")
    return p


def resolve_sizes(args: argparse.Namespace, sizes: dict[str, Size]) -> argparse.Namespace:
    """Fill sizes not given on the command line: --tiny, then --quick, then the default."""
    for name, size in sizes.items():
        if getattr(args, name) is None:
            if args.tiny:
                value = size.tiny
            elif getattr(args, "quick", False) and size.quick is not None:
                value = size.quick
            else:
                value = size.default
            setattr(args, name, value)
    return args


def parse_sizes(doc: str | None, sizes: dict[str, Size],
                argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of a script whose only flags are its sizes (and --tiny)."""
    return resolve_sizes(size_parser(doc, sizes).parse_args(argv), sizes)
