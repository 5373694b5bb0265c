"""The OpenAPI 3.1 document, generated from the route table and the msgspec schemas.

Nothing here is written by hand per endpoint: paths, parameters, bodies and answers come from
each `Endpoint` and `msgspec.json.schema_components`, so the document cannot drift from the code.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from node.api.problems import PROBLEM_JSON, PROBLEM_TYPES_DOC, Problem
from node.api.registry import Endpoint
from p2pmarket import __version__
from p2pmarket.api.events import EVENT_TYPES
from p2pmarket.api.schemas import PEER_ID_PATTERN, Empty

REF = "#/components/schemas/{name}"
ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
PATH_PARAMS: dict[str, tuple[dict[str, Any], str]] = {
    "peer_id": ({"type": "string", "pattern": PEER_ID_PATTERN}, "A node's peer id (12D3KooW...)."),
    "listing_id": ({"type": "string", "pattern": ID_PATTERN}, "A listing id."),
    "offer_id": ({"type": "string", "pattern": ID_PATTERN},
                 "An offer (negotiation) id; also its conversation's id."),
    "order_id": ({"type": "string", "pattern": ID_PATTERN}, "An order id."),
    "conversation_id": ({"type": "string", "pattern": ID_PATTERN},
                        "A conversation id (its offer's id, or an inquiry's)."),
    "message_id": ({"type": "string", "pattern": ID_PATTERN}, "A message id."),
    "sha256": ({"type": "string", "pattern": r"^[0-9a-f]{64}$"},
               "The image's SHA-256 as lowercase hex."),
}
DESCRIPTION = """\
The local HTTP API of a p2pmarket node: everything the node does, for scripts, the CLI and the TUI.

**Where and who.** The server listens on 127.0.0.1 only. Each start writes a fresh random token
to `<datadir>/api.cookie` (mode 0600, removed on a clean stop) and the server's base URL
(`http://127.0.0.1:PORT`) to `<datadir>/api.url`. Send `Authorization: Bearer <token>` with every
request except `GET /api/v1/version`. The Host header must be 127.0.0.1, localhost or [::1]
(with any port); requests with an `Origin` header from anywhere else are refused; no CORS
headers are sent.

**Requests.** State changes only with POST, PUT, PATCH or DELETE and a JSON object body
(`Content-Type: application/json`, else 415); bodies and query parameters are validated against
the schemas below (422 with `errors`, each naming a JSON `pointer` or a query `parameter`).

**Conventions.** Nodes are named by peer id (`12D3KooW...`, base58 of the Ed25519 key);
content hashes and keys that name no node are lowercase hex; amounts are integers in minor
units (cents, or sats for BTC); times are unix seconds. Lists are pages: `page_size` and
`page_token` in, `items` and `next_page_token` out (null on the last page). A create answers
201 with a `Location` header.

**Errors** are RFC 9457 `application/problem+json`; branch on `type`.

""" + PROBLEM_TYPES_DOC


def _parameters(endpoint: Endpoint, components: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", endpoint.path):
        schema, description = PATH_PARAMS[name]
        params.append({"name": name, "in": "path", "required": True, "schema": schema,
                       "description": description})
    if endpoint.query is not None:
        struct = components[endpoint.query.__name__]
        required = set(struct.get("required", []))
        for name, schema in struct["properties"].items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                     "schema": schema}
            if schema.get("type") == "array":
                param.update(style="form", explode=True)
            params.append(param)
    return params


def _responses(endpoint: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    problem = {PROBLEM_JSON: {"schema": refs[Problem]}}
    answers: dict[str, Any] = {}
    if endpoint.response is None:
        answers[str(endpoint.status if endpoint.status != 200 else 204)] = {
            "description": "Done; no content."}
    else:
        schema = refs[endpoint.response] if endpoint.media == "application/json" else (
            {"type": "string"} if endpoint.media == "text/event-stream" else {})
        answer: dict[str, Any] = {"description": endpoint.summary,
                                  "content": {endpoint.media: {"schema": schema}}}
        if endpoint.status == 201:
            answer["headers"] = {"Location": {"description": "Where the new resource is.",
                                              "schema": {"type": "string"}}}
        answers[str(endpoint.status)] = answer
    codes = {403, 503, *endpoint.errors}
    if endpoint.auth:
        codes.add(401)
    if endpoint.query is not None or endpoint.mutates or "{" in endpoint.path:
        codes.add(422)
    if endpoint.mutates:
        codes.update({400, 415})
    if "{" in endpoint.path:
        codes.add(404)
    for code in sorted(codes):
        answers[str(code)] = {"description": "A problem (see its `type`).", "content": problem}
    answers["default"] = {"description": "A problem (see its `type`).", "content": problem}
    return answers


def build_openapi(endpoints: list[Endpoint]) -> dict[str, Any]:
    types: list[Any] = [Problem, Empty, *EVENT_TYPES.values()]
    for e in endpoints:
        types += [t for t in (e.body, e.query) if t is not None]
        if e.response is not None and e.media == "application/json":
            types.append(e.response)
    unique = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(unique, ref_template=REF)
    refs = dict(zip(unique, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        op: dict[str, Any] = {
            "operationId": e.name, "summary": e.summary, "tags": [e.tag],
            "parameters": _parameters(e, components), "responses": _responses(e, refs)}
        if e.description:
            op["description"] = e.description
        if not e.auth:
            op["security"] = []
        if e.mutates:
            op["requestBody"] = {"required": e.body is not None, "content": {
                "application/json": {"schema": refs[e.body or Empty]}}}
        if e.media == "text/event-stream":
            op["x-event-types"] = {name: refs[kind] for name, kind in EVENT_TYPES.items()}
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "p2pmarket node API", "version": __version__,
                 "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": tag} for tag in dict.fromkeys(e.tag for e in endpoints)],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "The token in <datadir>/api.cookie (new on every start)."}},
        },
    }
