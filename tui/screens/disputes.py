"""Disputes screen, for a node that arbitrates: its advert in the arbiter directory, the open and
ruled cases, and for the chosen one both parties' signed order logs side by side, every statement
(the dispute's reason, evidence) and the ruling; `u` rules with a split of the escrow."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from p2pmarket.api.schemas import ArbiterOut
from p2pmarket.api.schemas_trade import ArbiterFields, CaseFileOut, DisputeOut
from p2pmarket.client import ApiError, ClientError, Event
from tui.base import ListDetailScreen
from tui.format import describe_error, esc, short, to_int
from tui.widgets.forms import Field, FieldInvalid

NO_ESCROW = 501
DEFAULT_MINER_FEE = 2_000  # sat left for the network fee by the form's suggested split


def when(at: float | None) -> str:
    return "—" if at is None else datetime.fromtimestamp(at, UTC).strftime("%m-%d %H:%M")


def advert_text(advert: ArbiterOut | None) -> str:
    if advert is None:
        return ("You do not arbitrate: press [b]a[/b] to advertise in the arbiter directory; "
                "sellers can then name you in their listings.")
    fee = f"{advert.fee_percent_bp / 100:g}%" + (f" + {advert.fee_fixed_sat} sat"
                                                  if advert.fee_fixed_sat else "")
    return (f"Arbitrating as [b]{esc(advert.name)}[/b] · fee {fee} · advert until "
            f"{when(advert.expires)}")


def case_table(cases: list[CaseFileOut]) -> Table:
    """Both parties' copies of the order log, side by side (a step one side lacks is blank)."""
    table = Table(expand=True, box=None, padding=(0, 1), show_edge=False)
    by_party: dict[str, CaseFileOut] = {c.party: c for c in cases}
    for party in ("buyer", "seller"):
        case = by_party.get(party)
        title = f"{party}'s log" + ("" if case else " (not sent yet)")
        if case is not None and case.listing_title:
            title += "" if case.listing_matches else " · listing differs!"
        table.add_column(title, ratio=1, overflow="fold")
    rows = max((len(c.steps) for c in cases), default=0)
    for i in range(rows):
        cells = []
        for party in ("buyer", "seller"):
            case = by_party.get(party)
            step = case.steps[i] if case and i < len(case.steps) else None
            cells.append(Text("") if step is None else Text(
                f"{step.index:>2} {when(step.at_ms / 1000)} {step.by:<6} {step.kind}"))
        table.add_row(*cells)
    heads: dict[str, str] = {c.party: c.head[:12] for c in cases}
    if len(heads) == 2:
        same = len({c.head for c in cases}) == 1
        table.add_row(Text(f"head {heads.get('buyer', '')}", style="dim"),
                      Text(f"head {heads.get('seller', '')}"
                           + (" (same)" if same else " (differ)"), style="dim"))
    return table


def case_summary(d: DisputeOut) -> str:
    lines = [f"[b]Order {d.order_id}[/b] · {d.state} · {d.amount_sat} sat escrowed · "
             f"arbiter fee up to {d.max_fee_sat} sat",
             f"Buyer {short(d.buyer)} · seller {short(d.seller)} · opened by "
             f"{d.opened_by or '?'} · heard: {', '.join(d.heard) or 'nobody yet'}"]
    if d.ruling is not None:
        r = d.ruling
        lines.append(f"[b]Ruled[/b]: buyer {r.buyer_sat} sat, seller {r.seller_sat} sat, "
                     f"fee {r.fee_sat} sat" + (f" · “{esc(r.note)}”" if r.note else ""))
    elif d.can_rule:
        lines.append("[b]Ready for your ruling[/b] (u)")
    else:
        lines.append(f"Waiting for both parties (ruling due {when(d.ruling_due)})")
    listing = next((c for c in d.cases if c.listing_title), None)
    if listing is not None:
        lines.append(f"Listing: {esc(listing.listing_title)} — "
                     f"{esc(listing.listing_description[:160])}")
    lines.append("")
    for s in d.statements:
        files = f" [dim]({len(s.attachments)} image(s))[/dim]" if s.attachments else ""
        lines.append(f"[b]{s.by}[/b] {esc(s.kind.replace('_', ' '))}: {esc(s.text)}{files}")
    return "\n".join(lines)


class DisputesScreen(ListDetailScreen[DisputeOut]):
    NOTICE = "Arbitration"
    TABLE_ID = "disputes"
    COLUMNS = (("Order", "order", 14), ("State", "state", 10), ("Amount sat", "amount", 11),
               ("Opened by", "by", 9), ("Heard", "heard", 12), ("Due", "due", 11))
    BINDINGS = [
        Binding("u", "rule", "Rule", id="disputes.rule"),
        Binding("a", "advertise", "Advertise", id="disputes.advertise"),
        Binding("w", "withdraw", "Withdraw", id="disputes.withdraw"),
        Binding("r", "refresh", "Refresh", id="disputes.refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.advert: ArbiterOut | None = None
        self.escrow_on = True

    def compose_head(self) -> ComposeResult:
        yield Static("Loading…", id="arbiter-advert")

    def compose_detail(self) -> ComposeResult:
        with VerticalScroll(id="dispute-detail"):
            yield Static("", id="dispute-summary")
            yield Static("", id="dispute-logs")

    async def rows(self) -> list[DisputeOut] | None:
        """The cases, after the advert above them; none when escrow is off."""
        box = self.query_one("#arbiter-advert", Static)
        try:
            self.advert = await self.client.get_arbiter_advert()
        except ApiError as exc:
            self.advert = None
            if exc.status == NO_ESCROW:
                self.escrow_on = False
            elif exc.status != 404:
                self.notify(describe_error(exc), title="Arbiter advert", severity="error")
        except ClientError as exc:
            self.notify(describe_error(exc), title="Arbiter advert", severity="error")
            box.update("The node does not answer.")
            return None
        try:
            page = await self.client.list_disputes(page_size=200)
        except ApiError as exc:
            if exc.status != NO_ESCROW:
                self.notify(describe_error(exc), title="Disputes", severity="error")
                return None
            self.escrow_on = False
            box.update("Escrow is off on this node (no chain configured), so it cannot "
                       "arbitrate. Start the node with a chain to serve as an arbiter.")
            return []
        except ClientError as exc:
            self.notify(describe_error(exc), title="Disputes", severity="error")
            return None
        self.escrow_on = True
        box.update(advert_text(self.advert))
        return page.items

    def key(self, item: DisputeOut) -> str:
        return item.order_id

    def cells(self, item: DisputeOut) -> tuple[object, ...]:
        heard = ("both" if {"buyer", "seller"} <= set(item.heard)
                 else ", ".join(item.heard) or "—")
        return (item.order_id, item.state, item.amount_sat, item.opened_by or "?", heard,
                when(item.ruling_due))

    async def show(self, item: DisputeOut | None) -> None:
        summary = self.query_one("#dispute-summary", Static)
        logs = self.query_one("#dispute-logs", Static)
        if item is None:
            summary.update("No disputes. When a buyer or seller who named you opens one, the "
                           "case appears here with both order logs." if self.escrow_on else "")
            logs.update("")
        else:
            summary.update(case_summary(item))
            logs.update(case_table(item.cases))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "rule":
            d = self.current
            return d is not None and d.can_rule
        if action == "advertise":
            return self.escrow_on
        if action == "withdraw":
            return self.advert is not None
        return True

    # -- actions ---------------------------------------------------------------------------

    def action_rule(self) -> None:
        d = self.current
        if d is None or not d.can_rule:
            return
        miner_default = min(max(DEFAULT_MINER_FEE, d.network_fee_min_sat),
                            d.network_fee_max_sat or DEFAULT_MINER_FEE)

        async def submit(v: dict[str, str]) -> None:
            try:
                buyer = to_int(v["buyer_sat"] or "0", "a number of sat")
            except ValueError as exc:
                raise FieldInvalid("buyer_sat", str(exc)) from None
            leftover = d.amount_sat - d.max_fee_sat - miner_default
            try:  # empty: the seller gets the rest
                seller = (to_int(v["seller_sat"], "a number of sat") if v["seller_sat"].strip()
                          else leftover - buyer)
            except ValueError as exc:
                raise FieldInvalid("seller_sat", str(exc)) from None
            for name, value in (("buyer_sat", buyer), ("seller_sat", seller)):
                if value < 0:
                    raise FieldInvalid(name, "cannot be negative")
            miner = d.amount_sat - buyer - seller - d.max_fee_sat
            if miner < 0:
                raise FieldInvalid("seller_sat", f"together more than the {d.amount_sat} sat "
                                                 f"in escrow less your {d.max_fee_sat} sat fee")
            if d.network_fee_max_sat and not (
                    d.network_fee_min_sat <= miner <= d.network_fee_max_sat):
                raise FieldInvalid("seller_sat", f"leaves {miner} sat for the network fee; "
                                                 f"allowed {d.network_fee_min_sat} to "
                                                 f"{d.network_fee_max_sat}: give the rest to a "
                                                 "party")
            await self.client.rule_case(d.order_id, buyer, seller, v["note"])

        share = max(0, d.amount_sat - d.max_fee_sat - miner_default)
        self.open_form(f"Rule on {d.order_id}", [
            Field("buyer_sat", "To buyer sat", str(share // 2)),
            Field("seller_sat", "To seller sat", str(share - share // 2),
                  placeholder="empty: the rest"),
            Field("note", "Reasons", placeholder="why, for both parties"),
        ], submit, "Ruling signed and sent to both parties.",
            note=f"{d.amount_sat} sat in escrow, less your fee ({d.max_fee_sat} sat) and the "
                 f"network fee (what is left: {d.network_fee_min_sat} to "
                 f"{d.network_fee_max_sat} sat).")

    def action_advertise(self) -> None:
        a = self.advert

        async def submit(v: dict[str, str]) -> None:
            try:
                percent = float(v["fee_percent"] or "0")
            except ValueError:
                raise FieldInvalid("fee_percent", f"{v['fee_percent']!r} is not a number") from None
            try:
                fixed = to_int(v["fee_fixed_sat"] or "0", "a number of sat")
            except ValueError as exc:
                raise FieldInvalid("fee_fixed_sat", str(exc)) from None
            if not 0 <= percent <= 100:
                raise FieldInvalid("fee_percent", "between 0 and 100")
            await self.client.publish_arbiter_advert(ArbiterFields(
                name=v["name"].strip(), description=v["description"],
                fee_percent_bp=round(percent * 100), fee_fixed_sat=fixed))

        self.open_form("Advertise as an arbiter", [
            Field("name", "Name", a.name if a else ""),
            Field("description", "Languages, terms", a.description if a else ""),
            Field("fee_percent", "Fee %", f"{a.fee_percent_bp / 100:g}" if a else "1",
                  api="fee_percent_bp"),
            Field("fee_fixed_sat", "Fixed fee sat", str(a.fee_fixed_sat) if a else "0"),
        ], submit, "Advert published in the arbiter directory.")

    def action_withdraw(self) -> None:
        if self.advert is None:
            return

        async def submit(_v: dict[str, str]) -> None:
            await self.client.withdraw_arbiter_advert()

        self.open_form("Stop arbitrating?", [], submit, "Advert withdrawn.",
                   note="Open cases stay here until ruled; new listings cannot name you.")

    def live(self, event: Event) -> None:
        if event.type in ("escrow.changed", "events.reset"):
            self.load()
