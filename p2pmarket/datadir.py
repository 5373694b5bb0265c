"""Where a node keeps its files, and the lock that lets one process at a time use them.

Order of choice: `--datadir`, then `P2PMARKET_HOME`, then platformdirs' user data dir.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import platformdirs

log = logging.getLogger(__name__)

APP_NAME = "p2pmarket"
HOME_ENV = "P2PMARKET_HOME"
CONFIG_FILE = "config.toml"
DB_FILE = "node.db"
COOKIE_FILE = "api.cookie"
LOCK_FILE = "node.lock"
LOG_DIR = "logs"
# written by `restore`: the node looks for its own records in the DHT, then deletes it
RESTORE_FILE = "restore.pending"


def resolve_datadir(cli_value: str | None, *, env: Mapping[str, str] | None = None) -> Path:
    """The data dir as an absolute path (not created). Empty values count as unset."""
    environ = os.environ if env is None else env
    raw = cli_value or environ.get(HOME_ENV) or platformdirs.user_data_dir(APP_NAME)
    return Path(raw).expanduser().absolute()


def ensure_datadir(path: Path) -> Path:
    """Create the data dir (mode 0700, private keys live here) if missing; return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class DataDirLocked(Exception):
    """Another process holds the data dir's lock."""

    def __init__(self, datadir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"data dir {datadir} is in use by another p2pmarket process ({holder})")
        self.datadir = datadir
        self.pid = pid


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


class DataDirLock:
    """An exclusive `flock` on `<datadir>/node.lock`, holding our pid.

    The OS drops the lock when the process dies, however it dies; a stale file left behind by
    a killed process is harmless because only the flock counts, never the file's existence.
    """

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self.path = datadir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        ensure_datadir(self.datadir)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise DataDirLocked(self.datadir, _read_pid(self.path)) from None
            except BaseException:
                os.close(fd)
                raise
            # the holder we waited on may have unlinked the file between our open and flock;
            # a lock on an unlinked inode protects nothing, so start over on the new file
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        log.debug("locked data dir %s", self.datadir)

    def release(self) -> None:
        """Unlink the lock file, then drop the lock; safe to call when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # unlink while still locked, so nobody can lock this inode and believe it is valid
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        log.debug("unlocked data dir %s", self.datadir)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
