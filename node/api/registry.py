"""The route table: each endpoint declares its path, schemas and docs once, in one decorator.

The same declaration registers the aiohttp route, decodes and validates the query and body
before the handler runs (400/422 problems), encodes the answer, and feeds the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect as mi
from aiohttp import web

from node.api.context import STATE, ApiState, Call, Reply
from node.api.problems import ApiProblem, validation_problem
from p2pmarket.api.schemas import Empty

PREFIX = "/api/v1"
EndpointHandler = Callable[[Call], Awaitable[object]]
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str  # with the /api/v1 prefix
    name: str  # operationId; the client's method is its snake_case form
    summary: str
    tag: str
    handler: EndpointHandler
    body: type[msgspec.Struct] | None = None  # None: no fields (an empty object or no body)
    query: type[msgspec.Struct] | None = None
    response: Any = None  # a type for msgspec, or None for 204 No Content
    status: int = 200
    auth: bool = True
    media: str = "application/json"  # of a successful answer
    description: str = ""
    errors: tuple[int, ...] = ()  # problem statuses worth documenting beyond the usual ones

    @property
    def mutates(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")


class Routes:
    """The endpoints of one resource; `@routes.get(path, ...)` declares one."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def _add(self, method: str, path: str, *, name: str, summary: str, **kw: Any
             ) -> Callable[[EndpointHandler], EndpointHandler]:
        def decorate(handler: EndpointHandler) -> EndpointHandler:
            description = kw.pop("description", None) or (handler.__doc__ or "").strip()
            self.endpoints.append(Endpoint(method, PREFIX + path, name, summary, self.tag,
                                           handler, description=description, **kw))
            return handler

        return decorate

    def get(self, path: str, *, name: str, summary: str, **kw: Any
            ) -> Callable[[EndpointHandler], EndpointHandler]:
        return self._add("GET", path, name=name, summary=summary, **kw)

    def post(self, path: str, *, name: str, summary: str, **kw: Any
             ) -> Callable[[EndpointHandler], EndpointHandler]:
        return self._add("POST", path, name=name, summary=summary, **kw)

    def put(self, path: str, *, name: str, summary: str, **kw: Any
            ) -> Callable[[EndpointHandler], EndpointHandler]:
        return self._add("PUT", path, name=name, summary=summary, **kw)

    def patch(self, path: str, *, name: str, summary: str, **kw: Any
              ) -> Callable[[EndpointHandler], EndpointHandler]:
        return self._add("PATCH", path, name=name, summary=summary, **kw)

    def delete(self, path: str, *, name: str, summary: str, **kw: Any
               ) -> Callable[[EndpointHandler], EndpointHandler]:
        return self._add("DELETE", path, name=name, summary=summary, **kw)


def list_fields(kind: type[msgspec.Struct]) -> frozenset[str]:
    """Query fields that take repeated parameters (`?condition=new&condition=good`)."""
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    names = set()
    for f in info.fields:
        t = f.type
        options = t.types if isinstance(t, mi.UnionType) else (t,)
        if any(isinstance(o, mi.ListType) for o in options):
            names.add(f.encode_name)
    return frozenset(names)


def decode_query(request: web.Request, kind: type[msgspec.Struct],
                 lists: frozenset[str]) -> msgspec.Struct:
    raw: dict[str, object] = {}
    for key in request.query:
        values = request.query.getall(key)
        raw[key] = values if key in lists else values[-1]
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise validation_problem(exc, parameter=True) from None


async def decode_body(request: web.Request, kind: type[msgspec.Struct]) -> msgspec.Struct:
    raw = await request.read()
    if not raw.strip():
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise validation_problem(exc) from None
    except msgspec.DecodeError as exc:
        raise ApiProblem("malformed-json", str(exc)) from None


def encode(value: object, status: int = 200, headers: dict[str, str] | None = None
           ) -> web.Response:
    return web.Response(body=_encoder.encode(value), status=status, headers=headers,
                        content_type="application/json")


def aiohttp_handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    lists = list_fields(endpoint.query) if endpoint.query is not None else frozenset()
    body_type = endpoint.body or Empty

    async def handle(request: web.Request) -> web.StreamResponse:
        state: ApiState = request.app[STATE]
        query = (decode_query(request, endpoint.query, lists) if endpoint.query is not None
                 else None)
        if endpoint.query is None and request.query:
            raise ApiProblem("validation", "this endpoint takes no query parameters", errors=[])
        body = await decode_body(request, body_type) if endpoint.mutates else None
        result = await endpoint.handler(Call(request, state, body, query))
        if isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, Reply):
            if result.value is None:
                return web.Response(status=204, headers=result.headers)
            return encode(result.value, result.status, result.headers)
        if result is None:
            return web.Response(status=204)
        return encode(result, endpoint.status)

    handle.__name__ = endpoint.name
    return handle


def register(app: web.Application, endpoints: list[Endpoint]) -> dict[object, Endpoint]:
    """Add the endpoints' routes to the app; returns route -> endpoint for the middlewares."""
    table: dict[object, Endpoint] = {}
    for endpoint in endpoints:
        route = app.router.add_route(endpoint.method, endpoint.path, aiohttp_handler(endpoint),
                                     name=endpoint.name)
        table[route] = endpoint
    return table
