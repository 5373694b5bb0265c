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
from tests.support.processes import (
    base_env,
    free_tcp_port,
    free_udp_port,
    init_datadir,
    reap,
    spawn_node,
    stop_node,
)

pytestmark = pytest.mark.timeout(90)


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


def test_two_nodes_join_and_stop_cleanly(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    init_datadir(a_dir, env)
    init_datadir(b_dir, env)
    a_port, b_port = free_udp_port(), free_udp_port()
    a = spawn_node(a_dir, a_port, env)
    b = None
    try:
        _wait_for(a, r"DHT on 127\.0\.0\.1:\d+")
        b = spawn_node(b_dir, b_port, env, "--bootstrap", f"127.0.0.1:{a_port}")
        _wait_for(b, r"joined the DHT: [1-9]\d* contacts")
        assert stop_node(b, signal.SIGINT) == 0
        assert stop_node(a) == 0
    finally:
        for proc in (a, b):
            if proc is not None:
                reap(proc)
    assert load_neighbours(b_dir) == [("127.0.0.1", a_port)]
    assert (b_dir / NEIGHBOURS_FILE).exists()
    assert not (a_dir / LOCK_FILE).exists() and not (b_dir / LOCK_FILE).exists()


def test_node_without_reachable_bootstrap_keeps_running(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    init_datadir(tmp_path / "n", env)
    dead = free_udp_port()  # nothing listens there
    proc = spawn_node(tmp_path / "n", free_udp_port(), env, "--bootstrap", f"127.0.0.1:{dead}")
    try:
        _wait_for(proc, r"no bootstrap peer answered")
        time.sleep(0.3)
        assert proc.poll() is None
    finally:
        assert stop_node(proc) == 0


def test_libp2p_peer_id_is_the_printed_id(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    peer_id = init_datadir(tmp_path / "n", env)
    proc = spawn_node(tmp_path / "n", free_udp_port(), env)
    try:
        seen = _wait_for(proc, r"libp2p host \S+ listening on /ip4/127\.0\.0\.1/tcp/\d+")
    finally:
        assert stop_node(proc) == 0
    assert f"libp2p host {peer_id} listening" in seen


def test_busy_p2p_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    env = base_env(tmp_path / "home")
    init_datadir(tmp_path / "n", env)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = spawn_node(tmp_path / "n", free_udp_port(), env, "--p2p-port", str(port))
        try:
            code = proc.wait(timeout=30)
            assert proc.stderr is not None
            err = proc.stderr.read()
        finally:
            reap(proc)
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in err


def test_bootstrap_verb_serves_health_and_stops(tmp_path: Path) -> None:
    import json
    import urllib.request

    env = base_env(tmp_path / "home")
    init_datadir(tmp_path / "boot", env)
    metrics_port = free_tcp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pmarket", "bootstrap", "--datadir", str(tmp_path / "boot"),
         "--dht-host", "127.0.0.1", "--dht-port", str(free_udp_port()),
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
        assert stop_node(proc) == 0
