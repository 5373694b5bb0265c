"""`p2pmarket tui` in a real pseudo-terminal against a `p2pmarket run` process: it draws, switches
screens on F-keys, says so when the node stops, quits on ctrl+q with exit 0, and writes nothing
but the screen.

Textual's Linux driver reads keys from fd 0 and draws on fd 2 (`sys.__stderr__`), so the test
gives both the pty and sends fd 1 to a file: any print there is stray output. On the pty itself,
log lines and tracebacks would mix with the screen, so its bytes are searched for them.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.support.processes import base_env, free_udp_port, init_datadir, wait_for_api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

F2, F5, CTRL_Q = b"\x1bOQ", b"\x1b[15~", b"\x11"
STRAY = re.compile(rb"Traceback|WARNING|ERROR|CRITICAL|Exception|p2pmarket: error")


@contextmanager
def running_node(datadir: Path, env: dict[str, str], logs: Path
                 ) -> Iterator[subprocess.Popen[bytes]]:
    """`p2pmarket run` on loopback with free ports, its output in files; stopped on exit."""
    with open(logs / "node.out", "wb") as out, open(logs / "node.err", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2pmarket", "run", "--datadir", str(datadir),
             "--dht-host", "127.0.0.1", "--dht-port", str(free_udp_port()),
             "--p2p-host", "127.0.0.1", "--p2p-port", "0", "--api-port", "0"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        wait_for_api(datadir, proc)  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while True:  # the API answers while the p2p stack is still starting
            done = subprocess.run(
                [sys.executable, "-m", "p2pmarket", "status", "--json", "--datadir",
                 str(datadir)], env=env, capture_output=True, text=True, timeout=30,
                stdin=subprocess.DEVNULL)
            if done.returncode == 0 and json.loads(done.stdout)["state"] == "running":
                break
            assert time.monotonic() < deadline, done.stdout + done.stderr
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class Terminal:
    """A child process whose stdin and stderr are a fresh 80x24 pty; stdout goes to a file."""

    def __init__(self, args: list[str], env: dict[str, str], stdout: Path) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.screen = b""
        env = {**env, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
        env.pop("NO_COLOR", None)
        with open(stdout, "wb") as out:
            self.proc = subprocess.Popen(args, env=env, stdin=slave, stdout=out, stderr=slave,
                                         start_new_session=True)
        os.close(slave)

    def read(self, seconds: float) -> None:
        """Collect what the child draws for up to `seconds` (less if the pty closes)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], min(left, 0.1))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the child closed its end
                    return
                if not chunk:
                    return
                self.screen += chunk

    def wait_for(self, needle: bytes, seconds: float = 20) -> None:
        start = len(self.screen)
        deadline = time.monotonic() + seconds
        while needle not in self.screen[start:]:
            assert time.monotonic() < deadline, f"{needle!r} never drawn:\n{self.tail()}"
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.tail()}"
            self.read(0.2)

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read(0.2)  # keep draining, or a full pty would block the child
        self.read(0.5)
        return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def tail(self) -> str:
        return self.screen[-3000:].decode("utf-8", "replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        os.close(self.master)


def test_tui_in_a_terminal_against_a_node_process(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    datadir = tmp_path / "node"
    peer_id = init_datadir(datadir, env)
    with running_node(datadir, env, tmp_path) as node:
        term = Terminal([sys.executable, "-m", "p2pmarket", "tui", "--datadir", str(datadir)],
                        env, tmp_path / "tui.stdout")
        try:
            term.wait_for(b"search the market")  # the Market screen's search box
            term.send(F5)
            term.wait_for(peer_id.encode())  # the Network screen shows the node's status
            term.send(F2)
            term.wait_for(b"No orders yet")
            node.send_signal(signal.SIGTERM)  # the node goes away under the app
            assert node.wait(timeout=20) == 0
            term.send(F5)  # the Network screen re-reads the status on showing
            term.wait_for(b"does not answer")
            term.send(CTRL_Q)
            code = term.wait(20)
        finally:
            term.close()
    assert code == 0, term.tail()
    assert (tmp_path / "tui.stdout").read_bytes() == b""
    found = STRAY.search(term.screen)
    assert found is None, term.tail()
    log = datadir / "logs" / "tui.log"
    assert log.exists() and "tui exited" in log.read_text()


CRASHING_TUI = """\
import sys
from tui.screens.network import NetworkScreen

def refresh(self):
    raise RuntimeError("injected crash")

NetworkScreen.action_refresh = refresh
from p2pmarket.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_crash_in_the_app_is_a_failing_exit_code(tmp_path: Path) -> None:
    """Textual shows an unexpected exception on the terminal; the exit code must say so too."""
    env = base_env(tmp_path / "home")
    datadir = tmp_path / "node"
    init_datadir(datadir, env)
    with running_node(datadir, env, tmp_path):
        term = Terminal([sys.executable, "-c", CRASHING_TUI, "tui", "--datadir", str(datadir)],
                        env, tmp_path / "tui.stdout")
        try:
            term.wait_for(b"search the market")
            term.send(F5)
            term.wait_for(b"Refresh")  # the Network screen's footer
            term.send(b"r")
            code = term.wait(20)
        finally:
            term.close()
    assert code == 1, term.tail()
    assert b"injected crash" in term.screen
    assert "tui stopped on an error" in (datadir / "logs" / "tui.log").read_text()
