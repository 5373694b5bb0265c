"""`p2pmarket run --api-port 0` as a process, and the API verbs of the CLI against it."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pmarket.datadir import COOKIE_FILE
from tests.support.processes import (
    base_env,
    free_udp_port,
    init_datadir,
    reap,
    spawn_node,
    stop_node,
    wait_for_api,
)

pytestmark = pytest.mark.timeout(120)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pmarket", *args], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_cli_verbs_against_a_running_node(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    datadir = tmp_path / "node"
    peer_id = init_datadir(datadir, env)
    d = ("--datadir", str(datadir))
    down = cli(env, "status", *d)
    assert down.returncode == 1 and "no node is running" in down.stderr
    proc = spawn_node(datadir, free_udp_port(), env, "--api-port", "0")
    try:
        url = wait_for_api(datadir, proc)
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert stat.S_IMODE((datadir / COOKIE_FILE).stat().st_mode) == 0o600
        deadline = time.monotonic() + 30
        while True:  # the API answers while the p2p stack is still loading
            status = cli(env, "status", "--json", *d)
            assert status.returncode == 0, status.stderr
            if json.loads(status.stdout)["state"] == "running" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        info = json.loads(status.stdout)
        assert info["peer_id"] == peer_id and info["state"] == "running"
        human = cli(env, "status", *d)
        assert human.returncode == 0 and peer_id in human.stdout and "running" in human.stdout

        made = cli(env, "listing", "create", *d, "--title", "Oak desk lamp", "--price",
                   "12.50", "--category", "home/decor", "--country", "DE", "--at",
                   "52.52,13.40", "--tag", "lamp", "--id", "oak-lamp-01")
        assert made.returncode == 0, made.stderr
        assert made.stdout.strip() == "oak-lamp-01" and "12.50 EUR" in made.stderr
        bad = cli(env, "listing", "create", *d, "--title", "X", "--price", "1",
                  "--category", "home/spaceships", "--country", "DE", "--geohash", "u33db")
        assert bad.returncode == 1 and "unknown category" in bad.stderr
        listed = cli(env, "listing", "list", *d)
        assert "oak-lamp-01" in listed.stdout and "12.50 EUR" in listed.stdout
        as_json = json.loads(cli(env, "listing", "list", "--json", *d).stdout)
        assert [x["id"] for x in as_json] == ["oak-lamp-01"]
        found = cli(env, "search", "lamp", "--cached", *d)
        assert found.returncode == 0 and found.stdout == ""  # my own are not in the cache
        orders = cli(env, "orders", "--json", *d)
        assert orders.returncode == 0 and json.loads(orders.stdout) == []
        offer = cli(env, "offer", peer_id, "oak-lamp-01", "--price", "10", *d)
        assert offer.returncode == 1 and "own listing" in offer.stderr
        gone = cli(env, "listing", "rm", "oak-lamp-01", *d)
        assert gone.returncode == 0
        again = cli(env, "listing", "rm", "oak-lamp-01", *d)
        assert again.returncode == 1 and "oak-lamp-01" in again.stderr
        assert stop_node(proc, signal.SIGTERM) == 0
    finally:
        reap(proc)
    assert not (datadir / COOKIE_FILE).exists() and not (datadir / "api.url").exists()
