"""`p2pmarket run` as a process: two nodes join through each other's DHT port and stop cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dht.bootstrap import NEIGHBOURS_FILE, load_neighbours
from p2pmarket.datadir import LOCK_FILE
from tests.e2e.test_cli import base_env

pytestmark = pytest.mark.timeout(90)


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _init(datadir: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "p2pmarket", "init", "--datadir", str(datadir),
         "--insecure-no-passphrase"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def _start(datadir: Path, port: int, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "p2pmarket", "run", "--datadir", str(datadir), "--dht-host",
         "127.0.0.1", "--dht-port", str(port), "--p2p-host", "127.0.0.1",
         *(extra if "--p2p-port" in extra else (*extra, "--p2p-port", "0"))],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _wait_for(proc: subprocess.Popen[str], pattern: str, seconds: float = 30) -> str:
    """Read stderr lines until one matches; returns everything read."""
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + seconds
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line:
            seen += line
            if re.search(pattern, line):
                return seen
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
    raise AssertionError(f"no line matching {pattern!r}; got:\n{seen}")


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=20)
    finally:
        _reap(proc)


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_two_nodes_join_and_stop_cleanly(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    _init(a_dir, env)
    _init(b_dir, env)
    a_port, b_port = _free_udp_port(), _free_udp_port()
    a = _start(a_dir, a_port, env)
    b = None
    try:
        _wait_for(a, r"DHT on 127\.0\.0\.1:\d+")
        b = _start(b_dir, b_port, env, "--bootstrap", f"127.0.0.1:{a_port}")
        _wait_for(b, r"joined the DHT: [1-9]\d* contacts")
        assert _stop(b, signal.SIGINT) == 0
        assert _stop(a) == 0
    finally:
        for proc in (a, b):
            if proc is not None:
                _reap(proc)
    assert load_neighbours(b_dir) == [("127.0.0.1", a_port)]
    assert (b_dir / NEIGHBOURS_FILE).exists()
    assert not (a_dir / LOCK_FILE).exists() and not (b_dir / LOCK_FILE).exists()


def test_node_without_reachable_bootstrap_keeps_running(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    _init(tmp_path / "n", env)
    dead = _free_udp_port()  # nothing listens there
    proc = _start(tmp_path / "n", _free_udp_port(), env, "--bootstrap", f"127.0.0.1:{dead}")
    try:
        _wait_for(proc, r"no bootstrap peer answered")
        time.sleep(0.3)
        assert proc.poll() is None
    finally:
        assert _stop(proc) == 0


def test_libp2p_peer_id_is_the_printed_id(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    peer_id = _init(tmp_path / "n", env)
    proc = _start(tmp_path / "n", _free_udp_port(), env)
    try:
        seen = _wait_for(proc, r"libp2p host \S+ listening on /ip4/127\.0\.0\.1/tcp/\d+")
    finally:
        assert _stop(proc) == 0
    assert f"libp2p host {peer_id} listening" in seen


def test_busy_p2p_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    env = base_env(tmp_path / "home")
    _init(tmp_path / "n", env)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _start(tmp_path / "n", _free_udp_port(), env, "--p2p-port", str(port))
        try:
            code = proc.wait(timeout=30)
            assert proc.stderr is not None
            err = proc.stderr.read()
        finally:
            _reap(proc)
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in err


def test_bootstrap_verb_serves_health_and_stops(tmp_path: Path) -> None:
    import json
    import socket
    import urllib.request

    env = base_env(tmp_path / "home")
    _init(tmp_path / "boot", env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pmarket", "bootstrap", "--datadir", str(tmp_path / "boot"),
         "--dht-host", "127.0.0.1", "--dht-port", str(_free_udp_port()),
         "--metrics-port", str(metrics_port)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        _wait_for(proc, r"health and metrics on http://127\.0\.0\.1:\d+/")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz",
                                    timeout=10) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=10) as resp:
            assert b"p2pmarket_dht_contacts" in resp.read()
    finally:
        assert _stop(proc) == 0
