"""The negotiation state machine, a buyer/seller pair joined by two in-order message queues."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.trade.errors import (
    IllegalEvent,
    InvalidTerms,
    LocalProtocolError,
    RemoteProtocolError,
    StaleOffer,
    WrongRole,
)
from node.trade.negotiation import (
    CROSSING,
    FINAL_STATES,
    TRANSITIONS,
    Negotiation,
    NegotiationState,
    check_fresh,
    check_terms,
)
from node.trade.orders import Role
from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import Listing, Location, Price
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
from p2pmarket.wire.records import sign_record

N = NegotiationState
B, S = Role.BUYER, Role.SELLER
REF = ListingRef("listing-1", 1, bytes(32))
NID = "negotiation-1"
_ids = itertools.count()


def pid() -> str:
    return f"proposal-{next(_ids):04d}"


def offer(amount: int = 100) -> Offer:
    return Offer(negotiation=NID, proposal=pid(), listing=REF, quantity=1,
                 price=Price(amount, "EUR"), rating_key=bytes(32))


def counter(amount: int = 100, ref: ListingRef = REF) -> Counter:
    return Counter(negotiation=NID, proposal=pid(), listing=ref, quantity=1,
                   price=Price(amount, "EUR"))


@dataclass
class Pair:
    buyer: Negotiation
    seller: Negotiation
    to_seller: list[NegotiationBody] = field(default_factory=list)
    to_buyer: list[NegotiationBody] = field(default_factory=list)

    def side(self, role: Role) -> Negotiation:
        return self.buyer if role is B else self.seller

    def say(self, role: Role, body: NegotiationBody, deliver: bool = True) -> None:
        self.side(role).send(body)
        (self.to_seller if role is B else self.to_buyer).append(body)
        if deliver:
            self.flush()

    def deliver_one(self, role: Role) -> bool:
        """Deliver the next message to `role`; the seller's node answers an accept at once."""
        queue = self.to_buyer if role is B else self.to_seller
        if not queue:
            return False
        self.side(role).receive(queue.pop(0))
        if role is S and self.seller.state is N.ACCEPTING:
            self.say(S, Accept(negotiation=NID, proposal=self.seller.accepted or "",
                               step=b"order"), deliver=False)
        return True

    def flush(self) -> None:
        while self.deliver_one(S) or self.deliver_one(B):
            pass


def make_pair() -> Pair:
    first = offer(80)
    buyer = Negotiation(first, seller=b"s" * 32, buyer=b"b" * 32, our_role=B)
    seller = Negotiation(first, seller=b"s" * 32, buyer=b"b" * 32, our_role=S)
    return Pair(buyer, seller)


def test_rounds_then_the_seller_accepts() -> None:
    pair = make_pair()
    for amount in (120, 90, 110, 95, 100):
        role = S if pair.seller.state is N.OPEN else B
        pair.say(role, counter(amount))
    assert pair.seller.state is N.COUNTERED and len(pair.seller.proposals) == 6
    pair.say(B, counter(100))
    latest = pair.buyer.latest(B)
    assert latest is not None
    pair.say(S, Accept(negotiation=NID, proposal=latest.id, step=b"order"))
    assert pair.buyer.state is pair.seller.state is N.ACCEPTED
    assert pair.buyer.order_id == pair.seller.order_id == order_id_for(NID, latest.id)


def test_the_buyer_accepts_and_the_seller_confirms() -> None:
    pair = make_pair()
    pair.say(S, counter(120))
    pair.say(B, Accept(negotiation=NID, proposal=pair.buyer.proposals[-1].id), deliver=False)
    assert pair.buyer.state is N.ACCEPTING
    with pytest.raises(IllegalEvent, match="accepting"):
        pair.buyer.send(counter(110))
    with pytest.raises(WrongRole, match="only the seller"):
        pair.buyer.send(Decline(negotiation=NID))
    pair.flush()
    assert pair.buyer.state is pair.seller.state is N.ACCEPTED


def test_only_the_latest_proposal_of_the_other_side_can_be_accepted() -> None:
    pair = make_pair()
    first = pair.seller.proposals[0].id
    pair.say(S, counter(120))
    pair.say(B, counter(100))
    with pytest.raises(IllegalEvent, match="latest"):
        pair.seller.send(Accept(negotiation=NID, proposal=first, step=b"x"))
    with pytest.raises(IllegalEvent):  # our own proposal
        pair.buyer.send(Accept(negotiation=NID, proposal=pair.buyer.proposals[-1].id))
    with pytest.raises(LocalProtocolError, match="first step"):
        pair.seller.send(Accept(negotiation=NID, proposal=pair.seller.proposals[-1].id))
    with pytest.raises(IllegalEvent):
        pair.seller.send(offer())
    with pytest.raises(IllegalEvent):  # another negotiation's message
        pair.seller.send(Decline(negotiation="negotiation-2"))


def test_a_seller_counter_crossing_the_buyers_accept_voids_it() -> None:
    pair = make_pair()
    pair.say(S, counter(150))
    pair.say(B, Accept(negotiation=NID, proposal=pair.buyer.proposals[-1].id), deliver=False)
    pair.say(S, counter(140), deliver=False)
    pair.flush()
    assert pair.buyer.state is pair.seller.state is N.COUNTERED
    assert pair.buyer.accepted is None
    pair.say(B, Accept(negotiation=NID, proposal=pair.buyer.proposals[-1].id))
    assert pair.buyer.state is pair.seller.state is N.ACCEPTED


def test_the_sellers_accept_of_the_buyers_offer_crossing_the_buyers_accept_makes_the_order(
        ) -> None:
    pair = make_pair()
    first = pair.buyer.proposals[0].id
    pair.say(S, counter(120), deliver=False)
    pair.deliver_one(B)
    pair.say(B, Accept(negotiation=NID, proposal=pair.buyer.proposals[-1].id), deliver=False)
    # the seller has not seen the buyer's accept; the buyer's offer still stands
    pair.say(S, Accept(negotiation=NID, proposal=first, step=b"o"), deliver=False)
    pair.flush()
    assert pair.buyer.state is pair.seller.state is N.ACCEPTED
    assert pair.buyer.order_id == pair.seller.order_id == order_id_for(NID, first)


def test_crossing_counters_then_crossing_accepts_converge() -> None:
    pair = make_pair()
    pair.say(S, counter(120), deliver=False)
    pair.say(B, counter(100), deliver=False)
    pair.flush()  # each side saw the other's counter last
    assert (pair.buyer.state, pair.seller.state) == (N.COUNTERED, N.OPEN)
    sellers, buyers = pair.buyer.latest(S), pair.buyer.latest(B)
    assert sellers is not None and buyers is not None
    pair.say(B, Accept(negotiation=NID, proposal=sellers.id), deliver=False)
    pair.say(S, Accept(negotiation=NID, proposal=buyers.id, step=b"o"), deliver=False)
    pair.flush()
    assert pair.buyer.state is pair.seller.state is N.ACCEPTED
    assert pair.buyer.order_id == pair.seller.order_id == order_id_for(NID, buyers.id)


def test_a_seller_confirming_another_of_its_proposals_is_its_fault() -> None:
    pair = make_pair()
    pair.say(S, counter(120))
    pair.say(S, counter(110))
    older = pair.buyer.proposals[1].id
    pair.say(B, Accept(negotiation=NID, proposal=pair.buyer.proposals[-1].id), deliver=False)
    for proposal in (older, "proposal-unknown"):
        with pytest.raises(RemoteProtocolError, match="another proposal"):
            pair.buyer.receive(Accept(negotiation=NID, proposal=proposal, step=b"o"))
        assert pair.buyer.state is N.ACCEPTING


def test_the_sellers_accept_wins_over_a_crossing_withdraw() -> None:
    pair = make_pair()
    pair.say(B, Withdraw(negotiation=NID, reason="found another"), deliver=False)
    pair.say(S, Accept(negotiation=NID, proposal=pair.seller.proposals[0].id, step=b"o"),
             deliver=False)
    pair.flush()
    # both have the order; the buyer's shell cancels it (it had withdrawn)
    assert pair.buyer.state is pair.seller.state is N.ACCEPTED
    assert pair.buyer.ended_by is B


def test_an_accept_after_the_seller_ended_it_is_the_sellers_fault() -> None:
    pair = make_pair()
    pair.say(S, Decline(negotiation=NID, reason="no"))
    with pytest.raises(IllegalEvent):
        pair.seller.send(Accept(negotiation=NID, proposal=pair.seller.proposals[0].id, step=b"o"))
    with pytest.raises(RemoteProtocolError):
        pair.buyer.receive(Accept(negotiation=NID, proposal=pair.buyer.proposals[0].id,
                                  step=b"o"))


def _reach(state: NegotiationState) -> Pair:
    pair = make_pair()
    if state is N.COUNTERED:
        pair.say(S, counter())
    elif state is N.ACCEPTING:
        pair.say(S, counter())
        pair.say(B, Accept(negotiation=NID, proposal=pair.buyer.proposals[-1].id),
                 deliver=False)
    elif state is N.ACCEPTED:
        pair.say(S, Accept(negotiation=NID, proposal=pair.seller.proposals[0].id, step=b"o"))
    elif state is N.DECLINED:
        pair.say(S, Decline(negotiation=NID))
    elif state is N.WITHDRAWN:
        pair.say(B, Withdraw(negotiation=NID))
    return pair


def _event(pair: Pair, role: Role, kind: type[NegotiationBody]) -> NegotiationBody:
    side = pair.side(role)
    if kind is Counter:
        return counter()
    if kind is Accept:
        target = side.latest(role.other) or side.proposals[0]
        return Accept(negotiation=NID, proposal=target.id, step=b"o" if role is S else None)
    return kind(negotiation=NID)  # type: ignore[call-arg]


KINDS: list[type[NegotiationBody]] = [Counter, Accept, Decline, Withdraw]
ILLEGAL = [(state, role, kind) for state in N for role in (B, S) for kind in KINDS
           if (state, role, kind) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "role", "kind"), ILLEGAL,
                         ids=[f"{s}-{r}-{k.__name__}" for s, r, k in ILLEGAL])
def test_every_illegal_event_raises(state: NegotiationState, role: Role,
                                    kind: type[NegotiationBody]) -> None:
    pair = _reach(state)
    event = _event(pair, role, kind)
    # ACCEPTING exists on the buyer's side only; every other state on both
    for side in (s for s in (pair.buyer, pair.seller) if s.state is state):
        if side.our_role is role:
            with pytest.raises(LocalProtocolError):
                side.send(event)
        elif (state, role, kind) not in CROSSING:  # crossing messages: the tests above
            with pytest.raises(RemoteProtocolError):
                side.receive(event)
        assert side.state is state


def test_offers_only_open() -> None:
    pair = make_pair()
    with pytest.raises(RemoteProtocolError):
        pair.seller.receive(offer())
    with pytest.raises(RemoteProtocolError, match="already used"):
        pair.seller.receive(Counter(negotiation=NID, proposal=pair.seller.proposals[0].id,
                                    listing=REF, quantity=1, price=Price(1, "EUR")))
    with pytest.raises(RemoteProtocolError, match="listing"):
        pair.seller.receive(counter(ref=ListingRef("listing-2", 1, bytes(32))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["say", "deliver"]), st.sampled_from([B, S]),
                          st.sampled_from(KINDS)), max_size=20))
def test_random_interleavings_converge(moves: list[tuple[str, Role, type[NegotiationBody]]]
                                       ) -> None:
    pair = make_pair()
    for what, role, kind in moves:
        if what == "deliver":
            pair.deliver_one(role)
            continue
        try:
            pair.say(role, _event(pair, role, kind), deliver=False)
        except LocalProtocolError:
            pass
    pair.flush()
    buyer, seller = pair.buyer, pair.seller
    assert (buyer.state is N.ACCEPTED) == (seller.state is N.ACCEPTED)
    if buyer.state is N.ACCEPTED:
        assert buyer.order_id == seller.order_id
    assert (buyer.state in FINAL_STATES) == (seller.state in FINAL_STATES)
    if buyer.state not in FINAL_STATES:
        assert buyer.state is not N.ACCEPTING


# -- terms and freshness -----------------------------------------------------------------------


def _listing(quantity: int = 3, amount: int = 5000) -> Listing:
    return Listing(id="listing-1", title="Bike", description="", price=Price(amount, "EUR"),
                   category="sports", condition="good", quantity=quantity,
                   location=Location("DE", "u33d"))


def test_check_terms() -> None:
    listing = _listing()
    check_terms(listing, 3, Price(4000, "EUR"))
    with pytest.raises(InvalidTerms, match="EUR"):
        check_terms(listing, 1, Price(4000, "USD"))
    with pytest.raises(InvalidTerms, match="1..3"):
        check_terms(listing, 4, Price(4000, "EUR"))
    with pytest.raises(InvalidTerms, match="amount must be"):
        check_terms(listing, 1, Price(0, "EUR"))
    with pytest.raises(InvalidTerms, match="sold out"):
        check_terms(_listing(quantity=0), 1, Price(1, "EUR"))


def test_check_fresh() -> None:
    seller = Identity.generate()
    v1 = sign_record(seller, _listing(), seq=1)
    v1_again = sign_record(seller, _listing(), seq=1, created=v1.created + 60)
    v2 = sign_record(seller, _listing(amount=6000), seq=2)
    check_fresh(listing_ref(v1), v1)
    check_fresh(listing_ref(v1), v1_again)  # re-signed to live longer: the same version
    with pytest.raises(StaleOffer, match="version 1, the listing is at version 2"):
        check_fresh(listing_ref(v1), v2)
    with pytest.raises(StaleOffer, match="no longer exists"):
        check_fresh(listing_ref(v1), None)
