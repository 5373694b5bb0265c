"""Escrow routes: the node's escrow driver (`node.escrow`) acting for this node's role
in the order, answered with the escrow's state after it. A node without a chain has no driver:
the routes (and so the OpenAPI document and the client) still exist and answer 501.

Escrow errors map to problems by type (`node.api.problems`): an unknown escrow is 404, an action
the escrow does not allow now is 409.
"""

from __future__ import annotations

from node.api.context import Call
from node.api.escrow_view import escrow_out
from node.api.problems import ApiProblem
from node.api.registry import Routes
from node.escrow.driver import EscrowDriver
from p2pmarket.api import schemas_trade as t

routes = Routes("escrow")
NOT_YET = (501,)


def escrow(call: Call) -> EscrowDriver:
    """The node's escrow driver; 501 when it has none (no chain configured)."""
    driver = call.node.escrow
    if driver is None:
        raise ApiProblem("not-implemented", "escrow and wallet are not available on this node "
                                            "yet; pay outside escrow (POST .../payment)")
    return driver


@routes.get("/orders/{order_id}/escrow", name="getEscrow", summary="The order's escrow",
            response=t.EscrowOut, errors=NOT_YET)
async def get_escrow(call: Call) -> t.EscrowOut:
    return escrow_out(escrow(call).view(call.path("order_id")))


@routes.post("/orders/{order_id}/escrow/fund", name="fundEscrow",
             summary="Buyer: pay the escrow from the node's wallet", body=t.FundFields,
             response=t.EscrowOut, errors=(409, *NOT_YET))
async def fund_escrow(call: Call) -> t.EscrowOut:
    call.body(t.FundFields)  # fee_rate_sat_vb: the node funds at the escrow's configured rate
    return escrow_out(await escrow(call).start(call.path("order_id")))


@routes.post("/orders/{order_id}/escrow/release", name="releaseEscrow",
             summary="Sign the release to the seller", response=t.EscrowOut,
             errors=(409, *NOT_YET))
async def release_escrow(call: Call) -> t.EscrowOut:
    return escrow_out(await escrow(call).release(call.path("order_id")))


@routes.post("/orders/{order_id}/escrow/refund", name="refundEscrow",
             summary="Sign the refund to the buyer", response=t.EscrowOut,
             errors=(409, *NOT_YET))
async def refund_escrow(call: Call) -> t.EscrowOut:
    return escrow_out(await escrow(call).refund(call.path("order_id")))


@routes.post("/orders/{order_id}/escrow/dispute", name="openDispute",
             summary="Ask the arbiter to rule", body=t.DisputeFields, response=t.EscrowOut,
             errors=(409, *NOT_YET))
async def open_dispute(call: Call) -> t.EscrowOut:
    reason = call.body(t.DisputeFields).reason
    return escrow_out(await escrow(call).dispute(call.path("order_id"), reason))


@routes.post("/orders/{order_id}/escrow/evidence", name="addEvidence",
             summary="Add evidence to a dispute", body=t.EvidenceFields,
             response=t.EscrowOut, errors=(409, *NOT_YET))
async def add_evidence(call: Call) -> t.EscrowOut:
    text = call.body(t.EvidenceFields).text
    return escrow_out(await escrow(call).add_evidence(call.path("order_id"), text))


@routes.post("/orders/{order_id}/escrow/rule", name="ruleDispute",
             summary="Arbiter: propose the split and sign it", body=t.RulingFields,
             response=t.EscrowOut, errors=(409, *NOT_YET))
async def rule_dispute(call: Call) -> t.EscrowOut:
    f = call.body(t.RulingFields)
    driver = escrow(call)
    return escrow_out(await driver.rule(call.path("order_id"), f.buyer_sat, f.seller_sat, f.note))


@routes.post("/orders/{order_id}/escrow/accept-ruling", name="acceptRuling",
             summary="Co-sign the arbiter's ruling", response=t.EscrowOut,
             errors=(409, *NOT_YET))
async def accept_ruling(call: Call) -> t.EscrowOut:
    return escrow_out(await escrow(call).accept_ruling(call.path("order_id")))
