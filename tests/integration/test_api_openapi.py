"""The served OpenAPI 3.1 document covers every route, resolves, and the client covers it all."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from node.api.server import ApiServer
from p2pmarket.client import Client

pytestmark = pytest.mark.timeout(60)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


async def test_openapi_has_every_registered_route(tmp_path: Path) -> None:
    async with ApiServer(tmp_path, port=0) as api, Client(api.url, api.token) as client:
        doc = await client.get_openapi()
        assert api.app is not None
        routes = [(r.method, r.resource.canonical) for r in api.app.router.routes()
                  if r.resource is not None]
    assert doc["openapi"] == "3.1.0"
    assert len(routes) > 50
    for method, path in routes:
        assert path.startswith("/api/v1/"), path
        assert method.lower() in doc["paths"].get(path, {}), f"{method} {path} not in OpenAPI"
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == set(routes)


async def test_openapi_is_consistent(tmp_path: Path) -> None:
    async with ApiServer(tmp_path, port=0) as api, Client(api.url, api.token) as client:
        doc = await client.get_openapi()
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            params = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert params == set(re.findall(r"{(\w+)}", path)), (method, path)
            assert "default" in op["responses"]
            if method in ("post", "put", "patch", "delete"):
                assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            ok = [c for c in op["responses"] if c.startswith("2")]
            assert len(ok) == 1, (method, path)
    version = doc["paths"]["/api/v1/version"]["get"]
    assert version["security"] == []
    assert "urn:p2pmarket:problem:validation" in doc["info"]["description"]
    assert doc["paths"]["/api/v1/events"]["get"]["x-event-types"]["order.changed"]["$ref"]
    # the peer id convention is documented on the fields that carry one
    listing = schemas["ListingOut"]["properties"]
    assert "12D3KooW" in listing["publisher"]["description"]
    assert listing["hash"]["pattern"] == "^[0-9a-f]{64}$"


async def test_client_has_a_method_for_every_operation(tmp_path: Path) -> None:
    async with ApiServer(tmp_path, port=0) as api, Client(api.url, api.token) as client:
        doc = await client.get_openapi()
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    # the event stream is `Client.events()`, an async iterator
    missing = [i for i in ids if i != "streamEvents" and not callable(
        getattr(Client, snake(i), None))]
    assert not missing, missing
