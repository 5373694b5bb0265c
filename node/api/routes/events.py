"""`GET /api/v1/events`: the node's events as server-sent events, resumable by id."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from node.api.context import Call
from node.api.hub import Event
from node.api.problems import ApiProblem, FieldError
from node.api.registry import Routes
from p2pmarket.api.events import EVENT_TYPES
from p2pmarket.api.schemas import Wire

routes = Routes("events")
PING_EVERY = 10.0
WAKE_EVERY = 2.0  # how often a quiet stream checks that its client is still there


class EventsQuery(Wire, frozen=True):
    """`last_event_id` does what the `Last-Event-ID` header does (the header wins);
    `type` keeps only those event types (repeatable)."""

    last_event_id: int | None = None
    type: list[str] = []


def _last_id(call: Call, q: EventsQuery) -> int | None:
    header = call.request.headers.get("Last-Event-ID")
    if header is None or not header.strip():
        return q.last_event_id
    if not header.strip().isdigit():
        raise ApiProblem("validation", "Last-Event-ID must be an event id (an integer)",
                         errors=[FieldError(detail="not an integer", parameter="Last-Event-ID")])
    return int(header)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@routes.get("/events", name="streamEvents", summary="Live events (server-sent events)",
            query=EventsQuery, response=str, media="text/event-stream")
async def stream_events(call: Call) -> web.StreamResponse:
    """Each event has an `id` that only grows (also across restarts), an `event` type and JSON
    `data` (see `x-event-types`). Reconnect with `Last-Event-ID` to get what was missed from a
    bounded buffer; if it no longer reaches back that far the first event is `events.reset`.
    A stream that falls far behind is closed; reconnecting resumes it."""
    q = call.query(EventsQuery)
    unknown = [name for name in q.type if name not in EVENT_TYPES]
    if unknown:
        raise ApiProblem("validation", f"unknown event type {unknown[0]!r}", errors=[
            FieldError(detail=f"one of {', '.join(EVENT_TYPES)}", parameter="type")])
    wanted = frozenset(q.type) | {"events.reset"} if q.type else None
    hub = call.state.hub
    sub, backlog = hub.subscribe(_last_id(call, q))
    resp = EventSourceResponse(ping_interval=PING_EVERY, headers={"Cache-Control": "no-store"})
    try:
        await resp.prepare(call.request)
        async with resp:
            pending: list[Event | None] = list(backlog)
            while resp.is_connected() and not _gone(call.request):
                if not pending:
                    with contextlib.suppress(TimeoutError):
                        pending.append(await asyncio.wait_for(sub.queue.get(), WAKE_EVERY))
                    continue
                event = pending.pop(0)
                if event is None:  # dropped (too slow) or the server is stopping
                    break
                if wanted is None or event.type in wanted:
                    await resp.send(event.data.decode(), id=str(event.id), event=event.type)
    except (ConnectionResetError, TimeoutError):
        pass  # the client went away
    finally:
        hub.unsubscribe(sub)
    return resp
