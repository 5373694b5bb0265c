"""What a handler works with: the server's shared state (an `AppKey`) and one call's inputs.

`Call` gives a handler its validated body and query (decoded by the route table from the schemas
the route declares), path parameters, and the node (503 `starting` until it is attached).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from node.api.convert import public_key
from node.api.problems import ApiProblem

if TYPE_CHECKING:
    from node.api.hub import EventHub
    from node.app import Node

W = TypeVar("W")


@dataclass(slots=True)
class ApiState:
    """Everything the handlers share; lives in the app under `STATE`."""

    stop: asyncio.Event
    hub: EventHub
    token: str
    peer_id: str | None = None
    node: Node | None = None
    started: float = field(default_factory=time.monotonic)
    stopping: bool = False
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run work that outlives its request (cancelled when the server stops)."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


STATE = web.AppKey("p2pmarket_api_state", ApiState)


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's answer when it is not plain 200 JSON: a status and headers to add."""

    value: object
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def created(value: object, location: str) -> Reply:
    return Reply(value, 201, {"Location": location})


class Call:
    """One request as a handler sees it."""

    __slots__ = ("request", "state", "_body", "_query")

    def __init__(self, request: web.Request, state: ApiState, body: object,
                 query: object) -> None:
        self.request, self.state = request, state
        self._body, self._query = body, query

    @property
    def node(self) -> Node:
        node = self.state.node
        if node is None:
            raise ApiProblem("starting", "the node is still starting; try again in a moment",
                             headers={"Retry-After": "1"})
        return node

    def body(self, kind: type[W]) -> W:
        """The request body, already validated against `kind` (the route's declared schema)."""
        if not isinstance(self._body, kind):
            raise TypeError(f"route declares {type(self._body).__name__}, handler wants {kind}")
        return self._body

    def query(self, kind: type[W]) -> W:
        if not isinstance(self._query, kind):
            raise TypeError(f"route declares {type(self._query).__name__}, handler wants {kind}")
        return self._query

    def path(self, name: str) -> str:
        return self.request.match_info[name]

    def peer(self, name: str = "peer_id") -> bytes:
        """A path parameter holding a peer id, as the raw public key."""
        return public_key(self.path(name), parameter=name)
