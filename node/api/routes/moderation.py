"""Moderation routes: my local blocklist (peers, listings), listing reports, arbiters directory."""

from __future__ import annotations

from node.api.context import Call, Reply, created
from node.api.convert import page, public_key
from node.api.registry import Routes
from node.market.moderation import report_count, report_listing
from p2pmarket.api import schemas as s
from p2pmarket.identity import peer_id_from_public
from p2pmarket.wire.bodies import Arbiter
from p2pmarket.wire.dhtkeys import ARBITERS_KEY

routes = Routes("moderation")


@routes.get("/blocklist", name="getBlocklist", summary="Peers and listings I blocked",
            response=s.Blocklist)
async def get_blocklist(call: Call) -> s.Blocklist:
    """Blocked peers' listings never show in search and their messages are dropped."""
    db = call.node.blocklist.db  # the reasons and dates are not in the service's API
    peers = [s.BlockedPeer(peer=peer_id_from_public(r["publisher"]), reason=r["reason"],
                           created=r["created"])
             for r in db.query("SELECT * FROM blocked_peers ORDER BY created")]
    listings = [s.BlockedListing(publisher=peer_id_from_public(r["publisher"]),
                                 listing_id=r["id"], reason=r["reason"], created=r["created"])
                for r in db.query("SELECT * FROM blocked_listings ORDER BY created")]
    return s.Blocklist(peers=peers, listings=listings)


@routes.post("/blocklist/peers", name="blockPeer", summary="Block a peer", body=s.BlockPeer,
             response=s.BlockPeer, status=201)
async def block_peer(call: Call) -> Reply:
    f = call.body(s.BlockPeer)
    call.node.blocklist.block_peer(public_key(f.peer, pointer="/peer"), f.reason)
    return created(f, f"/api/v1/blocklist/peers/{f.peer}")


@routes.delete("/blocklist/peers/{peer_id}", name="unblockPeer", summary="Unblock a peer")
async def unblock_peer(call: Call) -> None:
    call.node.blocklist.unblock_peer(call.peer())


@routes.post("/blocklist/listings", name="blockListing", summary="Hide a listing",
             body=s.BlockListing, response=s.BlockListing, status=201)
async def block_listing(call: Call) -> Reply:
    f = call.body(s.BlockListing)
    publisher = public_key(f.publisher, pointer="/publisher")
    call.node.blocklist.block_listing(publisher, f.listing_id, f.reason)
    return created(f, f"/api/v1/blocklist/listings/{f.publisher}/{f.listing_id}")


@routes.delete("/blocklist/listings/{peer_id}/{listing_id}", name="unblockListing",
               summary="Show a hidden listing again")
async def unblock_listing(call: Call) -> None:
    call.node.blocklist.unblock_listing(call.peer(), call.path("listing_id"))


@routes.post("/reports", name="reportListing", summary="Report a listing (signed, in the DHT)",
             body=s.ReportFields, response=s.ReportOut, status=201)
async def report(call: Call) -> Reply:
    """One report per reporter and listing; reporting again replaces mine. `published_at` is
    null when no DHT node stored it (the node keeps trying; see `GET /records`)."""
    f = call.body(s.ReportFields)
    node = call.node
    publisher = public_key(f.publisher, pointer="/publisher")
    record = await report_listing(node.owned, publisher, f.listing_id, f.reason, f.text)
    count = await report_count(node.dht, publisher, f.listing_id)
    return created(s.ReportOut(publisher=f.publisher, listing_id=f.listing_id, reports=count,
                               published_at=node.owned.published_at(record)),
                   f"/api/v1/sellers/{f.publisher}/listings/{f.listing_id}/reports")


@routes.get("/sellers/{peer_id}/listings/{listing_id}/reports", name="getReports",
            summary="How many peers reported a listing", response=s.ReportOut)
async def get_reports(call: Call) -> s.ReportOut:
    publisher, listing_id = call.peer(), call.path("listing_id")
    count = await report_count(call.node.dht, publisher, listing_id)
    return s.ReportOut(publisher=peer_id_from_public(publisher), listing_id=listing_id,
                       reports=count)


@routes.get("/arbiters", name="listArbiters", summary="Arbiters advertising in the DHT",
            query=s.Paging, response=s.Page[s.ArbiterOut])
async def list_arbiters(call: Call) -> s.Page[s.ArbiterOut]:
    """Cheapest percentage fee first."""
    records = await call.node.dht.get_all(ARBITERS_KEY, max_pages=8)
    arbiters = sorted(
        (s.ArbiterOut(peer=peer_id_from_public(r.publisher), name=r.body.name,
                      description=r.body.description, fee_percent_bp=r.body.fee_percent_bp,
                      fee_fixed_sat=r.body.fee_fixed_sat, expires=r.expires)
         for r in records if isinstance(r.body, Arbiter)),
        key=lambda a: (a.fee_percent_bp, a.fee_fixed_sat, a.peer))
    items, token = page(arbiters, call.query(s.Paging))
    return s.Page[s.ArbiterOut](items=items, next_page_token=token)
