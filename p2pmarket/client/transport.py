"""The transport under `p2pmarket.client.Client`: one aiohttp session, bearer auth, typed decoding,
problem+json turned into `ApiError`, and where a data dir keeps the API's URL and token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import msgspec

from p2pmarket.api.schemas import Page
from p2pmarket.datadir import COOKIE_FILE

URL_FILE = "api.url"
PROBLEM_PREFIX = "urn:p2pmarket:problem:"
T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)


class ClientError(Exception):
    """Base of what the client raises."""


class NodeUnreachable(ClientError):
    """No node answers: not running, or the data dir has no API cookie. `sent` is False when
    the request never left (the connection was refused), so repeating it cannot repeat it."""

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class ApiError(ClientError):
    """The node answered with a problem (RFC 9457); branch on `name` or `type`."""

    def __init__(self, status: int, type: str, title: str, detail: str = "",
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))
        self.status, self.type, self.title, self.detail = status, type, title, detail
        self.errors = errors or []

    @property
    def name(self) -> str:
        """`validation` for `urn:p2pmarket:problem:validation`."""
        return self.type.removeprefix(PROBLEM_PREFIX)


class _Problem(msgspec.Struct):
    type: str = "about:blank"
    title: str = ""
    status: int = 0
    detail: str = ""
    errors: list[dict[str, Any]] = []


def read_datadir(datadir: Path | str) -> tuple[str, str]:
    """(base URL, token) of the node running on `datadir`."""
    root = Path(datadir).expanduser()
    try:
        token = (root / COOKIE_FILE).read_text().strip()
        url = (root / URL_FILE).read_text().strip()
    except FileNotFoundError:
        raise NodeUnreachable(f"no node is running on {root} (no {COOKIE_FILE} there); start "
                              f"it with `p2pmarket run --datadir {root}`") from None
    except OSError as exc:
        raise NodeUnreachable(f"cannot read the API cookie in {root}: {exc}") from None
    if not token or not url:
        raise NodeUnreachable(f"the API files in {root} are empty; is the node starting?")
    return url, token


def query_params(query: msgspec.Struct | None) -> list[tuple[str, str]]:
    """A query struct as URL parameters: None left out, lists repeated, bools lowercase."""
    params: list[tuple[str, str]] = []
    if query is None:
        return params
    for key, value in msgspec.to_builtins(query).items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            params.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
    return params


def as_struct(value: S | Mapping[str, Any], kind: type[S]) -> S:
    """Accept a struct or a plain mapping (validated here, before anything is sent)."""
    return value if isinstance(value, kind) else msgspec.convert(value, kind)


IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})


class Transport:
    """Talks to one node: `Transport(url, token)`; use as an async context manager."""

    def __init__(self, url: str, token: str, *, timeout: float = 120.0,
                 session: aiohttp.ClientSession | None = None,
                 restart_wait: float = 0.0) -> None:
        self.url, self.token = url.rstrip("/"), token
        # how long a request waits for a node that is starting or restarting (see `request`);
        # 0 (the CLI): a stopped node is an error at once. Scripts that should carry on across
        # a restart of their node set it (examples/trade.py waits 120 s).
        self.restart_wait = restart_wait
        # set by `Client.from_datadir`: where to re-read the URL and token after a node restart
        self.datadir: Path | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def reread(self) -> bool:
        """After a 401 or a lost connection: re-read `api.url` and `api.cookie` (a restarted
        node has a new token, maybe a new port). True when they changed, so a retry can work."""
        if self.datadir is None:
            return False
        try:
            url, token = read_datadir(self.datadir)
        except NodeUnreachable:
            return False  # stopped, or still starting: the caller's error stands
        url = url.rstrip("/")
        if (url, token) == (self.url, self.token):
            return False
        self.url, self.token = url, token
        return True

    async def request(self, method: str, path: str, *, query: msgspec.Struct | None = None,
                      body: msgspec.Struct | None = None, headers: Mapping[str, str] | None = None,
                      timeout: float | None = None) -> tuple[int, bytes, str]:
        """(status, body, content type) of a successful answer; raises on a problem.

        It waits up to `restart_wait` seconds for a node that is starting (503 `starting`:
        the node refuses before a handler touches anything, so any method may be asked again)
        and, for a client made with `from_datadir`, for one that restarts: a refused
        connection (never sent) or a 401 re-reads the data dir's API files until the new node
        answers. A request whose connection broke after it was sent is asked again only when
        its method is safe to repeat; a POST is never sent twice.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.restart_wait
        pause = 0.1
        while True:
            try:
                return await self._request(method, path, query=query, body=body,
                                           headers=headers, timeout=timeout)
            except ApiError as exc:
                if exc.status == 401 and self.reread():
                    continue  # a new node: its token (a 401 was not acted on)
                if not (exc.status == 503 and exc.name == "starting"):
                    raise
                if loop.time() + pause > deadline:
                    raise
            except NodeUnreachable as exc:
                if exc.sent and method not in IDEMPOTENT:
                    raise  # it may have been carried out before the connection broke
                if self.reread():
                    continue  # the restarted node's URL and token
                if self.datadir is None or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)  # stopped (no API files yet) or starting
            pause = min(1.0, pause * 2)

    async def _request(self, method: str, path: str, *, query: msgspec.Struct | None,
                       body: msgspec.Struct | None, headers: Mapping[str, str] | None,
                       timeout: float | None) -> tuple[int, bytes, str]:
        data = None
        extra = dict(headers or {})
        if method in ("POST", "PUT", "PATCH") or body is not None:
            data = msgspec.json.encode(body) if body is not None else b"{}"
            extra["Content-Type"] = "application/json"
        per_call = aiohttp.ClientTimeout(total=timeout) if timeout is not None else None
        try:
            async with self.session.request(
                    method, f"{self.url}/api/v1{path}", params=query_params(query), data=data,
                    headers=self.headers(extra), timeout=per_call) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise api_error(resp.status, raw)
                return resp.status, raw, resp.content_type
        except aiohttp.ClientConnectionError as exc:
            sent = not isinstance(exc, aiohttp.ClientConnectorError)
            raise NodeUnreachable(f"cannot reach the node at {self.url}: {exc}",
                                  sent=sent) from exc

    async def call(self, method: str, path: str, kind: type[T], *,
                   query: msgspec.Struct | None = None, body: msgspec.Struct | None = None
                   ) -> T:
        _, raw, _ = await self.request(method, path, query=query, body=body)
        return msgspec.json.decode(raw, type=kind)

    async def call_empty(self, method: str, path: str, *,
                         body: msgspec.Struct | None = None) -> None:
        await self.request(method, path, body=body)

    async def pages(self, fetch: Callable[..., Awaitable[Page[T]]], /, **kw: Any
                    ) -> AsyncIterator[T]:
        """Every item of a list endpoint: `async for o in client.pages(client.list_offers)`."""
        token: str | None = None
        while True:
            page = await fetch(**kw, page_token=token)
            for item in page.items:
                yield item
            token = page.next_page_token
            if token is None:
                return


def api_error(status: int, raw: bytes) -> ApiError:
    try:
        p = msgspec.json.decode(raw, type=_Problem)
    except msgspec.DecodeError:
        return ApiError(status, "about:blank", raw[:200].decode(errors="replace"))
    return ApiError(p.status or status, p.type, p.title, p.detail, p.errors)
