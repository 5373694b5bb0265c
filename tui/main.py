"""`p2pmarket tui`: find the node (data dir, or `--api URL --cookie FILE`), check it answers,
then run the app with logging sent to a file so nothing reaches stdout/stderr while it runs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from p2pmarket.client import Client, ClientError
from p2pmarket.datadir import LOG_DIR, resolve_datadir
from tui.format import describe_error

log = logging.getLogger(__name__)
LOG_FILE = "tui.log"


def _fail(message: str) -> int:
    print(f"p2pmarket: error: {message}", file=sys.stderr)
    return 1


def locate(args: argparse.Namespace) -> tuple[str, str, Path | None, str]:
    """(URL, token, data dir or None, how to start a node) from the parsed arguments."""
    if args.api:
        if not args.cookie:
            raise ClientError("--api needs --cookie FILE (the node's api.cookie)")
        try:
            token = Path(args.cookie).expanduser().read_text().strip()
        except OSError as exc:
            raise ClientError(f"cannot read the cookie {args.cookie}: {exc}") from None
        return args.api, token, None, "start the node, then check --api and --cookie"
    from p2pmarket.client.transport import read_datadir
    datadir = resolve_datadir(args.datadir)
    hint = f"start it with `p2pmarket run --datadir {datadir}` (or `p2pmarket devnet`)"
    url, token = read_datadir(datadir)
    return url, token, datadir, hint


async def _probe(url: str, token: str) -> None:
    async with Client(url, token, timeout=5) as client:
        await client.get_status()


def _log_to_file(datadir: Path | None) -> Path:
    """Send all logging to a file for the app's lifetime (stderr handlers leave the root)."""
    folder = datadir / LOG_DIR if datadir else Path(tempfile.gettempdir())
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / LOG_FILE
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):
            root.removeHandler(handler)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return path


def run_cli(args: argparse.Namespace) -> int:
    try:
        url, token, datadir, hint = locate(args)
    except ClientError as exc:
        return _fail(str(exc))
    try:
        asyncio.run(_probe(url, token))
    except ClientError as exc:
        where = f" on {datadir}" if datadir else f" at {url}"
        return _fail(f"no node answers{where}: {describe_error(exc)}\n{hint}")
    path = _log_to_file(datadir)
    from tui.app import make_app
    client = Client(url, token)
    client.datadir = datadir  # re-read the token and URL when the node restarts
    app = make_app(client)
    app.run()
    # a crash in the app is a traceback printed by Textual and return_code 1: exit with it
    code = app.return_code or 0
    if code:
        log.error("tui stopped on an error (exit %d)", code)
    log.info("tui exited (log: %s)", path)
    return code
