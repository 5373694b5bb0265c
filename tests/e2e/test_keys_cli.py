"""The 24 words, backups, restore and passphrase changes as a user runs them: real processes.

Each failure (no terminal, wrong answers, a bad checksum, a wrong passphrase, a truncated or
altered backup) is one line on stderr and leaves the disk as it was.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pmarket.words import identity_from_words
from tests.support.processes import base_env

TIMEOUT = 60
PASSPHRASE = "correct horse battery staple"
PROMPT = re.compile(rb"(assphrase[^\r\n]*|Word #\d+): ")
SHOWN = re.compile(r"\b(\d{1,2})\. ([a-z]+)\b")

Answer = Callable[[str, str], str]  # (prompt line, transcript so far) -> what to type


def on_tty(args: list[str], answer: Answer, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal, typing `answer(prompt, transcript)` at each prompt."""
    main_fd, sub_fd = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "p2pmarket", *args], cwd=cwd, env=env,
                            stdin=sub_fd, stdout=sub_fd, stderr=sub_fd, start_new_session=True)
    os.close(sub_fd)
    out, answered = b"", 0
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main_fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main_fd, 4096)
                except OSError:  # EIO: the child is gone
                    chunk = b""
                if not chunk:
                    break
                out += chunk
            prompts = PROMPT.findall(out)
            if len(prompts) > answered:
                text = out.decode(errors="replace")
                os.write(main_fd, answer(prompts[answered].decode(), text).encode() + b"\n")
                answered += 1
        return proc.wait(timeout=TIMEOUT), out.decode(errors="replace")
    finally:
        os.close(main_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)


def shown_words(transcript: str) -> list[str]:
    found = dict(SHOWN.findall(transcript))
    return [found[str(i)] for i in range(1, 25)]


def run(args: list[str], env: dict[str, str], stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pmarket", *args], env=env, input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT)


def files(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("p2pmarket: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path / "home") | {"P2PMARKET_PASSPHRASE": PASSPHRASE}


def test_init_without_a_terminal_needs_the_flag(tmp_path: Path, env: dict[str, str]) -> None:
    result = run(["init", "--datadir", str(tmp_path / "n")], env)
    assert result.returncode == 1
    one_error_line(result, "--no-show-mnemonic", "backup")
    assert not (tmp_path / "n").exists()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_init_shows_the_words_once_and_asks_two_back(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    datadir = tmp_path / "n"

    def wrong(prompt: str, transcript: str) -> str:
        return PASSPHRASE if "assphrase" in prompt else "zoo"

    code, text = on_tty(["init", "--datadir", str(datadir)], wrong, tmp_path, env)
    assert code == 1, text
    assert "not confirmed; nothing was created" in text
    assert text.count("Word #") == 6  # two words, three tries
    assert not (datadir / "keystore").exists()

    def right(prompt: str, transcript: str) -> str:
        if "assphrase" in prompt:
            return PASSPHRASE
        n = int(re.search(r"Word #(\d+)", prompt).group(1))  # type: ignore[union-attr]
        return shown_words(transcript)[n - 1]

    code, text = on_tty(["init", "--datadir", str(datadir)], right, tmp_path, env)
    assert code == 0, text
    words = shown_words(text)
    peer_id = identity_from_words(" ".join(words)).peer_id
    assert peer_id in text
    assert text.count(f" 1. {words[0]}") == 1  # shown once
    assert (datadir / "keystore").exists()


def test_words_restore_the_same_node(tmp_path: Path, env: dict[str, str]) -> None:
    first = tmp_path / "first"
    init = run(["init", "--no-show-mnemonic", "--datadir", str(first)], env)
    assert init.returncode == 0, init.stderr
    assert "backup --words" in init.stderr
    peer_id = init.stdout.split()[0]
    words = run(["backup", "--words", "--datadir", str(first)], env)
    assert words.returncode == 0, words.stderr
    assert len(words.stdout.split()) == 24

    again = tmp_path / "again"
    restored = run(["restore", "--words-file", "-", "--datadir", str(again)], env,
                   stdin=words.stdout)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.split()[0] == peer_id
    assert run(["id", "--datadir", str(again)], env).stdout.strip() == peer_id
    assert (again / "restore.pending").exists()  # the node looks for its records at start
    refused = run(["restore", "--words-file", "-", "--datadir", str(again)], env,
                  stdin=words.stdout)
    assert refused.returncode == 1
    one_error_line(refused, "already holds a keystore")


@pytest.mark.parametrize(("change", "needle"), [
    (lambda w: w[:-1] + [w[0] if w[-1] != w[0] else w[1]], "bad checksum"),
    (lambda w: w[:-1], "has 23 words"),
    (lambda w: [*w[:5], "bitcoinz", *w[6:]], "word 6 ('bitcoinz')"),
])
def test_bad_words_one_line_nothing_written(tmp_path: Path, env: dict[str, str],
                                            change: Callable[[list[str]], list[str]],
                                            needle: str) -> None:
    from p2pmarket.words import new_words

    target = tmp_path / "target"
    result = run(["restore", "--words-file", "-", "--datadir", str(target)], env,
                 stdin=" ".join(change(new_words().split())))
    assert result.returncode == 1
    one_error_line(result, needle, "nothing was written")
    assert files(target) == {}


@pytest.fixture
def node_with_backup(tmp_path: Path, env: dict[str, str]) -> tuple[Path, Path, str]:
    datadir = tmp_path / "node"
    init = run(["init", "--no-show-mnemonic", "--datadir", str(datadir)], env)
    assert init.returncode == 0, init.stderr
    out = tmp_path / "node.p2pbak"
    made = run(["backup", "--out", str(out), "--datadir", str(datadir)], env)
    assert made.returncode == 0, made.stderr
    assert out.exists()
    return datadir, out, init.stdout.split()[0]


def test_backup_file_restores_keys_and_data(tmp_path: Path, env: dict[str, str],
                                            node_with_backup: tuple[Path, Path, str]) -> None:
    datadir, out, peer_id = node_with_backup
    target = tmp_path / "target"
    restored = run(["restore", "--from", str(out), "--datadir", str(target)], env)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.split()[0] == peer_id
    assert (target / "node.db").read_bytes()[:16] == b"SQLite format 3\x00"
    assert (target / "config.toml").read_text() == (datadir / "config.toml").read_text()
    assert not [p for p in target.iterdir() if p.name.startswith(".restore-")]


def test_backup_refuses_a_wrong_passphrase(tmp_path: Path, env: dict[str, str],
                                           node_with_backup: tuple[Path, Path, str]) -> None:
    datadir, _, _ = node_with_backup
    out = tmp_path / "second.p2pbak"
    result = run(["backup", "--out", str(out), "--datadir", str(datadir)],
                 env | {"P2PMARKET_PASSPHRASE": "nope"})
    assert result.returncode == 2
    one_error_line(result, "wrong passphrase")
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "passphrase"])
def test_a_bad_backup_one_line_nothing_written(tmp_path: Path, env: dict[str, str],
                                               node_with_backup: tuple[Path, Path, str],
                                               damage: str) -> None:
    _, out, _ = node_with_backup
    data = bytearray(out.read_bytes())
    use_env = env
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    elif damage == "flipped":
        data[len(data) // 2] ^= 1
    else:
        use_env = env | {"P2PMARKET_PASSPHRASE": "nope"}
    bad = tmp_path / "bad.p2pbak"
    bad.write_bytes(bytes(data))
    target = tmp_path / "target"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    before = files(target)
    result = run(["restore", "--from", str(bad), "--datadir", str(target)], use_env)
    assert result.returncode == (2 if damage == "passphrase" else 1)
    one_error_line(result, {"truncated": "truncated", "flipped": "damaged",
                            "passphrase": "wrong passphrase"}[damage])
    assert files(target) == before
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_passphrase_change_is_atomic(tmp_path: Path, env: dict[str, str]) -> None:
    datadir = tmp_path / "n"
    assert run(["init", "--no-show-mnemonic", "--datadir", str(datadir)], env).returncode == 0
    before = (datadir / "keystore").read_bytes()
    wrong = run(["passphrase", "--datadir", str(datadir)],
                env | {"P2PMARKET_PASSPHRASE": "nope", "P2PMARKET_NEW_PASSPHRASE": "new one"})
    assert wrong.returncode == 2
    one_error_line(wrong, "wrong passphrase")
    assert (datadir / "keystore").read_bytes() == before

    changed = run(["passphrase", "--datadir", str(datadir)],
                  env | {"P2PMARKET_NEW_PASSPHRASE": "new one"})
    assert changed.returncode == 0, changed.stderr
    assert run(["backup", "--words", "--datadir", str(datadir)], env).returncode == 2
    opened = run(["backup", "--words", "--datadir", str(datadir)],
                 env | {"P2PMARKET_PASSPHRASE": "new one"})
    assert opened.returncode == 0 and len(opened.stdout.split()) == 24
    assert sorted(p.name for p in datadir.iterdir() if p.name.startswith(".")) == []
