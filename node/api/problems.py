"""RFC 9457 problem details: the one error format of the API, and the middleware that makes it.

Every failure leaves the server as `application/problem+json` with a stable `type` URN
(`urn:p2pmarket:problem:<name>`); clients branch on `type`, people read `title` and `detail`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from dht.server import DhtError
from escrow.bitcoin import InsufficientFunds
from escrow.terms import ChainError, EscrowError, UnknownEscrow
from node.escrow.wallet import FeeChanged, KeyReused, PaymentInvalid
from node.market.listings import ListingInvalid, ListingNotFound
from node.market.profiles import ProfileInvalid
from node.p2p.blobs import BlobError
from node.p2p.transport import P2PError, RequestTimeout
from node.trade.errors import (
    IllegalEvent,
    InvalidTerms,
    LocalProtocolError,
    NotFound,
    StaleOffer,
    TradeError,
    Unavailable,
    WrongRole,
)
from p2pmarket.api.schemas import Wire

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
URN = "urn:p2pmarket:problem:"

# name -> (status, title); the names are part of the API contract
PROBLEMS: dict[str, tuple[int, str]] = {
    "malformed-json": (400, "The body is not valid JSON"),
    "bad-request": (400, "Bad request"),
    "unauthorized": (401, "Missing or wrong bearer token"),
    "forbidden-host": (403, "The Host header does not name this machine"),
    "forbidden-origin": (403, "Requests from web pages are refused"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "conflict": (409, "Not possible in the current state"),
    "wrong-role": (409, "Only the other party can do that"),
    "stale-listing": (409, "The listing changed"),
    "insufficient-funds": (409, "The wallet's confirmed coins do not cover it"),
    "fee-changed": (409, "The payment would cost more than the fee confirmed"),
    "idempotency-key-reused": (409, "The idempotency key named a different request"),
    "payload-too-large": (413, "The body is too large"),
    "unsupported-media-type": (415, "The body must be JSON (Content-Type: application/json)"),
    "validation": (422, "The request has invalid fields"),
    "invalid-terms": (422, "The terms do not fit the listing"),
    "internal": (500, "Internal error"),
    "not-implemented": (501, "Not implemented on this node"),
    "peer-unreachable": (502, "The peer could not be reached"),
    "chain-error": (502, "The chain backend failed or refused"),
    "unavailable": (503, "Not available right now"),
    "starting": (503, "The node is still starting"),
    "peer-timeout": (504, "The peer did not answer in time"),
}


class FieldError(Wire, frozen=True, omit_defaults=True):
    """One invalid input: `pointer` (JSON pointer into the body) or `parameter` (query)."""

    detail: str
    pointer: str | None = None
    parameter: str | None = None


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    errors: list[FieldError] = []


PROBLEM_TYPES_DOC = "Known `type` URNs (stable):\n" + "\n".join(
    f"- `{URN}{name}` ({status}): {title}" for name, (status, title) in PROBLEMS.items())


class ApiProblem(Exception):
    """Raise anywhere under a handler: the middleware answers with this problem."""

    def __init__(self, name: str, detail: str = "", *, errors: list[FieldError] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or PROBLEMS[name][1])
        self.name, self.detail = name, detail
        self.errors = errors or []
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return PROBLEMS[self.name][0]


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def validation_problem(exc: Exception, *, parameter: bool = False, base: str = ""
                       ) -> ApiProblem:
    """A 422 from a msgspec error ("Expected `int`, got `str` - at `$.price.amount`")."""
    match = _AT.match(str(exc))
    msg, path = (match["msg"], match["path"] or "") if match else (str(exc), "")
    pointer = base + "".join(f"/{name or index}" for name, index
                             in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path))
    if parameter:
        field = FieldError(detail=msg, parameter=pointer.strip("/").split("/")[0] or None)
    else:
        field = FieldError(detail=msg, pointer=pointer)
    return ApiProblem("validation", msg, errors=[field])


def _domain_problem(exc: Exception) -> ApiProblem | None:
    """The problem for an exception of the node's services (None: a bug, answer 500)."""
    if isinstance(exc, PaymentInvalid):
        return ApiProblem("validation", str(exc),
                          errors=[FieldError(detail=str(exc), pointer=exc.pointer)])
    table: list[tuple[type[Exception], str]] = [
        (ListingNotFound, "not-found"), (NotFound, "not-found"),
        (ListingInvalid, "validation"), (ProfileInvalid, "validation"),
        (InvalidTerms, "invalid-terms"), (StaleOffer, "stale-listing"),
        (WrongRole, "wrong-role"), (IllegalEvent, "conflict"), (LocalProtocolError, "conflict"),
        (Unavailable, "unavailable"), (TradeError, "conflict"),
        (BlobError, "not-found"), (RequestTimeout, "peer-timeout"),
        (P2PError, "peer-unreachable"), (DhtError, "unavailable"),
        (UnknownEscrow, "not-found"), (InsufficientFunds, "insufficient-funds"),
        (FeeChanged, "fee-changed"), (KeyReused, "idempotency-key-reused"),
        (ChainError, "chain-error"), (EscrowError, "conflict"),  # the escrow's last word
    ]
    for kind, name in table:
        if isinstance(exc, kind):
            if name == "validation":
                return validation_problem(exc)
            return ApiProblem(name, str(exc))
    return None


def _http_problem(exc: web.HTTPException) -> ApiProblem:
    names = {400: "bad-request", 401: "unauthorized", 404: "not-found",
             405: "method-not-allowed", 413: "payload-too-large",
             415: "unsupported-media-type"}
    name = names.get(exc.status, "bad-request" if exc.status < 500 else "internal")
    headers = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return ApiProblem(name, f"{exc.method} is not allowed here; use "
                                f"{' or '.join(sorted(exc.allowed_methods))}", headers=headers)
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else ""
    return ApiProblem(name, detail)


def problem_response(problem: ApiProblem, instance: str = "") -> web.Response:
    status, title = PROBLEMS[problem.name]
    body = Problem(type=URN + problem.name, title=title, status=status,
                   detail=problem.detail, instance=instance, errors=problem.errors)
    return web.Response(body=msgspec.json.encode(body), status=status,
                        content_type=PROBLEM_JSON, headers=problem.headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception under a handler into problem+json (500s are logged, not shown)."""
    try:
        return await handler(request)
    except ApiProblem as exc:
        return problem_response(exc, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(_http_problem(exc), request.path)
    except Exception as exc:
        problem = _domain_problem(exc)
        if problem is None:
            log.exception("API %s %s failed", request.method, request.path)
            problem = ApiProblem("internal", "the node could not answer; see its log")
        return problem_response(problem, request.path)
