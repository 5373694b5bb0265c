"""The typed async client of a node's local HTTP API: what the CLI, the TUI and scripts use.

    async with Client.from_datadir("~/.local/share/p2pmarket") as api:
        status = await api.get_status()
        async for event in api.events():
            ...

One method per endpoint (the snake_case of its operationId); answers are the msgspec structs of
`p2pmarket.api.schemas`, `schemas_trade` and `events` (shared with the server); a
problem answer raises `ApiError(status, type, title, detail)`, no node `NodeUnreachable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from p2pmarket.api import events as schemas_events
from p2pmarket.api import schemas as schemas
from p2pmarket.api import schemas_trade as schemas_trade
from p2pmarket.client.market import MarketMethods
from p2pmarket.client.trade import TradeMethods
from p2pmarket.client.transport import (
    ApiError,
    ClientError,
    NodeUnreachable,
    Transport,
    api_error,
    read_datadir,
)

__all__ = ["ApiError", "Client", "ClientError", "Event", "NodeUnreachable", "Transport",
           "schemas", "schemas_events", "schemas_trade"]


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: `type` is a key of `schemas_events.EVENT_TYPES`."""

    id: int
    type: str
    data: dict[str, Any]

    def as_struct(self) -> msgspec.Struct:
        """The data as its typed struct (`OrderChangedEvent`, ...)."""
        return msgspec.convert(self.data, schemas_events.EVENT_TYPES[self.type])


class Client(MarketMethods, TradeMethods):
    """`Client(url, token)` or `Client.from_datadir(path)`; close it (or use `async with`)."""

    @classmethod
    def from_datadir(cls, datadir: Path | str, **kw: Any) -> Client:
        """The node running on `datadir`: its URL from `api.url`, its token from `api.cookie`."""
        url, token = read_datadir(datadir)
        client = cls(url, token, **kw)
        client.datadir = Path(datadir).expanduser()
        return client

    async def events(self, *, last_event_id: int | None = None, types: Iterable[str] = (),
                     reconnect: bool = False) -> AsyncGenerator[Event, None]:
        """The node's live events. With `reconnect`, a dropped stream is resumed from the last
        event seen (the server replays what was missed, or sends `events.reset`)."""
        last = last_event_id
        while True:
            try:
                async for event in self._stream(last, list(types)):
                    last = event.id
                    yield event
            except NodeUnreachable:
                if not reconnect:
                    raise
                self.reread()  # a restarted node: new port and token
            except ApiError as exc:  # a restarted node: new token; or one still starting
                if not (reconnect and (exc.status == 503 or (exc.status == 401
                                                             and self.reread()))):
                    raise
            if not reconnect:
                return
            await asyncio.sleep(0.5)

    async def _stream(self, last: int | None, types: list[str]) -> AsyncGenerator[Event, None]:
        headers = self.headers({"Accept": "text/event-stream"})
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        params = [("type", name) for name in types]
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
        try:
            async with self.session.get(f"{self.url}/api/v1/events", params=params,
                                        headers=headers, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise api_error(resp.status, await resp.read())
                fields: dict[str, str] = {}
                data: list[str] = []
                async for raw in resp.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith(":"):
                        continue
                    if line:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "data":
                            data.append(value)
                        else:
                            fields[name] = value
                        continue
                    if data and fields.get("id", "").isdigit():
                        yield Event(int(fields["id"]), fields.get("event", "message"),
                                    msgspec.json.decode("\n".join(data)))
                    fields, data = {}, []
        except aiohttp.ClientConnectionError as exc:
            raise NodeUnreachable(f"event stream from {self.url} ended: {exc}") from exc
