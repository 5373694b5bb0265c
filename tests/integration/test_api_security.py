"""The API's guards against a real node: token, Host, Origin, methods, bodies, problems, cookie."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dht.testing import dht_network
from node.api.server import URL_FILE, ApiServer
from p2pmarket.client import ApiError, Client, NodeUnreachable
from p2pmarket.datadir import COOKIE_FILE
from tests.support.api import ApiNode, api_node, raw

pytestmark = pytest.mark.timeout(90)
PROBLEM = "application/problem+json"
JSON = {"Content-Type": "application/json"}
LISTING = {"title": "Lamp", "price": {"amount": 1500, "currency": "EUR"},
           "category": "home/decor", "condition": "good",
           "location": {"country": "DE", "geohash": "u33db"}}


@pytest.fixture
async def one(tmp_path: Path) -> AsyncIterator[ApiNode]:
    async with dht_network(3) as backbone, api_node(backbone, tmp_path / "n") as n:
        yield n


def urn(name: str) -> str:
    return f"urn:p2pmarket:problem:{name}"


async def test_token_is_needed_except_for_version(one: ApiNode) -> None:
    status, _, body = await raw(one.api, "GET", "/api/v1/version", token=None)
    assert status == 200 and body["name"] == "p2pmarket"
    for token in (None, "wrong"):
        status, headers, body = await raw(one.api, "GET", "/api/v1/node", token=token)
        assert status == 401 and headers["Content-Type"] == PROBLEM
        assert body["type"] == urn("unauthorized") and body["status"] == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
    # unknown paths do not tell a stranger what exists
    status, _, body = await raw(one.api, "GET", "/api/v1/nothing-here", token=None)
    assert status == 401
    status, _, body = await raw(one.api, "GET", "/api/v1/nothing-here")
    assert status == 404 and body["type"] == urn("not-found")


async def test_foreign_host_and_origin_are_refused(one: ApiNode) -> None:
    port = one.api.url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", "", "10.0.0.1"):
        status, _, body = await raw(one.api, "GET", "/api/v1/version", headers={"Host": host})
        assert status == 403 and body["type"] == urn("forbidden-host"), host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", f"[::1]:{port}"):
        status, _, _ = await raw(one.api, "GET", "/api/v1/node", headers={"Host": host})
        assert status == 200, host
    for origin in ("https://evil.example", "null", f"http://evil.example:{port}"):
        status, _, body = await raw(one.api, "GET", "/api/v1/node", headers={"Origin": origin})
        assert status == 403 and body["type"] == urn("forbidden-origin"), origin
    status, _, _ = await raw(one.api, "GET", "/api/v1/node",
                             headers={"Origin": f"http://localhost:{port}"})
    assert status == 200


async def test_no_cors_and_no_preflight(one: ApiNode) -> None:
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    for method, path in (("OPTIONS", "/api/v1/listings"), ("GET", "/api/v1/version"),
                         ("GET", "/api/v1/node")):
        status, got, _ = await raw(one.api, method, path, headers=headers)
        assert status >= 400
        assert not [h for h in got if h.lower().startswith("access-control-")]
    status, got, _ = await raw(one.api, "OPTIONS", "/api/v1/listings")
    assert status == 405 and not [h for h in got if h.lower().startswith("access-control-")]


async def test_methods_and_bodies(one: ApiNode) -> None:
    status, headers, body = await raw(one.api, "GET", "/api/v1/node/shutdown")
    assert status == 405 and body["type"] == urn("method-not-allowed")
    assert headers["Allow"] == "POST"
    assert not one.stop.is_set()
    status, _, body = await raw(one.api, "POST", "/api/v1/listings", data=b"title=Lamp",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and body["type"] == urn("unsupported-media-type")
    status, _, body = await raw(one.api, "POST", "/api/v1/offers/abcdefgh12/accept")
    assert status == 415  # no Content-Type at all
    status, _, body = await raw(one.api, "POST", "/api/v1/listings", data=b'{"title": ',
                                headers=JSON)
    assert status == 400 and body["type"] == urn("malformed-json")


async def test_invalid_fields_are_422_with_pointers(one: ApiNode) -> None:
    bad = {**LISTING, "price": {"amount": "cheap", "currency": "EUR"}}
    status, _, body = await raw(one.api, "POST", "/api/v1/listings",
                                data=json.dumps(bad).encode(), headers=JSON)
    assert status == 422 and body["type"] == urn("validation")
    assert body["errors"] == [{"detail": "Expected `int`, got `str`",
                               "pointer": "/price/amount"}]
    for change, pointer in (({"colour": "red"}, None), ({"category": "home/spaceships"},
                                                         "/category"),
                            ({"tags": ["x" * 40]}, "/tags/0"), ({"condition": "mint"},
                                                               "/condition")):
        with pytest.raises(ApiError) as err:
            await _post(one, "/api/v1/listings", {**LISTING, **change})
        assert err.value.status == 422 and err.value.name == "validation"
        if pointer:
            assert err.value.errors[0]["pointer"] == pointer
    status, _, body = await raw(one.api, "GET", "/api/v1/listings?page_size=0")
    assert status == 422 and body["errors"][0]["parameter"] == "page_size"
    status, _, body = await raw(one.api, "GET", "/api/v1/listings?page_token=garbage")
    assert status == 422 and body["errors"][0]["parameter"] == "page_token"
    status, _, body = await raw(one.api, "GET", "/api/v1/listings?bogus=1")
    assert status == 422
    status, _, body = await raw(one.api, "GET", "/api/v1/profiles/not-a-peer-id")
    assert status == 422 and body["errors"][0]["parameter"] == "peer_id"


async def _post(one: ApiNode, path: str, payload: object) -> None:
    status, _, body = await raw(one.api, "POST", path, data=json.dumps(payload).encode(),
                                headers=JSON)
    if status >= 400:
        raise ApiError(status, body["type"], body["title"], body.get("detail", ""),
                       body.get("errors"))


async def test_domain_errors_are_problems(one: ApiNode) -> None:
    with pytest.raises(ApiError) as err:
        await one.client.get_my_listing("missing-listing")
    assert err.value.status == 404 and err.value.name == "not-found"
    with pytest.raises(ApiError) as err:
        await one.client.accept_offer("no-such-offer")
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        await one.client.get_wallet()
    assert err.value.status == 501 and err.value.type == urn("not-implemented")
    with pytest.raises(ApiError) as err:
        await one.client.fund_escrow("some-order-id")
    assert err.value.status == 501


async def test_cookie_files_while_running_and_after_stop(tmp_path: Path) -> None:
    stop = asyncio.Event()
    api = ApiServer(tmp_path, port=0, stop=stop)
    await api.start()
    cookie, url = tmp_path / COOKIE_FILE, tmp_path / URL_FILE
    try:
        assert stat.S_IMODE(cookie.stat().st_mode) == 0o600
        assert stat.S_IMODE(url.stat().st_mode) == 0o600
        assert cookie.read_text().strip() == api.token and len(api.token) >= 40
        assert url.read_text().strip() == api.url and api.url.startswith("http://127.0.0.1:")
        async with Client.from_datadir(tmp_path) as client:
            status = await client.get_status()  # no node attached yet
            assert status.state == "starting" and status.starting
            with pytest.raises(ApiError) as err:
                await client.list_my_listings()
            assert err.value.status == 503 and err.value.name == "starting"
            assert (await client.shutdown()).state == "stopping"
            await asyncio.wait_for(stop.wait(), 5)
    finally:
        await api.stop()
    assert not cookie.exists() and not url.exists()
    with pytest.raises(NodeUnreachable):
        Client.from_datadir(tmp_path)
    # a new start has a new token
    async with ApiServer(tmp_path, port=0) as again:
        assert cookie.read_text().strip() == again.token != api.token
    assert not cookie.exists()


async def test_api_listens_on_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ApiServer(tmp_path, host="0.0.0.0")
