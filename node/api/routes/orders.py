"""Order routes: state and signed log, and each party's steps (address, payment, shipping,
receipt, settlement, cancellation) and the buyer's review."""

from __future__ import annotations

from node.api.context import Call, Reply, created
from node.api.convert import order_out, page, review_out
from node.api.registry import Routes
from p2pmarket.api import schemas as s
from p2pmarket.api import schemas_trade as t
from p2pmarket.identity import peer_id_from_public

routes = Routes("orders")
STEP_ERRORS = (409,)


@routes.get("/orders", name="listOrders", summary="My orders, latest change first",
            query=t.OrderQuery, response=t.OrderPage)
async def list_orders(call: Call) -> t.OrderPage:
    q = call.query(t.OrderQuery)
    trade = call.node.trade
    views = [trade.order(i) for i in trade.store.order_ids()]
    views = [v for v in views if (q.state is None or v.state == q.state)
             and (q.role is None or v.role == q.role)]
    items, token = page(views, q)
    return t.OrderPage(items=[order_out(v) for v in items], next_page_token=token)


@routes.get("/orders/{order_id}", name="getOrder", summary="One order with its log",
            response=t.OrderOut)
async def get_order(call: Call) -> t.OrderOut:
    """`can` lists the steps this node may take now."""
    return order_out(call.node.trade.order(call.path("order_id")))


@routes.get("/orders/{order_id}/log", name="getOrderLog",
            summary="The order's signed, hash-chained log", query=s.Paging,
            response=t.StepPage)
async def get_order_log(call: Call) -> t.StepPage:
    steps = order_out(call.node.trade.order(call.path("order_id"))).log
    items, token = page(steps, call.query(s.Paging))
    return t.StepPage(items=items, next_page_token=token)


@routes.post("/orders/{order_id}/address", name="sendAddress",
             summary="Buyer: send the shipping address (sealed to the seller)",
             body=t.AddressFields, response=t.OrderOut, errors=STEP_ERRORS)
async def send_address(call: Call) -> t.OrderOut:
    address = call.body(t.AddressFields).address
    return order_out(await call.node.trade.send_address(call.path("order_id"), address))


@routes.post("/orders/{order_id}/payment", name="confirmPayment",
             summary="Seller: confirm the payment arrived outside escrow",
             body=t.PaymentFields, response=t.OrderOut, errors=STEP_ERRORS)
async def confirm_payment(call: Call) -> t.OrderOut:
    """With escrow, the escrow driver confirms the funding instead."""
    f = call.body(t.PaymentFields)
    view = await call.node.trade.confirm_payment(call.path("order_id"), f.method, f.reference)
    return order_out(view)


@routes.post("/orders/{order_id}/ship", name="shipOrder",
             summary="Seller: mark shipped, with carrier and tracking", body=t.ShipFields,
             response=t.OrderOut, errors=STEP_ERRORS)
async def ship_order(call: Call) -> t.OrderOut:
    f = call.body(t.ShipFields)
    return order_out(await call.node.trade.mark_shipped(call.path("order_id"), f.carrier,
                                                        f.tracking))


@routes.post("/orders/{order_id}/confirm", name="confirmReceived",
             summary="Buyer: confirm the goods arrived", body=t.ConfirmFields,
             response=t.OrderOut, errors=STEP_ERRORS)
async def confirm_received(call: Call) -> t.OrderOut:
    """With a manual payment the seller's node then completes the order by itself."""
    note = call.body(t.ConfirmFields).note
    return order_out(await call.node.trade.confirm_received(call.path("order_id"), note))


@routes.post("/orders/{order_id}/settle", name="settleOrder",
             summary="Seller: close a received order", body=t.SettleFields,
             response=t.OrderOut, errors=STEP_ERRORS)
async def settle_order(call: Call) -> t.OrderOut:
    reference = call.body(t.SettleFields).reference
    return order_out(await call.node.trade.settle(call.path("order_id"), reference))


@routes.post("/orders/{order_id}/cancel", name="cancelOrder",
             summary="Either party: cancel before payment", body=s.ReasonBody,
             response=t.OrderOut, errors=STEP_ERRORS)
async def cancel_order(call: Call) -> t.OrderOut:
    reason = call.body(s.ReasonBody).reason
    return order_out(await call.node.trade.cancel(call.path("order_id"), reason))


@routes.post("/orders/{order_id}/review", name="reviewOrder",
             summary="Buyer: review the seller (again: replaces it)", body=t.ReviewFields,
             response=s.ReviewOut, status=201, errors=(409, 503))
async def review_order(call: Call) -> Reply:
    f = call.body(t.ReviewFields)
    record = await call.node.trade.review(call.path("order_id"), f.stars, f.text)
    seller = peer_id_from_public(record.body.seller)
    return created(review_out(record), f"/api/v1/profiles/{seller}/reviews")
