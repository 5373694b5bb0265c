"""The escrow driver's views and events as the API's wire types: `escrow_out` (with what this
node's party may do next) and `escrow_event` (the `escrow.changed` event).

Escrow errors need no translation here: `node.api.problems` maps them by type.
"""

from __future__ import annotations

from escrow.terms import Role, State
from node.escrow.book import EscrowChanged, EscrowUpdate, EscrowView
from p2pmarket.api import events as ev
from p2pmarket.api import schemas_trade as t

# what each party may do next, by escrow state (the machine still has the last word)
NEXT: dict[tuple[Role, State], list[str]] = {
    (Role.BUYER, State.FUNDED): ["release", "dispute"],
    (Role.BUYER, State.SHIPPED): ["release", "dispute"],
    (Role.SELLER, State.FUNDED): ["refund", "dispute"],
    (Role.SELLER, State.SHIPPED): ["refund", "dispute"],
    (Role.BUYER, State.DISPUTED): ["evidence", "accept-ruling", "release"],
    (Role.SELLER, State.DISPUTED): ["evidence", "accept-ruling", "refund"],
    (Role.ARBITER, State.DISPUTED): ["rule"],
}


def escrow_out(view: EscrowView) -> t.EscrowOut:
    deadlines = sorted(view.deadlines.values())
    return t.EscrowOut(order_id=view.order, state=str(view.state), address=view.address,
                       amount_sat=view.amount_sats, funding_txid=view.funding_txid,
                       deadline=float(deadlines[0]) if deadlines else None,
                       can=[a for a in NEXT.get((view.role, view.state), [])
                            if f"{a}:{view.role}" not in view.signed])


def escrow_event(update: EscrowUpdate) -> ev.EscrowEvent | None:
    """The `escrow.changed` event for an applied step (refusals and notices are not sent)."""
    if not isinstance(update, EscrowChanged):
        return None
    return ev.EscrowEvent(order=update.order, state=str(update.state), step=update.kind)
