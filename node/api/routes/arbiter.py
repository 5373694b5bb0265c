"""Arbiter routes: this node's advert in the DHT's arbiter directory, the disputes it arbitrates
(both parties' case files and statements) and its ruling; `node.escrow.adverts` and
`node.escrow.arbiters` do the work.

Publishing an advert and everything about disputes need the escrow (a node without a chain
cannot arbitrate: 501); reading and withdrawing the advert work on any node.
"""

from __future__ import annotations

from escrow.terms import LocalEscrowError, State
from escrow.terms import Role as EscrowRole
from node.api.context import Call
from node.api.convert import literal_map, page, pid
from node.api.problems import ApiProblem, validation_problem
from node.api.registry import Routes
from node.escrow.arbiters import ArbiterService, CaseFile, DisputeView
from node.escrow.driver import EscrowDriver
from p2pmarket.api import schemas as s
from p2pmarket.api import schemas_trade as t
from p2pmarket.wire.bodies import Arbiter
from p2pmarket.wire.records import Record

# arbitration is part of the escrow, and like its routes answers 501 on a node without a chain
routes = Routes("escrow")
NO_ESCROW = 501
PARTIES: dict[EscrowRole, t.Party] = literal_map(EscrowRole, t.Party)
SIDES: dict[str, t.Role] = {"buyer": "buyer", "seller": "seller"}


def escrow(call: Call) -> EscrowDriver:
    """The node's escrow driver; 501 when it has none (no chain configured)."""
    driver = call.node.escrow
    if driver is None:
        raise ApiProblem("not-implemented", "arbitration needs the escrow, and this node has no "
                                            "chain configured")
    return driver


def arbiter_out(record: Record[Arbiter]) -> s.ArbiterOut:
    body = record.body
    return s.ArbiterOut(peer=pid(record.publisher), name=body.name,
                        description=body.description, fee_percent_bp=body.fee_percent_bp,
                        fee_fixed_sat=body.fee_fixed_sat, expires=record.expires)


def side(role: EscrowRole | str) -> t.Role:
    """A case file comes from the buyer or the seller, never from the arbiter."""
    found = SIDES.get(str(role))
    if found is None:
        raise AssertionError(f"a case file or step by the {role}")
    return found


def case_out(case: CaseFile) -> t.CaseFileOut:
    return t.CaseFileOut(
        party=side(case.party),
        steps=[t.CaseStepOut(index=c.index, by=side(c.by), at_ms=c.at_ms, kind=c.kind)
               for c in case.steps],
        head=case.head, listing_title=case.listing_title,
        listing_description=case.listing_description, listing_matches=case.listing_matches,
        received=case.at)


def dispute_out(v: DisputeView, driver: EscrowDriver) -> t.DisputeOut:
    r = v.ruling
    esc = driver.escrows.get(v.order)
    fee_min, fee_max = (esc.terms.min_fee_sats, esc.terms.max_fee_sats) if esc else (0, 0)
    return t.DisputeOut(
        network_fee_min_sat=fee_min, network_fee_max_sat=fee_max,
        order_id=v.order, state=str(v.state), amount_sat=v.amount_sats,
        max_fee_sat=v.max_fee_sats, buyer=pid(v.buyer), seller=pid(v.seller),
        opened_by=PARTIES[v.opened_by] if v.opened_by is not None else None,
        heard=[PARTIES[h] for h in v.heard],
        ruling_due=float(v.ruling_due) if v.ruling_due is not None else None,
        can_rule=v.can_rule,
        statements=[t.StatementOut(by=PARTIES[st.by], kind=st.kind, text=st.text,
                                   attachments=list(st.attachments)) for st in v.statements],
        cases=[case_out(c) for c in v.cases],
        ruling=t.RulingOut(buyer_sat=r.buyer_sats, seller_sat=r.seller_sats,
                           fee_sat=r.fee_sats, note=r.note) if r is not None else None)


def arbitrated(call: Call) -> tuple[ArbiterService, DisputeView]:
    """The dispute named in the path; 404 unless this node is its escrow's arbiter and it was
    disputed (the same escrows `GET /disputes` lists)."""
    driver, order_id = escrow(call), call.path("order_id")
    esc = driver.escrows.get(order_id)
    if esc is None or esc.role is not EscrowRole.ARBITER or esc.machine.disputed_by is None:
        raise ApiProblem("not-found", f"this node arbitrates no dispute on order {order_id}")
    service = call.node.arbiters
    return service, service.dispute(order_id)


# -- the advert ----------------------------------------------------------------------------------


@routes.get("/arbiter", name="getArbiterAdvert", summary="My arbiter advert",
            response=s.ArbiterOut, errors=(404,))
async def get_arbiter_advert(call: Call) -> s.ArbiterOut:
    """404 when this node does not serve as an arbiter (never did, or withdrew)."""
    record = call.node.adverts.advert()
    if record is None:
        raise ApiProblem("not-found", "this node has no live arbiter advert")
    return arbiter_out(record)


@routes.put("/arbiter", name="publishArbiterAdvert",
            summary="Serve as an arbiter: sign my advert and put it in the DHT",
            body=t.ArbiterFields, response=s.ArbiterOut, errors=(NO_ESCROW,))
async def publish_arbiter_advert(call: Call) -> s.ArbiterOut:
    """Replaces my previous advert (new terms apply to escrows proposed from now on). Needs the
    escrow: a node without a chain could not take part in the escrows it is named in."""
    f = call.body(t.ArbiterFields)
    escrow(call)
    try:
        record = await call.node.adverts.publish(f.name, f.description, f.fee_percent_bp,
                                                 f.fee_fixed_sat)
    except LocalEscrowError as exc:  # the record's own limits (the wire schema has the same)
        raise validation_problem(exc) from None
    return arbiter_out(record)


@routes.delete("/arbiter", name="withdrawArbiterAdvert",
               summary="Stop serving as an arbiter (a tombstone replaces my advert)",
               errors=(404,))
async def withdraw_arbiter_advert(call: Call) -> None:
    """Escrows this node already arbitrates keep it as their arbiter; new ones cannot name it."""
    adverts = call.node.adverts
    if adverts.advert() is None:
        raise ApiProblem("not-found", "this node has no live arbiter advert to withdraw")
    await adverts.withdraw()


# -- disputes ------------------------------------------------------------------------------------


@routes.get("/disputes", name="listDisputes", summary="Disputes I arbitrate, newest first",
            query=s.Paging, response=s.Page[t.DisputeOut], errors=(NO_ESCROW,))
async def list_disputes(call: Call) -> s.Page[t.DisputeOut]:
    """Every escrow this node arbitrates that was ever disputed, ruled on or not."""
    driver = escrow(call)
    items, token = page(call.node.arbiters.disputes(), call.query(s.Paging))
    return s.Page[t.DisputeOut](items=[dispute_out(v, driver) for v in items],
                                next_page_token=token)


@routes.get("/disputes/{order_id}", name="getDispute",
            summary="One dispute: both parties' case files, statements and my ruling",
            response=t.DisputeOut, errors=(NO_ESCROW,))
async def get_dispute(call: Call) -> t.DisputeOut:
    return dispute_out(arbitrated(call)[1], escrow(call))


@routes.post("/disputes/{order_id}/rule", name="ruleCase",
             summary="Rule: split the escrow and sign it", body=t.RulingFields,
             response=t.DisputeOut, errors=(409, NO_ESCROW))
async def rule_case(call: Call) -> t.DisputeOut:
    """Allowed once both parties were heard, or from the ruling deadline on when one never
    answered. My fee is the one agreed in the terms; the miner fee is what the split leaves.
    The party with the larger share co-signs at once, the other may accept the ruling."""
    f = call.body(t.RulingFields)
    service, view = arbitrated(call)
    if view.state is State.DISPUTED and view.ruling is None and not view.can_rule:
        missing = [str(p) for p in (EscrowRole.BUYER, EscrowRole.SELLER) if p not in view.heard]
        raise ApiProblem("conflict", f"not yet: the {' and the '.join(missing)} must be heard "
                                     "first, or the ruling deadline pass")
    if f.buyer_sat + f.seller_sat + view.max_fee_sats > view.amount_sats:
        raise ApiProblem("conflict", f"buyer_sat + seller_sat = {f.buyer_sat + f.seller_sat} "
                                     f"plus my fee of {view.max_fee_sats} is more than the "
                                     f"{view.amount_sats} sats in the escrow (the miner fee "
                                     "comes out of it too)")
    driver = escrow(call)
    out = dispute_out(view, driver)
    miner = view.amount_sats - f.buyer_sat - f.seller_sat - view.max_fee_sats
    if view.ruling is None and not (
            out.network_fee_min_sat <= miner <= out.network_fee_max_sat):
        raise ApiProblem("conflict", f"the split leaves {miner} sats for the miner fee; the "
                                     f"escrow terms allow {out.network_fee_min_sat} to "
                                     f"{out.network_fee_max_sat} (give the rest to a party)")
    # the escrow machine has the last word on what is allowed (its refusals answer 409)
    return dispute_out(await service.rule(view.order, f.buyer_sat, f.seller_sat, f.note), driver)
