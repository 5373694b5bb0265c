"""The sans-IO negotiation state machine: one `Negotiation` per (listing, buyer) conversation.

Everything that affects a negotiation's state lives in this file: `TRANSITIONS` (legal both
ways; a key is (state, author's role, message kind)), `CROSSING` (what a peer may still send
before it has seen our last message: received only) and the guards in `Negotiation`. The events
are the message bodies themselves (`p2pmarket.wire.market`).

Decisions beyond the design page, written down here:
- Either side proposes any number of times (`Counter`); OPEN means the buyer spoke last,
  COUNTERED the seller. Each party's latest proposal stands until it proposes again.
- An accept names one proposal. The seller's accept is binding (it carries the order's first
  signed step, `orders.Order`). The buyer's accept moves to ACCEPTING and the seller's node
  answers: its own accept (the order) if that proposal is still its latest and the listing is
  unchanged and in stock, or a decline with the reason. A seller counter that crossed the buyer's
  accept voids it (back to COUNTERED).
- Accepts can cross, as the buyer's latest proposal still stands while it accepts the seller's:
  a seller's accept of one of the buyer's own proposals that arrives in ACCEPTING is not a wrong
  confirmation but the seller's binding accept, and the order is on that proposal (the seller's
  node drops the buyer's crossing accept). Only the seller's own proposals need confirming.
- A seller's accept that crosses the buyer's withdraw or decline still makes the order (the
  seller's node already did); the buyer's node then cancels it before payment.
- Staleness and terms are checked by the shell with `check_fresh` / `check_terms`, which need
  the listing record; the machine only keeps the bindings.
"""

from __future__ import annotations

import enum

import msgspec

from node.trade.errors import (
    IllegalEvent,
    InvalidTerms,
    LocalProtocolError,
    RemoteProtocolError,
    StaleOffer,
    WrongRole,
)
from node.trade.orders import Role
from p2pmarket.wire.bodies import Listing, Price
from p2pmarket.wire.market import (
    Accept,
    Counter,
    Decline,
    ListingRef,
    NegotiationBody,
    Offer,
    Withdraw,
    listing_ref,
    order_id_for,
)
from p2pmarket.wire.records import Record


class NegotiationState(enum.StrEnum):
    OPEN = "open"
    COUNTERED = "countered"
    ACCEPTING = "accepting"  # the buyer accepted; waiting for the seller's node to confirm
    ACCEPTED = "accepted"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"


B, S = Role.BUYER, Role.SELLER
N = NegotiationState
IGNORE = None  # a CROSSING target: the message is dropped quietly
_TALKING = (N.OPEN, N.COUNTERED)
_ENDED = (N.DECLINED, N.WITHDRAWN)

TRANSITIONS: dict[tuple[NegotiationState, Role, type[NegotiationBody]], NegotiationState] = {
    **{(s, B, Counter): N.OPEN for s in _TALKING},
    **{(s, S, Counter): N.COUNTERED for s in _TALKING},
    **{(s, S, Accept): N.ACCEPTED for s in _TALKING},
    **{(s, B, Accept): N.ACCEPTING for s in _TALKING},
    **{(s, r, Decline): N.DECLINED for s in _TALKING for r in (B, S)},
    **{(s, r, Withdraw): N.WITHDRAWN for s in _TALKING for r in (B, S)},
    (N.ACCEPTING, S, Accept): N.ACCEPTED,
    (N.ACCEPTING, S, Decline): N.DECLINED,
}
CROSSING: dict[tuple[NegotiationState, Role, type[NegotiationBody]], NegotiationState | None] = {
    (N.ACCEPTING, S, Counter): N.COUNTERED,
    (N.ACCEPTING, S, Withdraw): N.WITHDRAWN,
    **{(N.ACCEPTED, B, kind): IGNORE for kind in (Counter, Accept, Decline, Withdraw)},
    **{(s, B, kind): IGNORE for s in _ENDED for kind in (Counter, Accept, Decline, Withdraw)},
    **{(s, S, kind): IGNORE for s in _ENDED for kind in (Counter, Decline, Withdraw)},
    **{(s, S, Accept): N.ACCEPTED for s in _ENDED},  # guarded: only if the buyer ended it
}
MAX_AMOUNT = 2**53
FINAL_STATES = frozenset({N.ACCEPTED, N.DECLINED, N.WITHDRAWN})
VERBS = {Offer: "offer", Counter: "counter", Accept: "accept", Decline: "decline",
         Withdraw: "withdraw"}


class Proposal(msgspec.Struct, frozen=True):
    id: str
    by: Role
    listing: ListingRef
    quantity: int
    price: Price
    note: str = ""


def check_terms(listing: Listing, quantity: int, price: Price) -> None:
    """Raise `InvalidTerms` unless the terms fit the listing."""
    if price.currency != listing.price.currency:
        raise InvalidTerms(f"price must be in {listing.price.currency}, the listing's currency")
    if not 1 <= quantity <= listing.quantity:
        raise InvalidTerms(f"quantity must be 1..{listing.quantity} (in stock), got {quantity}"
                           if listing.quantity else "the listing is sold out")
    if price.amount <= 0 < listing.price.amount or price.amount > MAX_AMOUNT:
        raise InvalidTerms(f"the amount must be 1..{MAX_AMOUNT} (minor units)")


def check_fresh(ref: ListingRef, current: Record[Listing] | None) -> None:
    """Raise `StaleOffer` unless `ref` names the listing's current version."""
    if current is None:
        raise StaleOffer(f"listing {ref.id} no longer exists")
    if listing_ref(current) != ref:
        raise StaleOffer(f"the listing changed since this proposal (it is on version {ref.seq}, "
                         f"the listing is at version {current.seq}); make a new one on the "
                         f"current version")


class Negotiation:
    """One party's view of a negotiation, opened by the buyer's `Offer`."""

    def __init__(self, offer: Offer, *, seller: bytes, buyer: bytes, our_role: Role) -> None:
        self.id = offer.negotiation
        self.seller, self.buyer, self.our_role = seller, buyer, our_role
        self.listing_id = offer.listing.id
        self.rating_key = offer.rating_key
        self.state = N.OPEN
        self.proposals: list[Proposal] = [_proposal(offer, B)]
        self.accepted: str | None = None  # the accepted proposal id (ACCEPTING, ACCEPTED)
        self.ended_by: Role | None = None
        self.reason = ""

    # -- queries -------------------------------------------------------------------------------

    @property
    def listing(self) -> ListingRef:
        """The newest listing version any proposal is bound to."""
        return max((p.listing for p in self.proposals), key=lambda ref: ref.seq)

    @property
    def order_id(self) -> str | None:
        if self.state is N.ACCEPTED and self.accepted is not None:
            return order_id_for(self.id, self.accepted)
        return None

    def latest(self, role: Role) -> Proposal | None:
        return next((p for p in reversed(self.proposals) if p.by is role), None)

    def proposal(self, proposal_id: str) -> Proposal | None:
        return next((p for p in self.proposals if p.id == proposal_id), None)

    # -- transitions ---------------------------------------------------------------------------

    def send(self, event: NegotiationBody) -> None:
        """Our own message; raises `LocalProtocolError` (and changes nothing) if not allowed."""
        self._apply(event, self.our_role, remote=False)

    def receive(self, event: NegotiationBody) -> bool:
        """The peer's message; False when it crossed ours and is dropped quietly."""
        return self._apply(event, self.our_role.other, remote=True)

    def _apply(self, event: NegotiationBody, by: Role, *, remote: bool) -> bool:
        error = RemoteProtocolError if remote else IllegalEvent
        kind = type(event)
        if event.negotiation != self.id:
            raise error(f"message for negotiation {event.negotiation}, not {self.id}")
        if isinstance(event, Offer):
            raise error("an offer opens a negotiation; within one, counter")
        key = (self.state, by, kind)
        if key in TRANSITIONS:
            target: NegotiationState | None = TRANSITIONS[key]
        elif remote and key in CROSSING:
            target = CROSSING[key]
        elif not remote and (self.state, by.other, kind) in TRANSITIONS and self.state in (
                *_TALKING, N.ACCEPTING):
            raise WrongRole(f"only the {by.other} can {VERBS[kind]} now")
        else:
            raise error(f"the {by} cannot {VERBS[kind]} a negotiation that is {self.state}")
        if target is None:
            return False
        match event:
            case Counter():
                self._counter(event, by, error)
            case Accept():
                if not self._accept(event, by, remote=remote):
                    return False
            case Decline() | Withdraw():
                self.ended_by, self.reason = by, event.reason
        self.state = target
        return True

    def _counter(self, event: Counter, by: Role, error: type[LocalProtocolError] |
                 type[RemoteProtocolError]) -> None:
        if event.listing.id != self.listing_id:
            raise error("a counter must stay on the negotiation's listing")
        if self.proposal(event.proposal) is not None:
            raise error(f"proposal id {event.proposal} is already used")
        if self.state is N.ACCEPTING:
            self.accepted = None  # the seller's counter crossed our accept: it voids it
        self.proposals.append(_proposal(event, by))

    def _accept(self, event: Accept, by: Role, *, remote: bool) -> bool:
        error = RemoteProtocolError if remote else LocalProtocolError
        if (event.step is not None) != (by is S):
            raise error("the seller's accept carries the order's first step, the buyer's none")
        target = self.proposal(event.proposal)
        if self.state is N.ACCEPTING:  # the seller confirms the buyer's accept, or crosses it
            crossed = remote and target is not None and target.by is B
            if event.proposal != self.accepted and not crossed:
                raise error("the seller confirmed another proposal than the one accepted")
        elif self.state in _ENDED and self.ended_by is not self.our_role:
            raise error("accept after the negotiation was ended by its sender")
        elif not remote:
            latest = self.latest(by.other)
            if latest is None or latest.id != event.proposal:
                raise IllegalEvent("only the other side's latest proposal can be accepted")
        elif target is None or target.by is by:
            raise error("accept of a proposal that is not the receiver's")
        elif by is B and target is not self.latest(S):
            return False  # the buyer accepted a counter we have since replaced: it crossed
        self.accepted = event.proposal
        return True


def _proposal(body: Offer | Counter, by: Role) -> Proposal:
    return Proposal(body.proposal, by, body.listing, body.quantity, body.price, body.note)
