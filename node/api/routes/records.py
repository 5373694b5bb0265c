"""My records in the DHT: every record this node signed and keeps alive, with its expiry and when
a DHT node last stored it; one stored nowhere carries an error instead of a publication time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.api.context import Call
from node.api.convert import page
from node.api.registry import Routes
from node.market.owned import RecordState, record_state
from p2pmarket.api import schemas as s

if TYPE_CHECKING:
    from node.app import Node

routes = Routes("records")


def own_states(node: Node) -> list[RecordState]:
    """Peer record, profile, arbiter advert, listings, then the reviews and reports I wrote.
    Index entries are left out: they follow their listing (published and renewed with it)."""
    states: list[RecordState] = []
    if node.peers.mine is not None:
        states.append(record_state(node.peers.mine, "", node.peers.published_at))
    if node.profiles.mine is not None:
        states.append(record_state(node.profiles.mine, "", node.profiles.published_at()))
    advert = node.adverts.advert()
    if advert is not None:
        states.append(record_state(advert, "", node.adverts.published_at()))
    times = node.listings.published_times()
    states += [record_state(r, r.body.id, times.get(r.body.id)) for r in node.listings.mine()]
    return states + node.owned.states()


def record_out(state: RecordState) -> s.OwnRecordOut:
    return s.OwnRecordOut(kind=state.kind, id=state.ref, key=state.key.hex(), seq=state.seq,
                          expires=state.expires, published_at=state.published,
                          error=state.error)


@routes.get("/records", name="listMyRecords",
            summary="My records in the DHT: expiry and last publication", query=s.Paging,
            response=s.Page[s.OwnRecordOut])
async def list_my_records(call: Call) -> s.Page[s.OwnRecordOut]:
    """The node re-signs each record 7 days before it expires (or at start when it lapsed while
    the node was off). `published_at` is null and `error` says why when no DHT node stored the
    current version; the node keeps trying."""
    items, token = page(own_states(call.node), call.query(s.Paging))
    return s.Page[s.OwnRecordOut](items=[record_out(x) for x in items], next_page_token=token)
