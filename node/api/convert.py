"""Domain objects to wire structs and back: keys become peer ids, hashes become hex.

Also the cursor helpers every list endpoint uses: tokens are opaque to clients.
"""

from __future__ import annotations

import base64
import enum
import functools
from collections.abc import Sequence
from typing import Any, NoReturn, TypeVar, get_args

import msgspec

from node.api.problems import ApiProblem, FieldError
from node.market.cache import Hit
from node.market.listings import ListingChange, ListingInvalid, build_listing, new_listing_id
from node.market.profiles import ProfileInvalid
from node.trade.negotiation import NegotiationState, Proposal
from node.trade.orders import OrderState, Role
from node.trade.store import NegotiationView, OrderView, StepView
from p2pmarket.api import schemas as s
from p2pmarket.api import schemas_trade as t
from p2pmarket.identity import PeerIdError, peer_id_from_public, public_from_peer_id
from p2pmarket.wire import market as mm
from p2pmarket.wire.bodies import ImageRef as BodyImageRef
from p2pmarket.wire.bodies import Listing, Profile, Review
from p2pmarket.wire.records import Record

T = TypeVar("T")
E = TypeVar("E", bound=enum.StrEnum)


def literal_map(kind: type[E], literal: object) -> dict[E, Any]:
    """The node's enum onto the wire schema's literal, checked to match at import time."""
    if {e.value for e in kind} != set(get_args(literal)):
        raise RuntimeError(f"the wire schema's values for {kind.__name__} are out of date")
    return {e: e.value for e in kind}


ROLES: dict[Role, t.Role] = literal_map(Role, t.Role)
OFFER_STATES: dict[NegotiationState, t.OfferState] = literal_map(NegotiationState, t.OfferState)
ORDER_STATES: dict[OrderState, t.OrderState] = literal_map(OrderState, t.OrderState)
# base58 is slow in Python and the same few sellers recur in every answer
pid = functools.lru_cache(maxsize=4096)(peer_id_from_public)


# -- pagination ----------------------------------------------------------------------------------


def key_token(kind: str, value: str) -> str:
    """An opaque cursor: `kind` says what `value` is (an offset, an id, a time)."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def read_key(token: str, kind: str) -> str:
    try:
        found, _, value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode(
        ).partition(":")
        if found == kind and value:
            return value
    except (ValueError, UnicodeDecodeError):
        pass
    bad_token()


def bad_token() -> NoReturn:
    raise ApiProblem("validation", "page_token is not a token this node gave out", errors=[
        FieldError(detail="unknown page token", parameter="page_token")])


def offset_token(offset: int) -> str:
    return key_token("o", str(offset))


def read_offset(token: str | None) -> int:
    if not token:
        return 0
    value = read_key(token, "o")
    if not value.isdigit():
        bad_token()
    return int(value)


def page(items: Sequence[T], paging: s.Paging) -> tuple[list[T], str | None]:
    """A slice of an in-memory list and the token for the rest."""
    start = read_offset(paging.page_token)
    end = start + paging.page_size
    return list(items[start:end]), offset_token(end) if end < len(items) else None


# -- listings ------------------------------------------------------------------------------------


def image_out(ref: BodyImageRef) -> s.ImageRef:
    return s.ImageRef(sha256=ref.sha256.hex(), mime=ref.mime, size=ref.size)


def listing_out(record: Record[Listing], me: bytes, published_at: float | None = None
                ) -> s.ListingOut:
    body = record.body
    return s.ListingOut(
        publisher=pid(record.publisher), id=body.id, seq=record.seq, created=record.created,
        expires=record.expires, hash=mm.listing_hash(record).hex(), mine=record.publisher == me,
        title=body.title, description=body.description, price=body.price,
        category=body.category, condition=body.condition, quantity=body.quantity,
        location=body.location, shipping=list(body.shipping),
        images=[image_out(i) for i in body.images], tags=list(body.tags),
        arbiters=[pid(a) for a in body.arbiters], escrow=body.escrow,
        published_at=published_at)


def hit_out(hit: Hit, me: bytes) -> s.SearchHit:
    return s.SearchHit(listing=listing_out(hit.record, me), distance_km=hit.distance_km,
                       rank=hit.rank)


def _body_fields(wire: s.ListingFields | s.ListingPatch) -> dict[str, Any]:
    """The API's fields as the listing body's builtins: sha256 as bytes, arbiters as keys."""
    fields: dict[str, Any] = msgspec.to_builtins(wire)
    if fields.get("escrow") is None:
        fields.pop("escrow", None)
    fields.pop("id", None)
    if "images" in fields:
        fields["images"] = [{**i, "sha256": bytes.fromhex(i["sha256"])} for i in fields["images"]]
    if "arbiters" in fields:
        fields["arbiters"] = [public_key(a, pointer=f"/arbiters/{n}")
                              for n, a in enumerate(fields["arbiters"])]
    return fields


def listing_body(wire: s.ListingFields) -> Listing:
    """A new listing from the API's fields; the node picks the id when the caller did not."""
    return build_listing({**_body_fields(wire), "id": wire.id or new_listing_id()})


def listing_change(wire: s.ListingPatch) -> ListingChange:
    try:
        return msgspec.convert(_body_fields(wire), type=ListingChange, strict=False)
    except msgspec.ValidationError as exc:
        raise ListingInvalid(str(exc)) from exc


def profile_body(wire: s.ProfileFields) -> Profile:
    fields = {k: v for k, v in msgspec.to_builtins(wire).items() if v is not None}
    if "avatar" in fields:
        fields["avatar"] = {**fields["avatar"], "sha256": bytes.fromhex(fields["avatar"]["sha256"])}
    try:
        return msgspec.convert(fields, type=Profile, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ProfileInvalid(str(exc)) from exc


# -- profiles and reviews ------------------------------------------------------------------------


def profile_out(peer: bytes, record: Record[Profile] | None,
                reputation: tuple[int, float] = (0, 0.0)) -> s.ProfileOut:
    count, mean = reputation
    rating = mean if count else None
    if record is None:
        return s.ProfileOut(peer=pid(peer), found=False, reviews=count, rating=rating)
    body = record.body
    return s.ProfileOut(peer=pid(peer), found=True, name=body.name, bio=body.bio,
                        avatar=image_out(body.avatar) if body.avatar else None,
                        location=body.location, seq=record.seq, reviews=count, rating=rating)


def review_out(record: Record[Review]) -> s.ReviewOut:
    body = record.body
    return s.ReviewOut(seller=pid(body.seller), order_id=body.order_id, rating=body.rating,
                       text=body.text, created=record.created, rating_key=record.publisher.hex())


# -- offers and orders ---------------------------------------------------------------------------


def ref_out(ref: mm.ListingRef) -> t.ListingRefOut:
    return t.ListingRefOut(id=ref.id, seq=ref.seq, hash=ref.hash.hex())


def proposal_out(p: Proposal) -> t.ProposalOut:
    return t.ProposalOut(id=p.id, by=ROLES[p.by], listing=ref_out(p.listing), quantity=p.quantity,
                         price=p.price, note=p.note)


def offer_out(v: NegotiationView) -> t.OfferOut:
    return t.OfferOut(id=v.id, role=ROLES[v.role], state=OFFER_STATES[v.state],
                      seller=pid(v.seller),
                      buyer=pid(v.buyer), listing=ref_out(v.listing), title=v.title,
                      proposals=[proposal_out(p) for p in v.proposals], stale=v.stale,
                      order_id=v.order_id, reason=v.reason, updated=v.updated)


def action_out(a: mm.Action) -> t.StepAction:
    match a:
        case mm.Opened():
            return t.Opened(offer=a.negotiation, proposal=a.proposal, listing=ref_out(a.listing),
                            title=a.title, quantity=a.quantity, price=a.price,
                            buyer=pid(a.buyer), seller=pid(a.seller))
        case mm.AddressSent():
            return t.AddressGiven()
        case mm.PaymentConfirmed():
            return t.Paid(method=a.method, reference=a.reference)
        case mm.Shipped():
            return t.ShippedOut(carrier=a.carrier, tracking=a.tracking)
        case mm.Received():
            return t.ReceivedOut(note=a.note)
        case mm.Settled():
            return t.SettledOut(reference=a.reference)
        case mm.Cancelled():
            return t.CancelledOut(reason=a.reason)
    raise AssertionError(f"unknown order action {a!r}")


def step_out(step: StepView) -> t.StepOut:
    return t.StepOut(index=step.index, hash=step.hash, by=ROLES[step.by], at_ms=step.at_ms,
                     action=action_out(step.action))


def order_out(v: OrderView) -> t.OrderOut:
    payment = action_out(v.payment) if v.payment is not None else None
    shipment = action_out(v.shipment) if v.shipment is not None else None
    assert payment is None or isinstance(payment, t.Paid)
    assert shipment is None or isinstance(shipment, t.ShippedOut)
    return t.OrderOut(id=v.id, offer=v.negotiation, role=ROLES[v.role],
                      state=ORDER_STATES[v.state],
                      seller=pid(v.seller), buyer=pid(v.buyer), listing=ref_out(v.listing),
                      title=v.title, quantity=v.quantity, price=v.price, payment=payment,
                      shipment=shipment, address=v.address, can=list(v.can),
                      log=[step_out(e) for e in v.log])


def public_key(peer_id: str, *, parameter: str | None = None, pointer: str | None = None
               ) -> bytes:
    """The public key a peer id names; a 422 naming the field when it is not one."""
    try:
        return public_from_peer_id(peer_id)
    except PeerIdError as exc:
        raise ApiProblem("validation", str(exc), errors=[
            FieldError(detail=str(exc), parameter=parameter, pointer=pointer)]) from None
