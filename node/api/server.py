"""The API server: the aiohttp app on loopback, its cookie files, and the node it serves.

`ApiServer` owns an `AppRunner` + `TCPSite` on the node's loop. Each start writes a new random
token to `<datadir>/api.cookie` and the base URL to `<datadir>/api.url` (both 0600, replaced
atomically; the URL first, so whoever reads the cookie finds the matching URL); a clean stop
removes both. The server can start before the node and `attach` it later: until then, node
routes answer 503 `starting` and the status says what is still starting.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from aiohttp import web

from node.api import routes
from node.api.context import STATE, ApiState
from node.api.guard import ENDPOINTS, guard_middleware
from node.api.hub import EventHub
from node.api.openapi import build_openapi
from node.api.problems import problem_middleware
from node.api.registry import Endpoint, register
from p2pmarket.config import is_loopback
from p2pmarket.datadir import COOKIE_FILE

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

URL_FILE = "api.url"
MAX_BODY = 4 * 1024 * 1024  # a 2 MB image, base64, fits
SHUTDOWN_TIMEOUT = 3.0
ROUTES = [routes.node.routes, routes.events.routes, routes.listings.routes,
          routes.profiles.routes, routes.offers.routes, routes.orders.routes,
          routes.messages.routes, routes.moderation.routes, routes.escrow.routes,
          routes.arbiter.routes, routes.records.routes, routes.wallet.routes]


def endpoints() -> list[Endpoint]:
    return [e for r in ROUTES for e in r.endpoints]


async def _on_shutdown(app: web.Application) -> None:
    state = app[STATE]
    state.stopping = True
    state.hub.close()  # ends the event streams, so shutdown need not wait for them
    for task in list(state.background):
        task.cancel()
    await asyncio.gather(*state.background, return_exceptions=True)


def build_app(state: ApiState) -> web.Application:
    app = web.Application(middlewares=[problem_middleware, guard_middleware],
                          client_max_size=MAX_BODY)
    app[STATE] = state
    table = endpoints()
    app[ENDPOINTS] = register(app, table)
    app[routes.node.OPENAPI] = build_openapi(table)
    app.on_shutdown.append(_on_shutdown)
    return app


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


class ApiServer:
    """`async with ApiServer(datadir, port=0) as api:` serves until the block ends."""

    def __init__(self, datadir: Path | None, *, host: str = "127.0.0.1", port: int = 0,
                 stop: asyncio.Event | None = None, peer_id: str | None = None,
                 any_port_if_busy: bool = False) -> None:
        if not is_loopback(host):
            raise ValueError(f"the API listens on loopback only, not {host!r}")
        self.datadir, self.host, self.port = datadir, host, port
        self.any_port_if_busy = any_port_if_busy
        self.state = ApiState(stop=stop or asyncio.Event(), hub=EventHub(),
                              token=secrets.token_urlsafe(32), peer_id=peer_id)
        self.url = ""
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None

    @property
    def token(self) -> str:
        return self.state.token

    @property
    def hub(self) -> EventHub:
        return self.state.hub

    @property
    def cookie_path(self) -> Path | None:
        return None if self.datadir is None else self.datadir / COOKIE_FILE

    async def start(self) -> str:
        """Listen and write the cookie files; returns the base URL."""
        self.app = build_app(self.state)
        runner = web.AppRunner(self.app, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            await self._listen(runner)
        except BaseException:
            await runner.cleanup()
            self._runner = None
            raise
        address = runner.addresses[0]
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{address[1]}"
        if self.datadir is not None:
            write_private(self.datadir / URL_FILE, self.url + "\n")
            write_private(self.datadir / COOKIE_FILE, self.token + "\n")
        log.info("HTTP API on %s/api/v1 (token in %s)", self.url, self.cookie_path)
        return self.url

    async def _listen(self, runner: web.AppRunner) -> None:
        site = web.TCPSite(runner, self.host.strip("[]"), self.port)
        try:
            await site.start()
        except OSError as exc:
            if not (self.any_port_if_busy and self.port and exc.errno == errno.EADDRINUSE):
                raise
            log.warning("API port %d is in use; listening on a free port instead (its URL is "
                        "in %s)", self.port, URL_FILE)
            await web.TCPSite(runner, self.host.strip("[]"), 0).start()

    def attach(self, node: Node) -> None:
        """Serve this node from now on (the server may have started before it)."""
        self.state.node = node
        self.state.peer_id = node.identity.peer_id
        self.hub.attach(node)
        self.state.spawn(self.hub.watch_peers(node))

    async def stop(self) -> None:
        """Remove the cookie files (if still ours), then close connections and streams."""
        self.state.stopping = True
        if self.datadir is not None and self.url:
            for name, mine in ((COOKIE_FILE, self.token), (URL_FILE, self.url)):
                path = self.datadir / name
                if read_text(path) == mine:
                    path.unlink(missing_ok=True)
        if self.state.node is not None:
            self.hub.detach(self.state.node)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
