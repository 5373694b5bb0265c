"""Profile routes: mine (read, publish) and anyone's, with reputation and reviews."""

from __future__ import annotations

import asyncio

from node.api.context import Call
from node.api.convert import page, profile_body, profile_out, review_out
from node.api.registry import Routes
from p2pmarket.api import schemas as s

routes = Routes("profiles")


@routes.get("/profile", name="getMyProfile", summary="My profile", response=s.ProfileOut)
async def get_my_profile(call: Call) -> s.ProfileOut:
    """`found` is false until a profile was published."""
    node = call.node
    me = node.identity.public
    record, reputation = await asyncio.gather(node.profiles.get(me), node.trade.reputation(me))
    return profile_out(me, record, reputation)


@routes.put("/profile", name="putMyProfile", summary="Publish my profile",
            body=s.ProfileFields, response=s.ProfileOut)
async def put_my_profile(call: Call) -> s.ProfileOut:
    """Replaces the whole profile (signed, published in the DHT)."""
    node = call.node
    record = await node.profiles.publish(profile_body(call.body(s.ProfileFields)))
    return profile_out(node.identity.public, record)


@routes.get("/profiles/{peer_id}", name="getProfile",
            summary="Anyone's profile, with reputation", response=s.ProfileOut)
async def get_profile(call: Call) -> s.ProfileOut:
    """Reputation: the number of valid reviews and their mean stars."""
    node, peer = call.node, call.peer()
    record, reputation = await asyncio.gather(node.profiles.get(peer),
                                              node.trade.reputation(peer))
    return profile_out(peer, record, reputation)


@routes.get("/profiles/{peer_id}/reviews", name="listReviews",
            summary="Reviews of a seller, newest first", query=s.Paging,
            response=s.Page[s.ReviewOut])
async def list_reviews(call: Call) -> s.Page[s.ReviewOut]:
    """Only reviews by real buyers count: each is signed with a key the seller granted."""
    reviews = await call.node.trade.reviews_for(call.peer())
    items, token = page(reviews, call.query(s.Paging))
    return s.Page[s.ReviewOut](items=[review_out(r) for r in items], next_page_token=token)
