"""Conversation and message routes: chats on offers and inquiries, and every message's delivery.

A conversation is the chat that goes with an offer (same id; it continues after the order), or
one a buyer starts about a listing before any offer (an inquiry, `POST /conversations`).
`/messages/outbox` is every message this node sent (chats, offers, order steps) with how far it
got; `/messages/inbox` every message it received.
"""

from __future__ import annotations

from typing import get_args

from node.api.context import Call, Reply, created
from node.api.convert import OFFER_STATES, bad_token, key_token, page, public_key, read_key
from node.api.problems import ApiProblem
from node.api.registry import Routes
from node.api.routes.listings import find_listing
from node.app import Node
from node.p2p.outbox import OutboxEntry, State
from node.trade.orders import Role
from p2pmarket.api import schemas as s
from p2pmarket.api import schemas_trade as t
from p2pmarket.identity import peer_id_from_public
from p2pmarket.wire.market import Inquiry
from p2pmarket.wire.messages import Chat, MessageBody, MessageError, open_message

routes = Routes("conversations")
MAX_SCAN = 100_000
# the outbox keeps the body's class name; the API (like the events) uses the wire tag
KINDS = {cls.__name__.lower(): str(cls.__struct_config__.tag) for cls in get_args(MessageBody)}
DELIVERY: dict[State, t.DeliveryState] = {
    State.QUEUED: "queued", State.SENT: "sent", State.DELIVERED: "delivered",
    State.FAILED: "failed"}


def _sent_chats(node: Node, peer: bytes, conversation: str) -> list[OutboxEntry]:
    """My chat lines of one conversation (an inquiry's first one too), in the order sent."""
    entries = [e for e in node.outbox.entries(recipient=peer, limit=MAX_SCAN)
               if e.kind in ("chat", "inquiry")]
    mine = []
    for entry in sorted(entries, key=lambda e: e.seq):
        try:
            body = open_message(entry.raw).body
        except MessageError:
            continue
        if isinstance(body, Chat | Inquiry) and body.conversation == conversation:
            mine.append(entry)
    return mine


def chats(node: Node, conversation: str) -> list[t.ChatOut]:
    me, peer = node.identity.public, node.trade.conversation_peer(conversation)
    sent = iter(_sent_chats(node, peer, conversation))
    out = []
    for sender, text, at in node.trade.chat_log(conversation):
        entry = next(sent, None) if sender == me else None
        out.append(t.ChatOut(
            sender=peer_id_from_public(sender), mine=sender == me, text=text, at=at,
            message_id=entry.id if entry else None,
            delivery=DELIVERY[entry.state] if entry else None,
            via=entry.via if entry else ""))
    return out


def conversation_out(node: Node, conversation: str, kind: str) -> t.ConversationOut:
    log = chats(node, conversation)
    last = log[-1] if log else None
    if kind == "inquiry":
        inquiry = node.trade.inquiries.view(conversation)
        return t.ConversationOut(
            id=conversation, kind="inquiry", peer=peer_id_from_public(inquiry.peer),
            listing_id=inquiry.listing_id, title=inquiry.title, offer_state=None,
            messages=len(log), last=last)
    view = node.trade.negotiation(conversation)
    return t.ConversationOut(
        id=conversation, kind="offer",
        peer=peer_id_from_public(view.buyer if view.role is Role.SELLER else view.seller),
        listing_id=view.listing.id, title=view.title, offer_state=OFFER_STATES[view.state],
        messages=len(log), last=last)


@routes.get("/conversations", name="listConversations",
            summary="Chats on my offers and inquiries, latest change first", query=s.Paging,
            response=s.Page[t.ConversationOut])
async def list_conversations(call: Call) -> s.Page[t.ConversationOut]:
    node = call.node
    ids, token = page(node.trade.conversations(), call.query(s.Paging))
    return s.Page[t.ConversationOut](items=[conversation_out(node, i, kind) for i, kind in ids],
                                     next_page_token=token)


@routes.post("/conversations", name="startConversation",
             summary="Ask a seller about a listing before any offer",
             body=t.ConversationFields, response=t.ConversationOut, status=201,
             errors=(404, 409))
async def start_conversation(call: Call) -> Reply:
    """The listing is looked up like an offer's (my cache, else the DHT; 404 if not found).
    The text travels as an `inquiry` message (`Location` is the conversation's messages);
    asking again about the same listing adds to the open conversation. The seller's node drops
    inquiries about listings it does not have, and beyond its caps of open inquiries."""
    fields = call.body(t.ConversationFields)
    node = call.node
    seller = public_key(fields.seller, pointer="/seller")
    record = await find_listing(node, seller, fields.listing_id)
    if record is None:
        raise ApiProblem("not-found", f"no listing {fields.listing_id} of that seller found")
    node.trade.listing_updated(record)
    view = await node.trade.ask(seller, fields.listing_id, fields.text)
    return created(conversation_out(node, view.id, "inquiry"),
                   f"/api/v1/conversations/{view.id}/messages")


@routes.get("/conversations/{conversation_id}/messages", name="listMessages",
            summary="A conversation's messages, oldest first, with delivery state",
            query=s.Paging, response=s.Page[t.ChatOut])
async def list_messages(call: Call) -> s.Page[t.ChatOut]:
    log = chats(call.node, call.path("conversation_id"))
    items, token = page(log, call.query(s.Paging))
    return s.Page[t.ChatOut](items=items, next_page_token=token)


@routes.post("/conversations/{conversation_id}/messages", name="sendMessage",
             summary="Send a chat message", body=t.ChatFields, response=t.ChatOut,
             status=201, errors=(409,))
async def send_message(call: Call) -> Reply:
    """Delivered in the background; follow it with `message.delivered` events or the
    outbox entry in `Location`."""
    node, conversation = call.node, call.path("conversation_id")
    await node.trade.chat(conversation, call.body(t.ChatFields).text)
    last = chats(node, conversation)[-1]
    return created(last, f"/api/v1/messages/outbox/{last.message_id}")


def outbox_out(e: OutboxEntry) -> t.OutboxOut:
    return t.OutboxOut(id=e.id, recipient=peer_id_from_public(e.recipient), seq=e.seq,
                       kind=KINDS.get(e.kind, e.kind), state=DELIVERY[e.state],
                       via=e.via, attempts=e.attempts, next_attempt=e.next_attempt,
                       created=e.created, updated=e.updated, error=e.error)


@routes.get("/messages/outbox", name="listOutbox",
            summary="Messages I sent, with delivery state", query=t.OutboxQuery,
            response=s.Page[t.OutboxOut])
async def list_outbox(call: Call) -> s.Page[t.OutboxOut]:
    """Ordered by id (a stable cursor, not by time)."""
    q = call.query(t.OutboxQuery)
    after = read_key(q.page_token, "id") if q.page_token else ""
    entries = call.node.outbox.entries(
        recipient=public_key(q.peer, parameter="peer") if q.peer else None,
        state=State(q.state) if q.state else None, limit=q.page_size + 1, after=after)
    more = len(entries) > q.page_size
    entries = entries[:q.page_size]
    token = key_token("id", entries[-1].id) if more else None
    return s.Page[t.OutboxOut](items=[outbox_out(e) for e in entries], next_page_token=token)


@routes.get("/messages/outbox/{message_id}", name="getOutboxMessage",
            summary="One sent message's delivery state", response=t.OutboxOut)
async def get_outbox_message(call: Call) -> t.OutboxOut:
    entry = call.node.outbox.get(call.path("message_id"))
    if entry is None:
        raise ApiProblem("not-found", "no message with that id was sent by this node")
    return outbox_out(entry)


@routes.get("/messages/inbox", name="listInbox", summary="Messages I received, oldest first",
            query=t.InboxQuery, response=s.Page[t.InboxOut])
async def list_inbox(call: Call) -> s.Page[t.InboxOut]:
    q = call.query(t.InboxQuery)
    after = 0.0
    if q.page_token:
        try:
            after = float(read_key(q.page_token, "t"))
        except ValueError:
            bad_token()
    rows = call.node.outbox.inbox(sender=public_key(q.peer, parameter="peer") if q.peer else None,
                                  limit=q.page_size + 1, after=after)
    more = len(rows) > q.page_size
    rows = rows[:q.page_size]
    items = []
    for msg_id, sender, raw, received, via in rows:
        try:
            kind = str(open_message(raw).body.__struct_config__.tag)
        except MessageError:
            kind = "unknown"
        items.append(t.InboxOut(id=msg_id, sender=peer_id_from_public(sender), kind=kind,
                                received=received, via=via))
    token = key_token("t", repr(rows[-1][3])) if more else None
    return s.Page[t.InboxOut](items=items, next_page_token=token)
