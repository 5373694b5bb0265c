"""Listings, search, images, profiles and moderation through the client, between two nodes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dht.testing import dht_network
from p2pmarket.client import ApiError
from tests.support.api import ApiNode, api_node, memory_hosts, raw

pytestmark = pytest.mark.timeout(120)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def listing(title: str, amount: int, **extra: object) -> dict[str, object]:
    return {"title": title, "price": {"amount": amount, "currency": "EUR"},
            "category": "sports/bikes", "condition": "good",
            "location": {"country": "DE", "geohash": "u33dbfc"}, "tags": ["bike"], **extra}


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[ApiNode, ApiNode]]:
    hosts = memory_hosts()
    async with dht_network(6) as backbone, \
            api_node(backbone, tmp_path / "seller", host=hosts) as seller, \
            api_node(backbone, tmp_path / "buyer", host=hosts) as buyer:
        yield seller, buyer


async def test_listing_crud(pair: tuple[ApiNode, ApiNode]) -> None:
    seller, _ = pair
    api = seller.client
    status, headers, body = await raw(seller.api, "POST", "/api/v1/listings",
                                      data=json.dumps(listing("Red bike", 25_000)).encode(),
                                      headers={"Content-Type": "application/json"})
    assert status == 201 and headers["Location"] == f"/api/v1/listings/{body['id']}"
    assert body["publisher"] == seller.peer_id and body["mine"] and body["seq"] == 1
    first = body["id"]
    second = await api.create_listing({**listing("Blue bike", 30_000), "id": "blue-bike-1"})
    assert second.id == "blue-bike-1"
    with pytest.raises(ApiError) as err:
        await api.create_listing({**listing("Again", 1), "id": "blue-bike-1"})
    assert err.value.status == 422
    got = await api.get_my_listing(first)
    assert got.title == "Red bike" and got.price.amount == 25_000
    page1 = await api.list_my_listings(page_size=1)
    page2 = await api.list_my_listings(page_size=1, page_token=page1.next_page_token)
    assert page1.next_page_token and page2.next_page_token is None
    assert {page1.items[0].id, page2.items[0].id} == {first, "blue-bike-1"}
    assert [x.id async for x in api.pages(api.list_my_listings, page_size=1)] == [
        page1.items[0].id, page2.items[0].id]
    edited = await api.edit_listing(first, {"price": {"amount": 22_000, "currency": "EUR"},
                                            "quantity": 3})
    assert edited.seq == 2 and edited.price.amount == 22_000 and edited.title == "Red bike"
    assert edited.hash != got.hash
    await api.delete_listing(first)
    with pytest.raises(ApiError) as err:
        await api.get_my_listing(first)
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        await api.delete_listing(first)
    assert err.value.status == 404
    assert [x.id for x in (await api.list_my_listings()).items] == ["blue-bike-1"]


async def test_search_and_get_between_nodes(pair: tuple[ApiNode, ApiNode]) -> None:
    seller, buyer = pair
    for i in range(5):
        await seller.client.create_listing({**listing(f"Road bike {i}", 10_000 + i * 1000),
                                            "id": f"road-bike-{i}"})
    await seller.client.create_listing({**listing("Desk lamp", 2_000), "category": "home/decor",
                                        "tags": ["lamp"], "id": "desk-lamp-1"})
    cached = await buyer.client.search("bike", mode="cache")
    assert cached.items == []
    found = await buyer.client.search("road bike", page_size=2, sort="price")
    assert found.total >= 3 and len(found.items) == 2
    assert [h.listing.id for h in found.items] == ["road-bike-0", "road-bike-1"]
    assert all(h.listing.publisher == seller.peer_id and not h.listing.mine
               for h in found.items)
    rest = await buyer.client.search("road bike", page_size=2, sort="price",
                                     page_token=found.next_page_token)
    assert [h.listing.id for h in rest.items] == ["road-bike-2", "road-bike-3"]
    last = await buyer.client.search("road bike", page_size=2, sort="price",
                                     page_token=rest.next_page_token)
    assert [h.listing.id for h in last.items] == ["road-bike-4"]
    assert last.next_page_token is None and last.total == 5
    cheap = await buyer.client.search("bike", mode="cache", price_max=11_000, currency="EUR")
    assert {h.listing.id for h in cheap.items} == {"road-bike-0", "road-bike-1"}
    near = await buyer.client.search("bike", mode="cache", near=(52.52, 13.40), radius_km=50,
                                     sort="distance")
    assert len(near.items) == 5 and near.items[0].distance_km is not None
    far = await buyer.client.search("bike", mode="cache", near=(48.85, 2.35), radius_km=50)
    assert far.items == []
    lamp = await buyer.client.search(category="home", mode="network")
    assert [h.listing.id for h in lamp.items] == ["desk-lamp-1"]
    one = await buyer.client.get_listing(seller.peer_id, "road-bike-3")
    assert one.title == "Road bike 3" and one.seq == 1
    with pytest.raises(ApiError) as err:
        await buyer.client.get_listing(seller.peer_id, "no-such-listing")
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        await buyer.client.search("bike", sort="distance")
    assert err.value.status == 422


async def test_images_profiles_and_moderation(pair: tuple[ApiNode, ApiNode]) -> None:
    seller, buyer = pair
    ref = await seller.client.upload_image(PNG, "image/png")
    assert ref.sha256 == hashlib.sha256(PNG).hexdigest() and ref.size == len(PNG)
    with pytest.raises(ApiError) as err:
        await seller.client.upload_image(b"GIF89a...", "image/png")
    assert err.value.status == 422
    created = await seller.client.create_listing({**listing("Bike with photo", 5_000),
                                                  "images": [ref], "id": "photo-bike-1"})
    assert created.images[0].sha256 == ref.sha256
    with pytest.raises(ApiError) as err:  # nobody announced an image with that hash
        await buyer.client.get_image(hashlib.sha256(b"no such image").hexdigest())
    assert err.value.status == 404
    assert await buyer.client.get_image(ref.sha256, peer=seller.peer_id) == PNG
    assert await buyer.client.get_image(ref.sha256) == PNG  # cached now

    mine = await seller.client.get_my_profile()
    assert not mine.found and mine.peer == seller.peer_id
    await seller.client.put_my_profile({"name": "Sally", "bio": "bikes", "avatar": ref})
    theirs = await buyer.client.get_profile(seller.peer_id)
    assert theirs.found and theirs.name == "Sally" and theirs.avatar == ref
    assert theirs.reviews == 0 and theirs.rating is None
    assert (await buyer.client.list_reviews(seller.peer_id)).items == []

    assert len((await buyer.client.search("photo")).items) == 1
    await buyer.client.block_peer(seller.peer_id, "spam")
    blocked = await buyer.client.get_blocklist()
    assert [(p.peer, p.reason) for p in blocked.peers] == [(seller.peer_id, "spam")]
    assert (await buyer.client.search("photo", mode="cache")).items == []
    await buyer.client.unblock_peer(seller.peer_id)
    await buyer.client.block_listing(seller.peer_id, "photo-bike-1")
    assert (await buyer.client.search("photo", mode="cache")).items == []
    await buyer.client.unblock_listing(seller.peer_id, "photo-bike-1")
    assert len((await buyer.client.search("photo", mode="cache")).items) == 1
    assert (await buyer.client.get_blocklist()).peers == []

    report = await buyer.client.report_listing(seller.peer_id, "photo-bike-1", "spam", "meh")
    assert report.reports == 1
    assert (await seller.client.get_reports(seller.peer_id, "photo-bike-1")).reports == 1
    assert (await buyer.client.list_arbiters()).items == []
    assert "sports/bikes" in await buyer.client.list_categories()
    peer = await buyer.client.get_peer(seller.peer_id)
    assert peer.addrs and not peer.banned and not peer.blocked
