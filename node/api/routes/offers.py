"""Offer routes: negotiations on listings (make, counter, accept, decline, withdraw)."""

from __future__ import annotations

from node.api.context import Call, Reply, created
from node.api.convert import offer_out, page, public_key
from node.api.problems import ApiProblem
from node.api.registry import Routes
from node.api.routes.listings import find_listing
from p2pmarket.api import schemas as s
from p2pmarket.api import schemas_trade as t

routes = Routes("offers")


@routes.get("/offers", name="listOffers", summary="My negotiations, latest change first",
            query=s.Paging, response=t.OfferPage)
async def list_offers(call: Call) -> t.OfferPage:
    """As buyer and as seller (`role` says which)."""
    trade = call.node.trade
    ids, token = page(trade.store.negotiation_ids(), call.query(s.Paging))
    return t.OfferPage(items=[offer_out(trade.negotiation(i)) for i in ids],
                       next_page_token=token)


@routes.post("/offers", name="makeOffer", summary="Make an offer on a listing",
             body=t.OfferFields, response=t.OfferOut, status=201, errors=(409,))
async def make_offer(call: Call) -> Reply:
    """Fetches the listing's newest version first; the offer is bound to it."""
    fields = call.body(t.OfferFields)
    node = call.node
    seller = public_key(fields.seller, pointer="/seller")
    record = await find_listing(node, seller, fields.listing_id, refresh=True)
    if record is None:
        raise ApiProblem("not-found", f"no listing {fields.listing_id} of that seller found")
    view = await node.trade.make_offer(record, fields.quantity, fields.amount, fields.note)
    return created(offer_out(view), f"/api/v1/offers/{view.id}")


@routes.get("/offers/{offer_id}", name="getOffer", summary="One negotiation",
            response=t.OfferOut)
async def get_offer(call: Call) -> t.OfferOut:
    return offer_out(call.node.trade.negotiation(call.path("offer_id")))


@routes.post("/offers/{offer_id}/counter", name="counterOffer", summary="Propose other terms",
             body=t.CounterFields, response=t.OfferOut, errors=(409,))
async def counter_offer(call: Call) -> t.OfferOut:
    f = call.body(t.CounterFields)
    view = await call.node.trade.counter(call.path("offer_id"), f.quantity, f.amount, f.note)
    return offer_out(view)


@routes.post("/offers/{offer_id}/accept", name="acceptOffer",
             summary="Accept the other side's latest proposal", response=t.OfferOut,
             errors=(409,))
async def accept_offer(call: Call) -> t.OfferOut:
    """As the seller this makes the order (`order_id`); as the buyer the state is `accepting`
    until the seller's node confirms (an `offer.changed` event)."""
    return offer_out(await call.node.trade.accept(call.path("offer_id")))


@routes.post("/offers/{offer_id}/decline", name="declineOffer", summary="Refuse and end it",
             body=s.ReasonBody, response=t.OfferOut, errors=(409,))
async def decline_offer(call: Call) -> t.OfferOut:
    reason = call.body(s.ReasonBody).reason
    return offer_out(await call.node.trade.decline(call.path("offer_id"), reason))


@routes.post("/offers/{offer_id}/withdraw", name="withdrawOffer",
             summary="Take my proposals back and end it", body=s.ReasonBody,
             response=t.OfferOut, errors=(409,))
async def withdraw_offer(call: Call) -> t.OfferOut:
    reason = call.body(s.ReasonBody).reason
    return offer_out(await call.node.trade.withdraw(call.path("offer_id"), reason))
