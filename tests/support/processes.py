"""The `p2pmarket` command as a process: a private environment, `init`, `run`, and a clean stop.

Shared by the e2e tests that start real nodes (tests/e2e/test_run.py, test_cli_api.py, …).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from p2pmarket.datadir import COOKIE_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]


def base_env(home: Path, *, fast_kdf: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PMARKET_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["P2PMARKET_HOME"] = str(home)
    if fast_kdf:
        env["P2PMARKET_TEST_FAST_KDF"] = "1"  # cheap Argon2id: most tests are about the CLI
    return env


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free now; a test uses it at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_datadir(datadir: Path, env: dict[str, str]) -> str:
    """`p2pmarket init` without a passphrase; the new node's peer id."""
    done = subprocess.run(
        [sys.executable, "-m", "p2pmarket", "init", "--no-show-mnemonic", "--datadir", str(datadir),
         "--insecure-no-passphrase"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def spawn_node(datadir: Path, port: int, env: dict[str, str], *extra: str
               ) -> subprocess.Popen[str]:
    """`p2pmarket run` on loopback (DHT on `port`, p2p on port 0 unless `extra` names one)."""
    return subprocess.Popen(
        [sys.executable, "-m", "p2pmarket", "run", "--datadir", str(datadir), "--dht-host",
         "127.0.0.1", "--dht-port", str(port), "--p2p-host", "127.0.0.1",
         *(extra if "--p2p-port" in extra else (*extra, "--p2p-port", "0"))],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def stop_node(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=20)
    finally:
        reap(proc)


def reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def wait_for_api(datadir: Path, proc: subprocess.Popen[str], seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (datadir / COOKIE_FILE).exists() and (datadir / "api.url").exists():
            return (datadir / "api.url").read_text().strip()
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError("the node wrote no api.cookie")
