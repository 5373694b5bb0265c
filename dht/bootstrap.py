"""Where a node finds its first peers: `bootstrap_nodes.txt`, `--bootstrap`, saved neighbours.

The bootstrap file has one `host:port` (DHT UDP port) per line; `#` starts a comment. Neighbours
are saved at shutdown as a msgpack list of [host, port] pairs (plain data, safe to parse).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)

NEIGHBOURS_FILE = "neighbours.msgpack"
MAX_NEIGHBOURS = 64
Addr = tuple[str, int]


class BootstrapError(ValueError):
    """A bootstrap address or file that cannot be read."""


def parse_addr(text: str) -> Addr:
    """`host:port` or `[v6]:port`."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BootstrapError(f"not a host:port address: {text!r}")
    return host, int(port)


def parse_bootstrap(text: str, source: str = "bootstrap list") -> list[Addr]:
    addrs: list[Addr] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            addrs.append(parse_addr(line))
        except BootstrapError as exc:
            raise BootstrapError(f"{source} line {number}: {exc}") from None
    return addrs


def default_bootstrap_file() -> Path | None:
    """The `bootstrap_nodes.txt` shipped with the package (or at the repo root when editable)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "p2pmarket" / "bootstrap_nodes.txt",
                      here.parent / "bootstrap_nodes.txt"):
        if candidate.is_file():
            return candidate
    return None


def load_bootstrap_file(path: Path | None) -> list[Addr]:
    if path is None or not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BootstrapError(f"cannot read {path}: {exc}") from exc
    return parse_bootstrap(text, str(path))


def save_neighbours(datadir: Path, addrs: list[Addr]) -> None:
    """Atomically write the neighbours to reuse at the next start."""
    data = msgspec.msgpack.encode([[h, p] for h, p in addrs[:MAX_NEIGHBOURS]])
    fd, tmp = tempfile.mkstemp(dir=datadir, prefix=".neighbours.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, datadir / NEIGHBOURS_FILE)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_neighbours(datadir: Path) -> list[Addr]:
    """Saved neighbours; a missing or damaged file gives an empty list (and a warning)."""
    path = datadir / NEIGHBOURS_FILE
    if not path.exists():
        return []
    try:
        pairs = msgspec.msgpack.decode(path.read_bytes(), type=list[tuple[str, int]])
    except (OSError, msgspec.MsgspecError, ValueError) as exc:
        log.warning("ignoring damaged %s: %s", path, exc)
        return []
    return [(h, p) for h, p in pairs[:MAX_NEIGHBOURS] if 0 < p < 65536]
