"""Inbox screen: negotiations (offers and counter-offers with their state) and the chat that goes
with each, and questions about a listing asked before any offer; accept, counter, decline,
withdraw and message by key."""

from __future__ import annotations

from textual import work
from textual.binding import Binding

from p2pmarket.api.schemas_trade import ChatOut, ConversationOut, OfferOut
from p2pmarket.client import Event
from tui.base import ListDetailScreen
from tui.format import ago, esc, money, short, to_int, to_minor
from tui.widgets.forms import Field, FieldInvalid

LIVE = ("open", "countered")


def offer_text(offer: OfferOut, chat: list[ChatOut]) -> str:
    other = offer.seller if offer.role == "buyer" else offer.buyer
    lines = [f"[b]{esc(offer.title)}[/b] · I am the {offer.role}, with {short(other)} · "
             f"[b]{offer.state}[/b]" + (" · listing changed since" if offer.stale else "")]
    if offer.order_id:
        lines.append(f"Order {offer.order_id} (see Orders, F2)")
    if offer.reason:
        lines.append(f"Reason: {esc(offer.reason)}")
    for p in offer.proposals[-4:]:
        note = f" “{esc(p.note)}”" if p.note else ""
        lines.append(f"  {p.by:<6} {p.quantity} × for {money(p.price)}{note}")
    for msg in chat[-5:]:
        who = "me" if msg.mine else short(msg.sender)
        mark = f" [dim]· {msg.delivery}[/dim]" if msg.mine and msg.delivery else ""
        lines.append(f"  {who}: {esc(msg.text)}{mark}")
    return "\n".join(lines)


def updated(item: OfferOut | ConversationOut) -> float:
    """When a negotiation last changed (an inquiry without messages: never)."""
    if isinstance(item, OfferOut):
        return item.updated
    return item.last.at if item.last else 0.0


def inquiry_text(conv: ConversationOut, chat: list[ChatOut]) -> str:
    lines = [f"[b]{esc(conv.title)}[/b] · questions with {short(conv.peer)}, before any offer"]
    for msg in chat[-7:]:
        who = "me" if msg.mine else short(msg.sender)
        mark = f" [dim]· {msg.delivery}[/dim]" if msg.mine and msg.delivery else ""
        lines.append(f"  {who}: {esc(msg.text)}{mark}")
    return "\n".join(lines)


class InboxScreen(ListDetailScreen[OfferOut | ConversationOut]):
    """Offers and inquiries (conversations before any offer), the latest first."""

    NOTICE = "Negotiation"
    TABLE_ID = "offers"
    COLUMNS = (("Role", "role", 6), ("Title", "title", 22), ("State", "state", 10),
               ("Last offer", "price", 14), ("Updated", "updated", 8))
    DETAIL_ID = "offer-detail"
    LOADING = "Loading negotiations…"
    EMPTY = ("No negotiations yet: open a listing in the Market and make an offer (o) or ask "
             "the seller (m).")
    BINDINGS = [
        Binding("a", "accept", "Accept", id="inbox.accept"),
        Binding("c", "counter", "Counter", id="inbox.counter"),
        Binding("d", "decline", "Decline", id="inbox.decline"),
        Binding("w", "withdraw", "Withdraw", id="inbox.withdraw"),
        Binding("m", "message", "Message", id="inbox.message"),
        Binding("r", "refresh", "Refresh", id="inbox.refresh"),
    ]

    @property
    def offer(self) -> OfferOut | None:
        item = self.current
        return item if isinstance(item, OfferOut) else None

    @property
    def inquiry(self) -> ConversationOut | None:
        item = self.current
        return item if isinstance(item, ConversationOut) else None

    async def rows(self) -> list[OfferOut | ConversationOut] | None:
        page = await self.call(self.client.list_offers(page_size=200), "Offers")
        if page is None:
            return None
        talks = await self.call(self.client.list_conversations(page_size=200), "Conversations")
        items: list[OfferOut | ConversationOut] = list(page.items)
        items += [c for c in (talks.items if talks else []) if c.kind == "inquiry"]
        items.sort(key=lambda item: -updated(item))
        return items

    def key(self, item: OfferOut | ConversationOut) -> str:
        return item.id

    def cells(self, item: OfferOut | ConversationOut) -> tuple[object, ...]:
        if isinstance(item, OfferOut):
            last = money(item.proposals[-1].price) if item.proposals else "—"
            return item.role, item.title, item.state, last, ago(item.updated)
        at = updated(item)
        return "ask", item.title, "question", "—", ago(at) if at else "—"

    async def detail(self, item: OfferOut | ConversationOut) -> str:
        page = await self.call(self.client.list_messages(item.id), "Messages")
        chat = page.items if page else []
        return offer_text(item, chat) if isinstance(item, OfferOut) else inquiry_text(item, chat)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        offer = self.offer
        if action == "message" and self.inquiry is not None:
            return True
        if action in ("accept", "counter", "decline", "withdraw", "message") and offer is None:
            return False
        if offer is None or offer.state not in LIVE:
            return action not in ("accept", "counter", "decline", "withdraw")
        theirs = bool(offer.proposals) and offer.proposals[-1].by != offer.role
        if action == "accept":
            return theirs and not offer.stale
        if action == "decline":
            return theirs
        if action == "withdraw":
            return not theirs
        return True

    # -- actions ---------------------------------------------------------------------------

    def action_accept(self) -> None:
        self.act("accept")

    @work(group="offer-step")
    async def act(self, name: str) -> None:
        offer = self.offer
        if offer is None:
            return
        calls = {"accept": self.client.accept_offer}
        result = await self.call(calls[name](offer.id), name.capitalize())
        if result is not None:
            self.notify(f"{offer.title}: {result.state}.", title="Negotiation")
            self.load()

    def action_counter(self) -> None:
        offer = self.offer
        if offer is None or not offer.proposals:
            return
        last = offer.proposals[-1]
        currency = last.price.currency

        async def submit(v: dict[str, str]) -> None:
            try:
                amount = to_minor(v["amount"], currency)
            except ValueError as exc:
                raise FieldInvalid("amount", str(exc)) from None
            try:
                quantity = to_int(v["quantity"], "a quantity")
            except ValueError as exc:
                raise FieldInvalid("quantity", str(exc)) from None
            await self.client.counter_offer(offer.id, amount, quantity=quantity, note=v["note"])

        self.open_form(f"Counter on {offer.title}", [
            Field("amount", f"Total {currency}", money(last.price).split()[0]),
            Field("quantity", "Quantity", str(last.quantity)),
            Field("note", "Note")], submit, "Counter-offer sent.")

    def action_decline(self) -> None:
        offer = self.offer
        if offer is None:
            return

        async def submit(v: dict[str, str]) -> None:
            await self.client.decline_offer(offer.id, v["reason"])

        self.open_form(f"Decline the offer on {offer.title}?", [Field("reason", "Reason")], submit,
                   "Offer declined.")

    def action_withdraw(self) -> None:
        offer = self.offer
        if offer is None:
            return

        async def submit(v: dict[str, str]) -> None:
            await self.client.withdraw_offer(offer.id, v["reason"])

        self.open_form(f"Withdraw from {offer.title}?", [Field("reason", "Reason")], submit,
                   "Offer withdrawn.")

    def action_message(self) -> None:
        item = self.current
        if item is None:
            return
        conversation, title = item.id, item.title

        async def submit(v: dict[str, str]) -> None:
            if not v["text"].strip():
                raise FieldInvalid("text", "write something first")
            await self.client.send_message(conversation, v["text"])

        self.open_form(f"Message about {title}", [Field("text", "Message")], submit,
                   "Message queued.")

    def live(self, event: Event) -> None:
        if event.type in ("offer.changed", "chat.received", "message.delivered",
                          "order.changed", "events.reset"):
            self.load()
