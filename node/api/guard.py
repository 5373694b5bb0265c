"""Who may talk to the API: loopback Host names only, no web pages, a bearer token, JSON bodies.

Checks run in that order for every request (before routing errors are answered), so a web page
or a DNS-rebinding attacker learns nothing, not even which paths exist. No CORS headers are ever
sent: browsers keep pages from reading answers and refuse to send JSON cross-origin.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from node.api.context import STATE
from node.api.problems import ApiProblem
from node.api.registry import Endpoint

ENDPOINTS = web.AppKey("p2pmarket_api_endpoints", dict[object, Endpoint])
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_name(host: str) -> str:
    """The name part of a Host header value (`[::1]:8470` -> `[::1]`)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def own_origins(request: web.Request) -> frozenset[str]:
    port = request.url.port
    return frozenset(f"http://{name}:{port}" for name in LOOPBACK_NAMES)


def check_host(request: web.Request) -> None:
    host = request.headers.get("Host", "")
    if host_name(host) not in LOOPBACK_NAMES:
        raise ApiProblem("forbidden-host", f"Host {host[:100]!r} is not a loopback name "
                                           "(127.0.0.1, localhost or [::1])")


def check_origin(request: web.Request) -> None:
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower().rstrip("/") not in own_origins(request):
        raise ApiProblem("forbidden-origin", "this API is for local programs, not web pages")


def check_token(request: web.Request, token: str) -> None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        raise ApiProblem("unauthorized", "send Authorization: Bearer <token>, the token being "
                                         "the contents of <datadir>/api.cookie",
                         headers={"WWW-Authenticate": 'Bearer realm="p2pmarket"'})


def check_body(request: web.Request) -> None:
    if request.method not in MUTATING:
        return
    has_body = request.body_exists
    if request.method == "DELETE" and not has_body:
        return
    if request.content_type != "application/json":
        raise ApiProblem("unsupported-media-type",
                         f"got {request.content_type or 'no Content-Type'}; send a JSON object "
                         "with Content-Type: application/json")


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    check_host(request)
    check_origin(request)
    endpoint = request.app[ENDPOINTS].get(request.match_info.route)
    if endpoint is None or endpoint.auth:
        check_token(request, request.app[STATE].token)
    if endpoint is not None:
        check_body(request)
    return await handler(request)
