"""Orders screen: my orders as buyer and seller with their state and signed log; the footer shows
the steps the API says this node may take now (ship, confirm, cancel, pay, escrow steps)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from textual import work
from textual.binding import Binding

from p2pmarket.api.schemas_trade import EscrowOut, OrderOut, StepOut, WalletOut
from p2pmarket.client import ApiError, ClientError, Event
from tui.base import ListDetailScreen
from tui.format import describe_error, esc, money, short, to_int
from tui.widgets.forms import Field, FieldInvalid

# action name -> the order step kind the API lists in `OrderOut.can`
STEP_OF = {"ship": "shipped", "confirm": "received", "cancel": "cancelled", "paid": "paid",
           "address": "address", "settle": "settled"}
# action name -> the escrow step the API lists in `EscrowOut.can`
ESCROW_OF = {"fund": "fund", "release": "release", "refund": "refund", "dispute": "dispute",
             "evidence": "evidence", "accept_ruling": "accept-ruling"}
REVIEWABLE = ("received", "completed")
CLOSED = ("cancelled", "completed")
NOT_FOUND = 404


def step_text(step: StepOut) -> str:
    at = datetime.fromtimestamp(step.at_ms / 1000, UTC).strftime("%m-%d %H:%M")
    action = step.action
    extra = ""
    for name in ("carrier", "tracking", "reference", "note", "reason"):
        value = getattr(action, name, "")
        if value:
            extra += f" {name}={esc(value)}"
    kind = type(action).__struct_config__.tag
    return f"{step.index:>2} {at} {step.by:<6} {kind}{extra}"


def order_text(order: OrderOut, escrow: EscrowOut | None, wallet: WalletOut | None = None,
               *, can_start: bool = False) -> str:
    other = order.seller if order.role == "buyer" else order.buyer
    lines = [f"[b]{esc(order.title)}[/b] · {order.quantity} × · {money(order.price)} · "
             f"I am the {order.role}, with {short(other)}",
             f"State: [b]{order.state}[/b] · next: {', '.join(order.can) or 'nothing to do'}"]
    if order.shipment:
        lines.append(f"Shipped with {esc(order.shipment.carrier)}, tracking "
                     f"{esc(order.shipment.tracking)}")
    if order.address:
        lines.append(f"Address: {esc(order.address)}")
    if escrow is not None:
        amount = f"{escrow.amount_sat} sat" if escrow.amount_sat is not None else "?"
        lines.append(f"Escrow: {escrow.state} · {amount} · next: "
                     f"{', '.join(escrow.can) or 'nothing'}")
        if escrow.address and escrow.state in ("proposed", "agreed"):
            lines.append(f"Escrow address: {escrow.address}")
    elif can_start:
        lines.append("Escrow: not started · f proposes it to the seller and the arbiter; your "
                     "node pays it from the wallet once they agree")
    elif wallet is not None and order.price.currency == "BTC" and order.state not in CLOSED:
        lines.append("Escrow: not started (the buyer proposes it)")
    if wallet is not None:
        lines.append(f"Wallet ({wallet.network}): {wallet.confirmed_sat} sat"
                     + (f", {wallet.pending_sat} pending" if wallet.pending_sat else ""))
    lines.append("")
    lines += [step_text(step) for step in order.log]
    return "\n".join(lines)


class OrdersScreen(ListDetailScreen[OrderOut]):
    NOTICE = "Order"
    TABLE_ID = "orders"
    COLUMNS = (("Role", "role", 6), ("Title", "title", 18), ("State", "state", 16),
               ("Price", "price", 14), ("With", "with", 15))
    DETAIL_ID = "order-detail"
    LOADING = "Loading orders…"
    EMPTY = "No orders yet: accepted offers become orders."
    BINDINGS = [
        Binding("s", "ship", "Ship", id="orders.ship"),
        Binding("c", "confirm", "Received", id="orders.confirm"),
        Binding("x", "cancel", "Cancel", id="orders.cancel"),
        Binding("p", "paid", "Paid", id="orders.paid"),
        Binding("a", "address", "Address", id="orders.address"),
        Binding("t", "settle", "Settle", id="orders.settle"),
        Binding("f", "fund", "Fund", id="orders.fund"),
        Binding("l", "release", "Release", id="orders.release"),
        Binding("u", "refund", "Refund", id="orders.refund"),
        Binding("d", "dispute", "Dispute", id="orders.dispute"),
        Binding("e", "evidence", "Evidence", id="orders.evidence"),
        Binding("g", "accept_ruling", "Accept ruling", id="orders.accept_ruling"),
        Binding("v", "review", "Review", id="orders.review"),
        Binding("r", "refresh", "Refresh", id="orders.refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.escrow: dict[str, EscrowOut] = {}
        self.wallet: WalletOut | None = None
        self.no_escrow: set[str] = set()  # orders the API has no escrow for

    async def rows(self) -> list[OrderOut] | None:
        page = await self.call(self.client.list_orders(page_size=200), "Orders")
        return None if page is None else page.items

    def key(self, item: OrderOut) -> str:
        return item.id

    def cells(self, item: OrderOut) -> tuple[object, ...]:
        other = item.seller if item.role == "buyer" else item.buyer
        return item.role, item.title, item.state, money(item.price), short(other)

    async def detail(self, item: OrderOut) -> str:
        status = getattr(self.app, "status", None)
        if status is not None and status.escrow:
            try:
                self.escrow[item.id] = await self.client.get_escrow(item.id)
                self.no_escrow.discard(item.id)
            except ApiError as exc:
                if exc.status != NOT_FOUND:
                    self.notify(describe_error(exc), title="Escrow", severity="error")
                self.escrow.pop(item.id, None)
                self.no_escrow.add(item.id)  # none yet: the buyer may start one
            except ClientError as exc:
                self.notify(describe_error(exc), title="Escrow", severity="error")
            self.wallet = await self.call(self.client.get_wallet(), "Wallet")
        return order_text(item, self.escrow.get(item.id), self.wallet,
                          can_start=self.can_start(item))

    def can_start(self, order: OrderOut) -> bool:
        """The buyer of a BTC order without an escrow may propose one."""
        return (order.id in self.no_escrow and order.role == "buyer"
                and order.price.currency == "BTC" and order.state not in CLOSED)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        order = self.current
        if action in STEP_OF:
            return order is not None and STEP_OF[action] in order.can
        if action == "fund" and order is not None and self.can_start(order):
            return True
        if action in ESCROW_OF:
            escrow = self.escrow.get(order.id) if order else None
            return escrow is not None and ESCROW_OF[action] in escrow.can
        if action == "review":
            return order is not None and order.role == "buyer" and order.state in REVIEWABLE
        return True

    # -- actions ---------------------------------------------------------------------------

    def action_ship(self) -> None:
        order = self.current
        if order is None:
            return

        async def submit(v: dict[str, str]) -> None:
            for name in ("carrier", "tracking"):
                if not v[name].strip():
                    raise FieldInvalid(name, f"the {name} is required")
            await self.client.ship_order(order.id, v["carrier"].strip(), v["tracking"].strip())

        self.open_form(f"Ship {order.title}", [Field("carrier", "Carrier"),
                                           Field("tracking", "Tracking no.")], submit,
                   "Marked as shipped.")

    def action_cancel(self) -> None:
        order = self.current
        if order is None:
            return

        async def submit(v: dict[str, str]) -> None:
            await self.client.cancel_order(order.id, v["reason"])

        self.open_form(f"Cancel {order.title}?", [Field("reason", "Reason")], submit,
                   "Order cancelled.")

    def action_address(self) -> None:
        order = self.current
        if order is None:
            return

        async def submit(v: dict[str, str]) -> None:
            if not v["address"].strip():
                raise FieldInvalid("address", "the address is required")
            await self.client.send_address(order.id, v["address"])

        self.open_form("Shipping address (sealed to the seller)", [Field("address", "Address")],
                   submit, "Address sent.")

    def action_dispute(self) -> None:
        order = self.current
        if order is None:
            return

        async def submit(v: dict[str, str]) -> None:
            if not v["reason"].strip():
                raise FieldInvalid("reason", "say what went wrong")
            await self.client.open_dispute(order.id, v["reason"])

        self.open_form(f"Dispute {order.title}", [Field("reason", "Reason")], submit,
                   "Dispute opened; the arbiter will rule.")

    def action_evidence(self) -> None:
        order = self.current
        if order is None:
            return

        async def submit(v: dict[str, str]) -> None:
            if not v["text"].strip():
                raise FieldInvalid("text", "say what the arbiter should know")
            await self.client.add_evidence(order.id, v["text"])

        self.open_form(f"Evidence on {order.title}", [Field("text", "Evidence")], submit,
                   "Evidence sent to the arbiter.")

    def action_review(self) -> None:
        order = self.current
        if order is None:
            return

        async def submit(v: dict[str, str]) -> None:
            try:
                stars = to_int(v["stars"], "1 to 5 stars")
            except ValueError as exc:
                raise FieldInvalid("stars", str(exc)) from None
            await self.client.review_order(order.id, stars, v["text"])

        self.open_form(f"Review the seller of {order.title}", [
            Field("stars", "Stars (1-5)", "5"), Field("text", "Review")], submit,
            "Review published (it replaces an earlier one of this order).")

    def action_confirm(self) -> None:
        self.step("confirm")

    def action_paid(self) -> None:
        self.step("paid")

    def action_settle(self) -> None:
        self.step("settle")

    def action_fund(self) -> None:
        self.step("fund")

    def action_release(self) -> None:
        self.step("release")

    def action_refund(self) -> None:
        self.step("refund")

    def action_accept_ruling(self) -> None:
        self.step("accept_ruling")

    @work(group="order-step")
    async def step(self, name: str) -> None:
        order = self.current
        if order is None:
            return
        api = self.client
        calls: dict[str, Callable[[str], Awaitable[object]]] = {
            "confirm": api.confirm_received, "paid": api.confirm_payment,
            "settle": api.settle_order, "fund": api.fund_escrow, "release": api.release_escrow,
            "refund": api.refund_escrow, "accept_ruling": api.accept_ruling}
        what = name.replace("_", " ")
        result = await self.call(calls[name](order.id), what.capitalize())
        if result is not None:
            self.notify(f"{order.title}: {what} done.", title="Order")
            self.load()

    def live(self, event: Event) -> None:
        if event.type in ("order.changed", "escrow.changed", "events.reset"):
            self.load()
