"""Helpers behind the CLI verbs: passphrase sources, the plain peer-id file, logging setup.

Nothing here prints; the CLI decides what the user sees. Failures are `CliError` (exit 1).
"""

from __future__ import annotations

import getpass
import logging
import logging.handlers
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from p2pmarket.datadir import LOG_DIR
from p2pmarket.identity import PeerIdError, public_from_peer_id
from p2pmarket.keystore import (
    DEFAULT_KDF,
    KEYSTORE_FILE,
    TEST_KDF,
    KdfParams,
    Keystore,
    PassphraseRequired,
    open_keystore,
)

log = logging.getLogger(__name__)

PASSPHRASE_ENV = "P2PMARKET_PASSPHRASE"
# test-only: makes `init` write a keystore with trivially cheap Argon2id parameters so the
# subprocess tests stay fast; a real node must never run with it (init warns loudly if set)
FAST_KDF_ENV = "P2PMARKET_TEST_FAST_KDF"
PEER_ID_FILE = "peer_id"
LOG_FILE = "node.log"
LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 5
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

Prompt = Callable[[str], str]


class CliError(Exception):
    """A user-facing failure of a CLI verb; the message is one line."""


def keystore_path(datadir: Path) -> Path:
    return datadir / KEYSTORE_FILE


def is_initialised(datadir: Path) -> bool:
    """A data dir is initialised once it has a keystore; the keystore is the node's identity."""
    return keystore_path(datadir).exists()


def require_initialised(datadir: Path) -> None:
    if not is_initialised(datadir):
        raise CliError(
            f"data dir {datadir} is not initialised; run `p2pmarket init --datadir {datadir}` first"
        )


def kdf_params(env: Mapping[str, str] | None = None) -> KdfParams:
    environ = os.environ if env is None else env
    if environ.get(FAST_KDF_ENV, "") not in ("", "0"):
        log.warning("%s is set: the keystore gets test-only weak Argon2id parameters", FAST_KDF_ENV)
        return TEST_KDF
    return DEFAULT_KDF


def _env_passphrase(env: Mapping[str, str] | None, name: str = PASSPHRASE_ENV) -> str | None:
    environ = os.environ if env is None else env
    return environ.get(name) or None  # empty counts as unset, as for config


def in_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # stdin closed
        return False


def new_passphrase(
    *,
    insecure: bool,
    env: Mapping[str, str] | None = None,
    prompt: Prompt = getpass.getpass,
    interactive: bool | None = None,
    env_name: str = PASSPHRASE_ENV,
) -> str | None:
    """The passphrase for a new keystore; None only when the user opted out with `insecure`."""
    from_env = _env_passphrase(env, env_name)
    if insecure:
        if from_env is not None:
            log.warning("--insecure-no-passphrase given: ignoring %s", env_name)
        return None
    if from_env is not None:
        return from_env
    if not (in_terminal() if interactive is None else interactive):
        raise CliError(
            f"no passphrase: set {env_name}, run in a terminal to be asked, "
            "or pass --insecure-no-passphrase (development only)"
        )
    first = ask(prompt, "New keystore passphrase: ")
    if not first:
        raise CliError("empty passphrase; pass --insecure-no-passphrase to go without one")
    if ask(prompt, "Repeat passphrase: ") != first:
        raise CliError("the passphrases do not match; nothing was created")
    return first


def unlock_keystore(
    datadir: Path,
    *,
    env: Mapping[str, str] | None = None,
    prompt: Prompt = getpass.getpass,
    interactive: bool | None = None,
) -> Keystore:
    """Open the data dir's keystore: no passphrase if it has none, else env, else one prompt."""
    return unlock(datadir, env=env, prompt=prompt, interactive=interactive)[0]


def unlock(
    datadir: Path,
    *,
    env: Mapping[str, str] | None = None,
    prompt: Prompt = getpass.getpass,
    interactive: bool | None = None,
) -> tuple[Keystore, str | None]:
    """`unlock_keystore`, also returning the passphrase that opened it (None: it has none)."""
    path = keystore_path(datadir)
    given = _env_passphrase(env)
    try:
        # an insecure keystore opens with None; a protected one tells us it needs more
        keystore = open_keystore(path, given)
        return keystore, None if keystore.insecure else given
    except PassphraseRequired:
        if not (in_terminal() if interactive is None else interactive):
            raise CliError(
                f"keystore {path} is protected: set {PASSPHRASE_ENV} or run in a terminal"
            ) from None
    given = ask(prompt, f"Passphrase for {path}: ")
    return open_keystore(path, given), given


def ask(prompt: Prompt, text: str) -> str:
    try:
        return prompt(text)
    except EOFError:
        raise CliError("no passphrase entered") from None


def write_peer_id(datadir: Path, peer_id: str) -> None:
    """Write `<datadir>/peer_id` (mode 0644) atomically: the public name, readable without keys."""
    path = datadir / PEER_ID_FILE
    tmp = path.with_name(f".{PEER_ID_FILE}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        try:
            os.fchmod(fd, 0o644)  # the umask may have taken bits away
            os.write(fd, f"{peer_id}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_peer_id(datadir: Path) -> str | None:
    """The peer id from `<datadir>/peer_id`, or None when the file is missing or not a peer id."""
    path = datadir / PEER_ID_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s (%s); asking the keystore instead", path, exc)
        return None
    try:
        public_from_peer_id(text)
    except PeerIdError:
        log.warning("%s does not hold a peer id; asking the keystore instead", path)
        return None
    return text


class StderrFormatter(logging.Formatter):
    """`p2pmarket: warning: ...` lines for the short-lived verbs, like the CLI's own errors."""

    def format(self, record: logging.LogRecord) -> str:
        return f"p2pmarket: {record.levelname.lower()}: {record.getMessage()}"


def install_stderr_logging(level: int = logging.WARNING) -> logging.Handler:
    """Show library warnings (config, keystore) on stderr; returns the handler to remove later."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StderrFormatter())
    handler.setLevel(level)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return handler


def setup_node_logging(
    datadir: Path, level: str, stderr: logging.Handler, replay: list[str]
) -> logging.Handler:
    """Turn the CLI's stderr handler into the node's and add `<datadir>/logs/node.log` (rotated).

    `replay` are warnings already shown on stderr (config) that the log file should keep too.
    Returns the file handler, for `remove_handler` when the node stops.
    """
    log_dir = datadir / LOG_DIR
    log_dir.mkdir(mode=0o700, exist_ok=True)
    formatter = logging.Formatter(_LOG_FORMAT)
    file = logging.handlers.RotatingFileHandler(
        log_dir / LOG_FILE, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    file.setFormatter(formatter)
    source = logging.getLogger("p2pmarket.config")
    for message in replay:
        file.handle(source.makeRecord(source.name, logging.WARNING, "", 0, message, (), None))
    stderr.setFormatter(formatter)
    stderr.setLevel(logging.NOTSET)
    root = logging.getLogger()
    root.addHandler(file)
    root.setLevel(level)
    return file


def remove_handler(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
