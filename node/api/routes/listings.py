"""Listing routes: my listings (CRUD), anyone's listing, market search, images (blobs)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from dht.server import DhtError
from node.api.context import Call, Reply, created
from node.api.convert import (
    hit_out,
    listing_body,
    listing_change,
    listing_out,
    offset_token,
    page,
    public_key,
    read_offset,
)
from node.api.problems import ApiProblem, FieldError
from node.api.registry import Routes
from node.app import Node
from node.market.cache import Filters
from p2pmarket.api import schemas as s
from p2pmarket.api.events import ListingFoundEvent
from p2pmarket.identity import peer_id_from_public
from p2pmarket.taxonomy import is_category
from p2pmarket.wire.bodies import Listing
from p2pmarket.wire.dhtkeys import single_key
from p2pmarket.wire.records import Record

log = logging.getLogger(__name__)
routes = Routes("listings")
ANNOUNCE_TOP = 200  # `listing.found` covers the best this many results of a search
MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"), "image/webp": (b"RIFF",),
}


def check_category(category: object, *, parameter: bool = False) -> None:
    if isinstance(category, str) and not is_category(category):
        detail = f"unknown category {category!r} (see GET /api/v1/categories)"
        field = (FieldError(detail=detail, parameter="category") if parameter
                 else FieldError(detail=detail, pointer="/category"))
        raise ApiProblem("validation", detail, errors=[field])


async def find_listing(node: Node, publisher: bytes, listing_id: str, *,
                       refresh: bool = False) -> Record[Listing] | None:
    """A listing from my own, the cache, or (missing, or `refresh`) the DHT."""
    if publisher == node.identity.public:
        return node.listings.find(listing_id)
    cached = node.search.cache.get(publisher, listing_id)
    if cached is not None and not refresh:
        return cached
    record = await node.dht.get(single_key("listing", publisher, listing_id))
    if record is None:
        return cached
    node.search.cache.add(record)
    return node.search.cache.get(publisher, listing_id)


# -- my listings ---------------------------------------------------------------------------------


def mine_out(node: Node, record: Record[Listing]) -> s.ListingOut:
    return listing_out(record, node.identity.public, node.listings.published_at(record.body.id))


@routes.get("/listings", name="listMyListings", summary="My listings, newest change first",
            query=s.Paging, response=s.Page[s.ListingOut])
async def list_my_listings(call: Call) -> s.Page[s.ListingOut]:
    node = call.node
    items, token = page(node.listings.mine(), call.query(s.Paging))
    published = node.listings.published_times()
    me = node.identity.public
    return s.Page[s.ListingOut](
        items=[listing_out(r, me, published.get(r.body.id)) for r in items],
        next_page_token=token)


@routes.post("/listings", name="createListing", summary="Publish a new listing",
             body=s.ListingFields, response=s.ListingOut, status=201, errors=(409,))
async def create_listing(call: Call) -> Reply:
    """Signs the listing and publishes it with its search-index entries. It is saved even when
    no DHT peer stores it (`published_at` null); the node then keeps trying."""
    fields = call.body(s.ListingFields)
    check_category(fields.category)
    node = call.node
    record = await node.listings.create(listing_body(fields))
    return created(mine_out(node, record), f"/api/v1/listings/{record.body.id}")


@routes.get("/listings/{listing_id}", name="getMyListing", summary="One of my listings",
            response=s.ListingOut)
async def get_my_listing(call: Call) -> s.ListingOut:
    node = call.node
    return mine_out(node, node.listings.get(call.path("listing_id")))


@routes.patch("/listings/{listing_id}", name="editListing", summary="Change one of my listings",
              body=s.ListingPatch, response=s.ListingOut)
async def edit_listing(call: Call) -> s.ListingOut:
    """Republishes it with seq + 1; open offers on the old version become stale."""
    patch = call.body(s.ListingPatch)
    check_category(patch.category)
    node = call.node
    record = await node.listings.edit(call.path("listing_id"), listing_change(patch))
    return mine_out(node, record)


@routes.delete("/listings/{listing_id}", name="deleteListing", summary="Delete one of my listings")
async def delete_listing(call: Call) -> None:
    """Publishes a tombstone; other nodes drop their cached copies."""
    await call.node.listings.delete(call.path("listing_id"))


# -- anyone's listings, search -------------------------------------------------------------------


@routes.get("/sellers/{peer_id}/listings/{listing_id}", name="getListing",
            summary="Anyone's listing, by publisher and id", query=s.ListingQuery,
            response=s.ListingOut)
async def get_listing(call: Call) -> s.ListingOut:
    """From the cache, else the DHT (`refresh=true`: always ask the DHT)."""
    node = call.node
    record = await find_listing(node, call.peer(), call.path("listing_id"),
                                refresh=call.query(s.ListingQuery).refresh)
    if record is None:
        raise ApiProblem("not-found", "no such listing (or it was deleted)")
    return listing_out(record, node.identity.public)


def filters_of(q: s.SearchQuery) -> Filters:
    check_category(q.category, parameter=True)
    near = None
    if q.near is not None:
        lat, lon = (float(x) for x in q.near.split(","))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ApiProblem("validation", "near is outside the globe", errors=[
                FieldError(detail="latitude -90..90, longitude -180..180", parameter="near")])
        near = (lat, lon)
    if q.sort == "distance" and near is None:
        raise ApiProblem("validation", "sort=distance needs near", errors=[
            FieldError(detail="give near=lat,lon to sort by distance", parameter="sort")])
    return Filters(text=q.q, category=q.category, price_min=q.price_min, price_max=q.price_max,
                   currency=q.currency, conditions=tuple(q.condition), near=near,
                   radius_km=q.radius_km, include_sold_out=q.include_sold_out,
                   seller=public_key(q.seller, parameter="seller") if q.seller else None)


def _known(node: Node, f: Filters) -> set[tuple[bytes, str, int]]:
    hits = node.search.local(f, page_size=ANNOUNCE_TOP).hits
    return {(h.record.publisher, h.record.body.id, h.record.seq) for h in hits}


async def refresh_and_announce(call: Call, f: Filters, query: str) -> None:
    """Ask the network, then announce each listing that is new for this search."""
    node, hub = call.node, call.state.hub
    before = _known(node, f)
    try:
        await node.search.refresh(f)
    except DhtError as exc:
        log.info("search %r could not ask the network: %s", query, exc)
        return
    for h in node.search.local(f, page_size=ANNOUNCE_TOP).hits:
        r = h.record
        if (r.publisher, r.body.id, r.seq) not in before:
            hub.publish("listing.found", ListingFoundEvent(
                publisher=peer_id_from_public(r.publisher), listing_id=r.body.id, seq=r.seq,
                title=r.body.title, price=r.body.price, query=query))


@routes.get("/search", name="search", summary="Search the market", query=s.SearchQuery,
            response=s.SearchPage)
async def search(call: Call) -> s.SearchPage:
    """Search the market by words and filters (the query parameters below)."""
    q = call.query(s.SearchQuery)
    f = filters_of(q)
    offset = read_offset(q.page_token)
    node = call.node
    if q.page_token is None and q.mode == "network":
        await refresh_and_announce(call, f, call.request.query_string)
    elif q.page_token is None and q.mode == "background":
        call.state.spawn(refresh_and_announce(call, f, call.request.query_string))
    result = node.search.local(f, sort=q.sort, page_size=q.page_size, page_token=str(offset))
    me = node.identity.public
    token = None if result.next_token is None else offset_token(int(result.next_token))
    return s.SearchPage(items=[hit_out(h, me) for h in result.hits], next_page_token=token,
                        total=result.total)


# -- images --------------------------------------------------------------------------------------


@routes.post("/images", name="uploadImage", summary="Store an image for listings and profiles",
             body=s.ImageUpload, response=s.ImageRef, status=201)
async def upload_image(call: Call) -> Reply:
    """Put its `sha256`, `mime` and `size` (the answer) in a listing's `images`."""
    image = call.body(s.ImageUpload)
    if not image.data.startswith(MAGIC[image.mime]) or (
            image.mime == "image/webp" and image.data[8:12] != b"WEBP"):
        raise ApiProblem("validation", f"the data is not {image.mime}",
                         errors=[FieldError(detail="bytes do not match mime", pointer="/data")])
    digest = await asyncio.to_thread(call.node.blobs.store.put, image.data)  # fsyncs
    ref = s.ImageRef(sha256=digest.hex(), mime=image.mime, size=len(image.data))
    return created(ref, f"/api/v1/images/{ref.sha256}")


def sniff(data: bytes) -> str:
    for mime, prefixes in MAGIC.items():
        if data.startswith(prefixes) and (mime != "image/webp" or data[8:12] == b"WEBP"):
            return mime
    return "application/octet-stream"


@routes.get("/images/{sha256}", name="getImage", summary="An image's bytes",
            query=s.ImageQuery, response=bytes, media="image/*", errors=(502, 504))
async def get_image(call: Call) -> web.Response:
    """From this node's store, else fetched from `peer` (usually the seller), else from the
    nodes the DHT names as holders (keepers, the seller); every answer is checked against the
    hash. 404 when nobody gave it."""
    try:
        digest = bytes.fromhex(call.path("sha256"))
    except ValueError:
        raise ApiProblem("not-found", "an image is named by its sha256 in hex") from None
    if len(digest) != 32:
        raise ApiProblem("not-found", "an image is named by its sha256 in hex")
    node, peer = call.node, call.query(s.ImageQuery).peer
    hint = public_key(peer, parameter="peer") if peer is not None else None
    data = await node.images.get(digest, hint)
    return web.Response(body=data, content_type=sniff(data),
                        headers={"Cache-Control": "private, max-age=31536000, immutable"})
