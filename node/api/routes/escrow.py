"""Escrow and wallet routes. They answer 501 `not-implemented` until the node has an `escrow`
attribute that provides `EscrowService` (below); from then on they call it.

The routes (and so the OpenAPI document and the client) exist now, so scripts and the TUI can be
written against them; the escrow driver plugs in by setting `node.escrow`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from node.api.context import Call
from node.api.escrow_view import escrow_api
from node.api.problems import ApiProblem
from node.api.registry import Routes
from node.escrow.driver import EscrowDriver
from p2pmarket.api import schemas_trade as t

routes = Routes("escrow")
NOT_YET = (501,)


class EscrowChange(Protocol):
    """What the escrow service tells its listeners (the API sends `escrow.changed`)."""

    @property
    def order(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def step(self) -> str: ...


@runtime_checkable
class EscrowService(Protocol):
    """The escrow driver as the API uses it (`node.escrow`). Each call acts for this node's
    role in the order and answers with the escrow's state after it; errors are the trade
    layer's (`node.trade.errors.TradeError` subclasses) so they map to problems."""

    listeners: list[Callable[[EscrowChange], None]]

    async def status(self, order_id: str) -> t.EscrowOut: ...
    async def fund(self, order_id: str, fee_rate_sat_vb: int | None) -> t.EscrowOut: ...
    async def release(self, order_id: str) -> t.EscrowOut: ...
    async def refund(self, order_id: str) -> t.EscrowOut: ...
    async def dispute(self, order_id: str, reason: str) -> t.EscrowOut: ...
    async def add_evidence(self, order_id: str, text: str) -> t.EscrowOut: ...
    async def rule(self, order_id: str, buyer_sat: int, seller_sat: int,
                   note: str) -> t.EscrowOut: ...
    async def accept_ruling(self, order_id: str) -> t.EscrowOut: ...
    async def wallet_balance(self) -> t.WalletOut: ...
    async def receive_address(self) -> str: ...


def escrow(call: Call) -> EscrowService:
    """`node.escrow` when it provides `EscrowService`; else 501 (no escrow on this node, or a
    driver without this interface: it is not called half-way)."""
    service = getattr(call.node, "escrow", None)
    if service is None:
        raise ApiProblem("not-implemented", "escrow and wallet are not available on this node "
                                            "yet; pay outside escrow (POST .../payment)")
    if isinstance(service, EscrowDriver):
        return escrow_api(service)
    if not isinstance(service, EscrowService):
        raise ApiProblem("not-implemented", "this node's escrow driver does not offer the "
                                            "API's escrow interface yet")
    return service


@routes.get("/orders/{order_id}/escrow", name="getEscrow", summary="The order's escrow",
            response=t.EscrowOut, errors=NOT_YET)
async def get_escrow(call: Call) -> t.EscrowOut:
    return await escrow(call).status(call.path("order_id"))


@routes.post("/orders/{order_id}/escrow/fund", name="fundEscrow",
             summary="Buyer: pay the escrow from the node's wallet", body=t.FundFields,
             response=t.EscrowOut, errors=(409, *NOT_YET))
async def fund_escrow(call: Call) -> t.EscrowOut:
    fee = call.body(t.FundFields).fee_rate_sat_vb
    return await escrow(call).fund(call.path("order_id"), fee)


@routes.post("/orders/{order_id}/escrow/release", name="releaseEscrow",
             summary="Sign the release to the seller", response=t.EscrowOut,
             errors=(409, *NOT_YET))
async def release_escrow(call: Call) -> t.EscrowOut:
    return await escrow(call).release(call.path("order_id"))


@routes.post("/orders/{order_id}/escrow/refund", name="refundEscrow",
             summary="Sign the refund to the buyer", response=t.EscrowOut,
             errors=(409, *NOT_YET))
async def refund_escrow(call: Call) -> t.EscrowOut:
    return await escrow(call).refund(call.path("order_id"))


@routes.post("/orders/{order_id}/escrow/dispute", name="openDispute",
             summary="Ask the arbiter to rule", body=t.DisputeFields, response=t.EscrowOut,
             errors=(409, *NOT_YET))
async def open_dispute(call: Call) -> t.EscrowOut:
    return await escrow(call).dispute(call.path("order_id"), call.body(t.DisputeFields).reason)


@routes.post("/orders/{order_id}/escrow/evidence", name="addEvidence",
             summary="Add evidence to a dispute", body=t.EvidenceFields,
             response=t.EscrowOut, errors=(409, *NOT_YET))
async def add_evidence(call: Call) -> t.EscrowOut:
    text = call.body(t.EvidenceFields).text
    return await escrow(call).add_evidence(call.path("order_id"), text)


@routes.post("/orders/{order_id}/escrow/rule", name="ruleDispute",
             summary="Arbiter: propose the split and sign it", body=t.RulingFields,
             response=t.EscrowOut, errors=(409, *NOT_YET))
async def rule_dispute(call: Call) -> t.EscrowOut:
    f = call.body(t.RulingFields)
    return await escrow(call).rule(call.path("order_id"), f.buyer_sat, f.seller_sat, f.note)


@routes.post("/orders/{order_id}/escrow/accept-ruling", name="acceptRuling",
             summary="Co-sign the arbiter's ruling", response=t.EscrowOut,
             errors=(409, *NOT_YET))
async def accept_ruling(call: Call) -> t.EscrowOut:
    return await escrow(call).accept_ruling(call.path("order_id"))


@routes.get("/wallet", name="getWallet", summary="The node wallet's balance",
            response=t.WalletOut, errors=NOT_YET)
async def get_wallet(call: Call) -> t.WalletOut:
    return await escrow(call).wallet_balance()


@routes.post("/wallet/address", name="newReceiveAddress",
             summary="A fresh address to receive funds", response=t.AddressOut,
             errors=NOT_YET)
async def new_receive_address(call: Call) -> t.AddressOut:
    return t.AddressOut(address=await escrow(call).receive_address())
