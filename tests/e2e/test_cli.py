"""The `p2pmarket` command as a user runs it: real processes, a private data dir.

stdin is not a terminal unless a test gives the process a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import base_env

TIMEOUT = 60
PASSPHRASE = "correct horse battery staple"

Cli = Callable[..., subprocess.CompletedProcess[str]]
QUIET_INIT = ["init", "--no-show-mnemonic"]  # stdin is no terminal: the words cannot be shown


def init_cli(cli: Cli, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return cli(*QUIET_INIT, *args, **kwargs)

HOLD_LOCK = """
import sys
from pathlib import Path
from p2pmarket.datadir import DataDirLock
with DataDirLock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""

# stands in for node/runner.py: records what the CLI handed it and exits with a chosen code
FAKE_RUNNER = """
import json, logging, os
from pathlib import Path

def run_node(datadir, config, keystore):
    logging.getLogger("node.runner").info("fake node running")
    Path(os.environ["FAKE_RUNNER_OUT"]).write_text(json.dumps({
        "datadir": str(datadir),
        "dht_port": config.dht_port,
        "api_port": config.api_port,
        "bootstrap": list(config.bootstrap),
        "log_level": config.log_level,
        "peer_id": keystore.identity.peer_id,
        "insecure": keystore.insecure,
    }))
    return 7
"""


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Run `python -m p2pmarket ARGS` in tmp_path with P2PMARKET_HOME inside it."""

    def run(
        *args: str, env: dict[str, str] | None = None, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        full_env = base_env(tmp_path / "home") if env is None else dict(env)
        full_env.update(extra)
        return subprocess.run(
            [sys.executable, "-m", "p2pmarket", *args],
            cwd=tmp_path,
            env=full_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )

    return run


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_help_lists_every_verb(cli: Cli) -> None:
    result = cli("--help")
    assert result.returncode == 0
    for verb in ("init", "id", "run"):
        assert f"    {verb} " in result.stdout


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "p2pmarket 0.1.0"


def test_usage_error_exits_2(cli: Cli) -> None:
    assert cli().returncode == 2
    assert cli("run", "--dht-port", "nope").returncode == 2


def test_init_then_id(cli: Cli, tmp_path: Path) -> None:
    datadir = tmp_path / "node"
    init = init_cli(cli, "--datadir", str(datadir), "--insecure-no-passphrase")
    assert init.returncode == 0, init.stderr
    peer_id = init.stdout.splitlines()[0]
    assert peer_id.startswith("12D3KooW")

    ident = cli("id", "--datadir", str(datadir))
    assert ident.returncode == 0, ident.stderr
    assert ident.stdout.strip() == peer_id

    assert (datadir / "keystore").stat().st_mode & 0o077 == 0
    assert (datadir / "peer_id").stat().st_mode & 0o777 == 0o644
    for name in ("config.toml", "node.db"):
        assert (datadir / name).is_file()
    assert not (datadir / "node.lock").exists()


def test_id_without_peer_id_file_asks_keystore(cli: Cli, tmp_path: Path) -> None:
    init = init_cli(cli, "--datadir", str(tmp_path / "n"), P2PMARKET_PASSPHRASE=PASSPHRASE)
    assert init.returncode == 0, init.stderr
    (tmp_path / "n" / "peer_id").unlink()

    locked_out = cli("id", "--datadir", str(tmp_path / "n"))
    assert locked_out.returncode == 1
    assert "P2PMARKET_PASSPHRASE" in locked_out.stderr

    ident = cli("id", "--datadir", str(tmp_path / "n"), P2PMARKET_PASSPHRASE=PASSPHRASE)
    assert ident.returncode == 0, ident.stderr
    assert ident.stdout.strip() == init.stdout.splitlines()[0]


def test_home_env_is_the_default_datadir(cli: Cli, tmp_path: Path) -> None:
    init = init_cli(cli, "--insecure-no-passphrase")
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "home" / "keystore").is_file()
    assert cli("id").stdout.strip() == init.stdout.splitlines()[0]


def test_second_init_refuses_and_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    datadir = tmp_path / "node"
    assert init_cli(cli, "--datadir", str(datadir), "--insecure-no-passphrase").returncode == 0
    before = snapshot(datadir)

    again = init_cli(cli, "--datadir", str(datadir), "--insecure-no-passphrase")
    assert again.returncode == 1
    assert again.stdout == ""
    assert "already initialised" in again.stderr
    assert snapshot(datadir) == before


def test_wrong_passphrase_exit_2_one_line_nothing_changed(cli: Cli, tmp_path: Path) -> None:
    datadir = tmp_path / "node"
    real_kdf = base_env(tmp_path / "home", fast_kdf=False)  # the Argon2id cost a user gets
    init = init_cli(cli, "--datadir", str(datadir), env=real_kdf, P2PMARKET_PASSPHRASE=PASSPHRASE)
    assert init.returncode == 0, init.stderr
    before = snapshot(datadir)
    names_before = sorted(p.name for p in datadir.iterdir())

    result = cli("run", "--datadir", str(datadir), P2PMARKET_PASSPHRASE="not it")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "wrong passphrase" in lines[0]
    assert lines[0].startswith("p2pmarket: error: ")
    assert snapshot(datadir) == before
    assert sorted(p.name for p in datadir.iterdir()) == names_before


def test_init_without_passphrase_source_refuses(cli: Cli, tmp_path: Path) -> None:
    datadir = tmp_path / "node"
    result = init_cli(cli, "--datadir", str(datadir))
    assert result.returncode == 1
    assert "P2PMARKET_PASSPHRASE" in result.stderr
    assert "--insecure-no-passphrase" in result.stderr
    assert "Traceback" not in result.stderr
    assert not datadir.exists()  # not even the directory: nothing was left behind


@pytest.mark.parametrize("verb", ["run", "id"])
def test_uninitialised_says_init(cli: Cli, tmp_path: Path, verb: str) -> None:
    datadir = tmp_path / "empty"
    result = cli(verb, "--datadir", str(datadir))
    assert result.returncode == 1
    assert f"p2pmarket init --datadir {datadir}" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not datadir.exists()


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    procs: list[subprocess.Popen[str]] = []

    def hold(datadir: Path) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(datadir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=base_env(tmp_path / "home"),
        )
        procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert ready and proc.stdout.readline().strip() == "locked"

    yield hold
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


def test_run_refuses_locked_datadir(
    cli: Cli, tmp_path: Path, lock_holder: Callable[[Path], None]
) -> None:
    datadir = tmp_path / "node"
    assert init_cli(cli, "--datadir", str(datadir), "--insecure-no-passphrase").returncode == 0
    lock_holder(datadir)
    result = cli("run", "--datadir", str(datadir))
    assert result.returncode == 1
    assert "in use" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_init_refuses_locked_datadir(
    cli: Cli, tmp_path: Path, lock_holder: Callable[[Path], None]
) -> None:
    datadir = tmp_path / "node"
    lock_holder(datadir)
    result = init_cli(cli, "--datadir", str(datadir), "--insecure-no-passphrase")
    assert result.returncode == 1
    assert "in use" in result.stderr
    assert not (datadir / "keystore").exists()


def test_run_hands_config_and_keystore_to_node_runner(cli: Cli, tmp_path: Path) -> None:
    datadir = tmp_path / "node"
    init = init_cli(cli, "--datadir", str(datadir), "--insecure-no-passphrase")
    assert init.returncode == 0, init.stderr
    fake = tmp_path / "fake"
    (fake / "node").mkdir(parents=True)
    (fake / "node" / "__init__.py").write_text("")
    (fake / "node" / "runner.py").write_text(FAKE_RUNNER)
    out = tmp_path / "runner.json"
    env = base_env(tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join([str(fake), env["PYTHONPATH"]])
    (datadir / "config.toml").write_text("dht_port = 9000\napi_port = 9001\nsurprise = 1\n")

    result = cli(
        "run", "--datadir", str(datadir), "--api-port", "9100",
        "--bootstrap", "127.0.0.1:7000", "--bootstrap", "127.0.0.1:7001",
        env=env, FAKE_RUNNER_OUT=str(out), P2PMARKET_DHT_PORT="9002",
    )  # fmt: skip

    assert result.returncode == 7, result.stderr
    seen = json.loads(out.read_text())
    assert seen == {
        "datadir": str(datadir),
        "dht_port": 9002,  # env beats file
        "api_port": 9100,  # CLI beats file
        "bootstrap": ["127.0.0.1:7000", "127.0.0.1:7001"],
        "log_level": "INFO",
        "peer_id": init.stdout.splitlines()[0],
        "insecure": True,
    }
    assert "unknown key 'surprise'" in result.stderr
    assert "this node's keystore has no passphrase" in result.stderr
    log_text = (datadir / "logs" / "node.log").read_text()
    for expected in ("unknown key 'surprise'", "no passphrase", "fake node running"):
        assert expected in log_text
    assert not (datadir / "node.lock").exists()


PROMPT = re.compile(rb"assphrase[^\r\n]*: ")


def run_on_tty(
    args: list[str], typed: list[str], cwd: Path, env: dict[str, str]
) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin/stdout/stderr, answering each passphrase
    prompt with the next string; returns the exit code and the transcript.

    A new session, so the child has no controlling terminal and getpass uses the pty on stdin
    rather than whatever terminal runs pytest.
    """
    main_fd, sub_fd = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pmarket", *args],
        cwd=cwd, env=env, stdin=sub_fd, stdout=sub_fd, stderr=sub_fd, start_new_session=True,
    )  # fmt: skip
    os.close(sub_fd)
    out = b""
    pending = list(typed)
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main_fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main_fd, 4096)
                except OSError:  # EIO: every holder of the terminal's other end is gone
                    chunk = b""
                if not chunk:
                    break
                out += chunk
            if pending and len(PROMPT.findall(out)) > len(typed) - len(pending):
                os.write(main_fd, pending.pop(0).encode() + b"\n")
        return proc.wait(timeout=TIMEOUT), out.decode(errors="replace")
    finally:
        os.close(main_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_passphrase_prompts_on_a_tty(tmp_path: Path) -> None:
    datadir = str(tmp_path / "node")
    env = base_env(tmp_path / "home")

    code, text = run_on_tty([*QUIET_INIT, "--datadir", datadir], ["one", "two"], tmp_path, env)
    assert code == 1, text
    assert "do not match" in text
    assert not (tmp_path / "node" / "keystore").exists()

    typed = [PASSPHRASE, PASSPHRASE]
    code, text = run_on_tty([*QUIET_INIT, "--datadir", datadir], typed, tmp_path, env)
    assert code == 0, text
    assert len(PROMPT.findall(text.encode())) == 2
    assert PASSPHRASE not in text  # not echoed
    assert "12D3KooW" in text

    code, text = run_on_tty(["run", "--datadir", datadir], ["wrong"], tmp_path, env)
    assert code == 2, text
    assert "wrong passphrase" in text
