"""The verbs that keep a node's keys and data safe: showing the 24 words at `init`, `backup`,
`restore` and `passphrase`.

Every check (words, passphrase, backup bytes) runs before the first write; a failure leaves the
data dir as it was. `restore` refuses a data dir that already holds a keystore or a node.db.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from p2pmarket.backup import BackupError, open_backup, write_backup
from p2pmarket.cli.common import (
    PASSPHRASE_ENV,
    CliError,
    Prompt,
    ask,
    in_terminal,
    is_initialised,
    kdf_params,
    keystore_path,
    new_passphrase,
    require_initialised,
    unlock,
    write_peer_id,
)
from p2pmarket.config import write_default_config
from p2pmarket.datadir import (
    CONFIG_FILE,
    DB_FILE,
    RESTORE_FILE,
    DataDirLock,
    ensure_datadir,
    resolve_datadir,
)
from p2pmarket.keystore import Keystore, change_passphrase, create_keystore, open_keystore
from p2pmarket.storage import Database
from p2pmarket.words import BadWords, check_words

log = logging.getLogger(__name__)

NEW_PASSPHRASE_ENV = "P2PMARKET_NEW_PASSPHRASE"
CONFIRM_WORDS = 2  # how many of the 24 words init asks back
CONFIRM_TRIES = 3
Say = Callable[[str], None]

_WARNING = ("These 24 words are your node: its identity, reputation and wallet. Write them on "
            "paper, keep them offline; anyone who has them owns all of it.")


def show_words(words: str, say: Say) -> None:
    say(_WARNING)
    numbered = [f"{i:2}. {w:<10}" for i, w in enumerate(words.split(), 1)]
    for row in range(0, len(numbered), 4):
        say("   " + "  ".join(numbered[row:row + 4]))


def confirm_words(words: str, *, prompt: Prompt, say: Say,
                  choose: Callable[[int], int] = secrets.randbelow) -> None:
    """Ask back CONFIRM_WORDS random words, CONFIRM_TRIES times at most; CliError if never."""
    listed = words.split()
    for _ in range(CONFIRM_TRIES):
        positions: list[int] = []
        while len(positions) < CONFIRM_WORDS:
            p = choose(len(listed))
            if p not in positions:
                positions.append(p)
        answers = [ask(prompt, f"Word #{p + 1}: ").strip().lower() for p in sorted(positions)]
        if answers == [listed[p] for p in sorted(positions)]:
            return
        say("That does not match what you wrote down; look again.")
    raise CliError("the recovery words were not confirmed; nothing was created (run init "
                   "again: it shows new words)")


def check_can_show(no_show: bool, *, terminal: bool | None = None) -> None:
    """CliError when init would have to show the words but has no terminal to do it."""
    if not no_show and not (in_terminal() if terminal is None else terminal):
        raise CliError("init shows your 24 recovery words and asks for two of them back, which "
                       "needs a terminal; in a script pass --no-show-mnemonic and keep a "
                       "backup (`p2pmarket backup --words` or `--out FILE`)")


def words_for_init(no_show: bool, *, prompt: Prompt = input, say: Say | None = None,
                   terminal: bool | None = None) -> str:
    """Fresh words for `init`: shown and confirmed in a terminal, or kept quiet when the user
    (a script) asked not to see them; refused without a terminal otherwise."""
    from p2pmarket.words import new_words

    words = new_words()
    if no_show:
        return words
    check_can_show(no_show, terminal=terminal)
    out = say or (lambda line: print(line, flush=True))
    show_words(words, out)
    confirm_words(words, prompt=prompt, say=out)
    return words


# -- backup -----------------------------------------------------------------------------------


def cmd_backup(args: argparse.Namespace, _stderr: logging.Handler) -> int:
    datadir = resolve_datadir(args.datadir)
    require_initialised(datadir)
    if not args.out and not args.words:
        raise CliError("say what to back up: --out FILE (keys and data) and/or --words")
    keystore, passphrase = unlock(datadir)  # the node may run: no lock, nothing is written
    if args.words:
        print_words(keystore)
    if args.out:
        out = Path(args.out).expanduser().absolute()
        if passphrase is None:
            print("p2pmarket: warning: this keystore has no passphrase, so neither has the "
                  "backup: anyone with the file has your keys", file=sys.stderr)
        info = write_backup(datadir, out, passphrase, peer_id=keystore.identity.peer_id,
                            kdf_params=kdf_params())
        print(f"p2pmarket: wrote {out}: {', '.join(_summary(info.files))}", file=sys.stderr)
    return 0


def print_words(keystore: Keystore) -> None:
    """The 24 words on stdout (the keystore was unlocked with its passphrase, if it has one),
    for `backup --words` and `wallet backup`."""
    if not keystore.words_restore_identity:
        print("p2pmarket: warning: this keystore predates identities derived from the "
              "words: they restore the wallet, not the peer id; keep a backup file too",
              file=sys.stderr)
    print(keystore.mnemonic, flush=True)


def _summary(files: tuple[str, ...]) -> list[str]:
    images = sum(1 for f in files if f.startswith("blobs/"))
    return [f for f in files if not f.startswith("blobs/")] + [f"{images} images"]


# -- restore ----------------------------------------------------------------------------------


def _refuse_used(datadir: Path) -> None:
    if is_initialised(datadir):
        raise CliError(f"data dir {datadir} already holds a keystore; restore into a new one "
                       "(or move it away first)")
    if (datadir / DB_FILE).exists():
        raise CliError(f"data dir {datadir} holds a node.db but no keystore; move it away "
                       "first")


def read_words(words_file: str | None, *, prompt: Prompt = getpass.getpass) -> str:
    """The recovery phrase from a file ('-': stdin), a prompt in a terminal, or stdin."""
    try:
        if words_file == "-" or (words_file is None and not in_terminal()):
            text = sys.stdin.readline()
        elif words_file is not None:
            text = Path(words_file).expanduser().read_text(encoding="utf-8")
        else:
            text = ask(prompt, "Your 24 recovery words (separated by spaces): ")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the recovery words: {exc}") from None
    try:
        return check_words(text)
    except BadWords as exc:
        raise CliError(f"{exc}; nothing was written") from None


def cmd_restore(args: argparse.Namespace, _stderr: logging.Handler) -> int:
    datadir = resolve_datadir(args.datadir)
    _refuse_used(datadir)
    if args.source:
        peer_id = _restore_backup(datadir, Path(args.source).expanduser().absolute())
    else:
        words = read_words(args.words_file)
        passphrase = new_passphrase(insecure=args.insecure_no_passphrase)
        peer_id = _restore_words(datadir, words, passphrase)
    print(peer_id, flush=True)
    print(f"p2pmarket: restored {datadir}; `p2pmarket run` finds your listings, profile and "
          "advert in the network again and rescans the wallet", file=sys.stderr)
    return 0


class _Staged:
    """Files written by a restore, removed again if it fails before the keystore is in place."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def add(self, path: Path) -> Path:
        self.paths.append(path)
        return path

    def undo(self) -> None:
        for path in reversed(self.paths):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
                for suffix in ("-wal", "-shm"):
                    path.with_name(path.name + suffix).unlink(missing_ok=True)


def _restore_words(datadir: Path, words: str, passphrase: str | None) -> str:
    ensure_datadir(datadir)
    staged = _Staged()
    with DataDirLock(datadir):
        _refuse_used(datadir)
        try:
            if not (datadir / CONFIG_FILE).exists():
                write_default_config(staged.add(datadir / CONFIG_FILE))
            Database.open(staged.add(datadir / DB_FILE)).close()
            staged.add(datadir / RESTORE_FILE).write_text("words\n", encoding="ascii")
            keystore = create_keystore(keystore_path(datadir), passphrase,
                                       kdf_params=kdf_params(), mnemonic=words)
        except BaseException:
            staged.undo()
            raise
        _peer_id_file(datadir, keystore.identity.peer_id)
    return keystore.identity.peer_id


def _restore_backup(datadir: Path, source: Path) -> str:
    from p2pmarket.backup import is_protected

    passphrase = None
    if is_protected(source):
        passphrase = os.environ.get(PASSPHRASE_ENV) or None
        if passphrase is None:
            if not in_terminal():
                raise CliError(f"backup {source} is protected: set {PASSPHRASE_ENV} or run in "
                               "a terminal")
            passphrase = ask(getpass.getpass, f"Passphrase of backup {source}: ")
    ensure_datadir(datadir)
    with DataDirLock(datadir):
        _refuse_used(datadir)
        staging = datadir / f".restore-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        staged = _Staged()
        try:
            info = open_backup(source, passphrase, staging)
            keystore = open_keystore(staging / "keystore", passphrase)  # the same passphrase
            for name in info.files:
                if name in ("keystore", CONFIG_FILE):
                    continue
                target = datadir / name
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if not target.exists():
                    os.replace(staging / name, staged.add(target))
            if CONFIG_FILE in info.files and not (datadir / CONFIG_FILE).exists():
                os.replace(staging / CONFIG_FILE, staged.add(datadir / CONFIG_FILE))
            staged.add(datadir / RESTORE_FILE).write_text("backup\n", encoding="ascii")
            os.replace(staging / "keystore", keystore_path(datadir))  # last: now initialised
        except BaseException:
            staged.undo()
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _peer_id_file(datadir, keystore.identity.peer_id)
    return keystore.identity.peer_id


def _peer_id_file(datadir: Path, peer_id: str) -> None:
    try:
        write_peer_id(datadir, peer_id)
    except OSError as exc:  # a cache of the public id; `id` falls back to the keystore
        log.warning("could not write the peer id file: %s", exc)


# -- passphrase -------------------------------------------------------------------------------


def cmd_passphrase(args: argparse.Namespace, _stderr: logging.Handler) -> int:
    datadir = resolve_datadir(args.datadir)
    require_initialised(datadir)
    path = keystore_path(datadir)
    _, old = unlock(datadir)  # a wrong passphrase stops here, before anything is written
    new = new_passphrase(insecure=args.insecure_no_passphrase, env_name=NEW_PASSPHRASE_ENV)
    change_passphrase(path, old, new, kdf_params=kdf_params())
    print(f"p2pmarket: changed the passphrase of {path}"
          + ("" if new is not None else " (it now has none)"), file=sys.stderr)
    return 0


# -- parser -----------------------------------------------------------------------------------


def add_verbs(verbs: argparse._SubParsersAction,  # type: ignore[type-arg]
              add_datadir: Callable[[argparse.ArgumentParser], None]) -> None:
    backup = verbs.add_parser("backup", help="write an encrypted backup (keys, node.db, your "
                                             "images) or show the 24 recovery words; works "
                                             "while the node runs")
    add_datadir(backup)
    backup.add_argument("--out", metavar="FILE", help="write the backup to FILE (never "
                                                      "overwritten)")
    backup.add_argument("--words", action="store_true",
                        help="print the 24 recovery words on stdout")
    backup.set_defaults(func=cmd_backup)

    restore = verbs.add_parser("restore", help="recreate a node from its 24 words or from a "
                                               "backup file, in a new data dir")
    add_datadir(restore)
    source = restore.add_mutually_exclusive_group()
    source.add_argument("--from", dest="source", metavar="FILE",
                        help="a file written by `p2pmarket backup --out` (keys, orders, "
                             "conversations)")
    source.add_argument("--words-file", metavar="FILE",
                        help="read the 24 words from FILE ('-': stdin); default: ask in a "
                             "terminal, else read stdin")
    restore.add_argument("--insecure-no-passphrase", action="store_true",
                         help="with words: store the keys without a passphrase "
                              "(development only)")
    restore.set_defaults(func=cmd_restore)

    change = verbs.add_parser("passphrase", help="change the keystore's passphrase "
                                                 f"(new one from ${NEW_PASSPHRASE_ENV} or asked)")
    add_datadir(change)
    change.add_argument("--insecure-no-passphrase", action="store_true",
                        help="remove the passphrase (development only)")
    change.set_defaults(func=cmd_passphrase)


__all__ = ["BackupError", "add_verbs", "cmd_backup", "cmd_passphrase", "cmd_restore",
           "check_can_show", "print_words", "words_for_init"]
