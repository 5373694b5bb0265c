from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest

from p2pmarket.datadir import LOCK_FILE, DataDirLock, DataDirLocked, resolve_datadir

REPO_ROOT = Path(__file__).resolve().parents[2]

# takes the lock, says so, then tries again from inside the same process and waits for stdin
HOLDER = """
import sys
from pathlib import Path
from p2pmarket.datadir import DataDirLock, DataDirLocked
lock = DataDirLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
try:
    DataDirLock(Path(sys.argv[1])).acquire()
    print("second-acquired", flush=True)
except DataDirLocked:
    print("second-refused", flush=True)
sys.stdin.readline()
lock.release()
"""

TRY_LOCK = """
import sys
from pathlib import Path
from p2pmarket.datadir import DataDirLock, DataDirLocked
try:
    DataDirLock(Path(sys.argv[1])).acquire()
except DataDirLocked as exc:
    print(exc, flush=True)
    sys.exit(3)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    assert proc.stdout.readline().strip() == "second-refused"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


def test_resolve_precedence(tmp_path: Path) -> None:
    env = {"P2PMARKET_HOME": str(tmp_path / "from-env")}
    assert resolve_datadir(str(tmp_path / "cli"), env=env) == tmp_path / "cli"
    assert resolve_datadir(None, env=env) == tmp_path / "from-env"
    assert resolve_datadir(None, env={}) == Path(platformdirs.user_data_dir("p2pmarket"))
    assert resolve_datadir(None, env={"P2PMARKET_HOME": ""}) == resolve_datadir(None, env={})


def test_resolve_expands_and_absolutises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert resolve_datadir("~/node", env={}) == tmp_path / "node"
    assert resolve_datadir("rel", env={}) == tmp_path / "rel"
    assert resolve_datadir(None, env={"P2PMARKET_HOME": "~/x"}) == tmp_path / "x"
    monkeypatch.setenv("P2PMARKET_HOME", "~/y")
    assert resolve_datadir(None) == tmp_path / "y"


def test_lock_writes_pid_and_release_unlinks(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path / "dd")
    with lock:
        assert lock.held
        assert (tmp_path / "dd" / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(DataDirLocked, match=f"pid {os.getpid()}"):
            DataDirLock(tmp_path / "dd").acquire()
    assert not lock.held
    assert not (tmp_path / "dd" / LOCK_FILE).exists()
    lock.release()  # idempotent
    with DataDirLock(tmp_path / "dd"):
        pass


def test_second_process_refused(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    with pytest.raises(DataDirLocked) as info:
        DataDirLock(tmp_path).acquire()
    assert info.value.pid == holder.pid
    assert str(info.value) == (
        f"data dir {tmp_path} is in use by another p2pmarket process (pid {holder.pid})"
    )
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(timeout=10) == 0
    with DataDirLock(tmp_path):
        pass


def test_lock_released_when_holder_killed(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert (tmp_path / LOCK_FILE).exists()  # stale file left behind; only the flock matters
    with DataDirLock(tmp_path) as lock:
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        assert lock.held


def test_child_refused_while_we_hold(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        result = subprocess.run(
            [sys.executable, "-c", TRY_LOCK, str(tmp_path)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=30,
        )
    assert result.returncode == 3, result.stderr
    assert f"(pid {os.getpid()})" in result.stdout
