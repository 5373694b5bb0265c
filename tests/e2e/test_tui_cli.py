"""`p2pmarket tui` without a running node: a readable hint and exit 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pmarket", "tui", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_no_node_on_datadir(tmp_path: Path) -> None:
    proc = run("--datadir", str(tmp_path))
    assert proc.returncode == 1
    assert "no node is running" in proc.stderr and "p2pmarket run --datadir" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1


def test_missing_datadir_is_not_created(tmp_path: Path) -> None:
    proc = run("--datadir", str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1
    assert f"p2pmarket run --datadir {tmp_path / 'nowhere'}" in proc.stderr
    assert not (tmp_path / "nowhere").exists()


def test_stale_api_files(tmp_path: Path) -> None:
    (tmp_path / "api.cookie").write_text("token\n")
    (tmp_path / "api.url").write_text("http://127.0.0.1:9\n")  # nothing listens there
    proc = run("--datadir", str(tmp_path))
    assert proc.returncode == 1
    assert "no node answers" in proc.stderr and "p2pmarket run --datadir" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_api_needs_cookie() -> None:
    proc = run("--api", "http://127.0.0.1:9")
    assert proc.returncode == 1 and "--cookie" in proc.stderr
