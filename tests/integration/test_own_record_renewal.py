"""A review (signed by the buyer's per-order rating key) and a listing report live as long as the
node that wrote them runs: renewed before they expire, with the key that signed them, over a year
of a simulated clock; after 40 days off, the first renewal round after a restart (a new
`OwnRecords` over the same database) brings back what lapsed, the same seq and content."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import pytest

from dht.testing import join_all, make_node
from node.market.moderation import report_count, report_listing
from node.market.owned import OwnRecords
from node.trade.reviews import ReviewReader, build_review, rating_identity
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.dhtkeys import RENEW_BEFORE
from p2pmarket.wire.market import sign_grant

pytestmark = pytest.mark.timeout(180)

DAY = 86_400
STEP = 2 * DAY  # the node checks every 10 minutes; every 2 days is enough to test the rule


class Clock:
    """The one clock of every node in the test; moved by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_review_and_report_are_renewed_with_their_keys_and_back_after_downtime() -> None:
    clock = Clock()
    nodes = [make_node() for _ in range(10)]
    for node in nodes:
        node.clock = clock
    await join_all(nodes)
    try:
        buyer, seller = Identity.generate(), Identity.generate()
        nodes[1].identity = buyer
        db = Database.open(":memory:")

        def start() -> OwnRecords:  # the buyer's node (again after a restart)
            return OwnRecords(buyer, db, nodes[1], derive=partial(rating_identity, buyer),
                              clock=clock)

        owned = start()
        rating = rating_identity(buyer, "negotiation-0001")
        review = build_review(rating, seller=seller.public, order_id="order-0001", stars=5,
                              text="fast and friendly", seq=1, created=int(clock.now),
                              grant=sign_grant(seller, "order-0001", rating.public))
        assert (await owned.publish(review, "order-0001", signer="negotiation-0001")).ok
        report = await report_listing(owned, seller.public, "lamp-0001", "scam", "fake photos")
        reader = nodes[8]  # a third node

        async def findable() -> None:
            reviews = await ReviewReader(reader).reviews_for(seller.public)
            assert [(r.publisher, r.seq, r.body) for r in reviews] == [
                (rating.public, review.seq, review.body)], f"review gone, {days()} days"
            assert await report_count(reader, seller.public, "lamp-0001") == 1, (
                f"report gone, {days()} days")

        start_time = clock.now

        def days() -> int:
            return int((clock.now - start_time) // DAY)

        async def run_until(done: Callable[[], bool], step: int = STEP) -> int:
            renewed = 0
            while not done():
                clock.now += step
                renewed += await owned.renew()
                await findable()
            return renewed

        def expires(kind: str) -> int:
            return next(s.expires for s in owned.states() if s.kind == kind)

        # the node runs for 120 days, checking daily: the report (90 days) is renewed once
        assert await run_until(lambda: days() >= 120, step=DAY) == 1
        # it runs on until the review (a year) is a day or two from its renewal window
        await run_until(lambda: expires("review") - clock.now <= RENEW_BEFORE + 2 * DAY)
        assert next(s for s in owned.states() if s.kind == "review").seq == review.seq

        # off for 40 days: the review lapses
        clock.now += 40 * DAY
        assert await ReviewReader(reader).reviews_for(seller.public) == []
        owned = start()
        assert [s.kind for s in owned.states() if s.expires <= clock.now] == ["review"]
        assert await owned.renew() == 1  # the first round after the start brings it back
        await findable()
        states = {s.kind: s for s in owned.states()}
        assert states["review"].published == clock.now and states["review"].error is None
        assert states["review"].expires > clock.now + 300 * DAY

        # the report too: it runs until the report is near its window, then is off 40 days
        await run_until(lambda: expires("report") - clock.now <= RENEW_BEFORE + 2 * DAY)
        clock.now += 40 * DAY
        assert await report_count(reader, seller.public, "lamp-0001") == 0
        owned = start()
        assert await owned.renew() == 1
        await findable()
        back = {s.kind: s for s in owned.states()}["report"]
        assert back.seq == report.seq and back.published == clock.now
    finally:
        for node in nodes:
            node.stop()


async def test_a_record_stored_nowhere_is_an_error_until_a_later_round_stores_it() -> None:
    clock = Clock()
    alone = make_node()  # no peers: nobody can store anything
    alone.clock = clock
    others = [make_node() for _ in range(4)]
    for node in others:
        node.clock = clock
    await join_all([alone])
    try:
        me, seller = Identity.generate(), Identity.generate()
        alone.identity = me
        owned = OwnRecords(me, Database.open(":memory:"), alone, clock=clock)
        record = await report_listing(owned, seller.public, "lamp-0001", "spam")
        [state] = owned.states()
        assert state.published is None and state.error is not None
        assert owned.published_at(record) is None
        await join_all([*others, alone])  # peers appear
        clock.now += 60
        assert await owned.renew() == 1  # put out again, the same record
        [state] = owned.states()
        assert state.published == clock.now and state.error is None and state.seq == record.seq
        assert await report_count(others[2], seller.public, "lamp-0001") == 1
    finally:
        for node in [alone, *others]:
            node.stop()
