"""Wallet screen (w on the Network screen, or the command palette): balance as of the node's
last sync, a receive address, the history, and Send. Send is two dialogs: the payment's fields,
then a confirmation with amount, fee, total and destination from the node's preview; only that
confirmation signs, with the previewed fee as the most the node may spend and one idempotency
key per confirmation (pressing Send twice pays once)."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal, InvalidOperation

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from p2pmarket.api.schemas_trade import WalletOut
from p2pmarket.api.wallet import SendPreviewOut, WalletTxOut
from tui.base import BaseScreen, data_table
from tui.format import ago, plain
from tui.widgets.forms import Field, FieldInvalid, FormScreen

COLUMNS = (("When", "when", 16), ("", "dir", 3), ("Amount (sat)", "net", 13),
           ("Fee", "fee", 6), ("Conf", "conf", 5), ("Transaction", "txid", 30))


def btc(sats: int) -> str:
    return f"{Decimal(sats).scaleb(-8):.8f} BTC"


def parse_sats(text: str) -> int | None:
    """`150000` sats, `0.0015btc`, or `all` (None: everything confirmed, less the fee)."""
    raw = text.strip().lower()
    if raw == "all":
        return None
    try:
        value = (Decimal(raw[:-3]) * 100_000_000 if raw.endswith("btc")
                 else Decimal(raw.removesuffix("sat")))
    except InvalidOperation:
        raise FieldInvalid("amount", "sats (150000), BTC (0.0015btc) or all") from None
    if value != value.to_integral_value() or value <= 0:
        raise FieldInvalid("amount", "a whole, positive number of sats")
    return int(value)


def balance_text(w: WalletOut) -> str:
    synced = "not synced yet" if w.synced_at is None else f"synced {ago(w.synced_at)}"
    line = (f"[b]{w.confirmed_sat} sat[/b] confirmed ({btc(w.confirmed_sat)}) · "
            f"{w.pending_sat} sat pending · {w.network} · {synced} (r: sync now)")
    if w.sync_error:
        line += f"\n[b]last sync failed[/b]: {w.sync_error}"
    return line


def confirmation(p: SendPreviewOut) -> str:
    """What the user confirms: every figure the node will sign."""
    everything = " (everything confirmed, less the fee)" if p.sweep else ""
    return (f"Pay     {p.amount_sat} sat ({btc(p.amount_sat)}){everything}\n"
            f"to      {p.address} ({p.network})\n"
            f"Fee     {p.fee_sat} sat ({p.fee_rate_sat_vb} sat/vB, {p.vsize} vB)\n"
            f"Total   {p.total_sat} sat leaves the wallet ({btc(p.total_sat)})\n"
            f"Change  {p.change_sat} sat comes back\n\n"
            "The node will not spend more than this. Send?")


def tx_cells(t: WalletTxOut) -> tuple[str, ...]:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(t.time)) if t.time else "?"
    return (when, "in" if t.direction == "in" else "out", f"{t.net_sat:+}",
            "" if t.fee_sat is None else str(t.fee_sat),
            str(t.confirmations) if t.height is not None else "-", t.txid)


class WalletScreen(BaseScreen):
    NOTICE = "Wallet"
    BINDINGS = [
        Binding("s", "send", "Send", id="wallet.send"),
        Binding("a", "new_address", "New address", id="wallet.address"),
        Binding("c", "copy_address", "Copy address", id="wallet.copy"),
        Binding("r", "refresh", "Sync", id="wallet.refresh"),
        Binding("escape", "back", "Back", id="wallet.back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.address: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Loading the wallet…", id="wallet-balance")
        yield Static("", id="wallet-receive")
        yield data_table("wallet-history", COLUMNS)
        yield Footer(compact=True)

    def action_refresh(self) -> None:
        self.load(refresh=True)

    @work(exclusive=True, group="wallet")
    async def load(self, refresh: bool = False) -> None:
        wallet = await self.call(self.client.get_wallet(refresh=refresh), "Wallet")
        if wallet is None:
            self.query_one("#wallet-balance", Static).update("The wallet does not answer.")
            return
        self.query_one("#wallet-balance", Static).update(balance_text(wallet))
        if self.address is None:
            made = await self.call(self.client.new_receive_address(), "Receive address")
            self.address = made.address if made is not None else None
        self.show_address()
        page = await self.call(self.client.list_wallet_transactions(page_size=100), "History")
        if page is not None:
            table = self.query_one("#wallet-history", DataTable)
            table.clear()
            for t in page.items:
                table.add_row(*plain(*tx_cells(t)), key=t.txid)

    def show_address(self) -> None:
        text = (f"Receive: [b]{self.address}[/b]  (c copies it, a makes a new one)"
                if self.address else "Receive: (no address)")
        self.query_one("#wallet-receive", Static).update(text)

    @work(exclusive=True, group="wallet-address")
    async def action_new_address(self) -> None:
        made = await self.call(self.client.new_receive_address(), "Receive address")
        if made is not None:
            self.address = made.address
            self.show_address()

    def action_copy_address(self) -> None:
        if self.address:
            self.app.copy_to_clipboard(self.address)
            self.notify(f"Copied {self.address} (if the terminal allows the clipboard)",
                        title="Wallet")

    def action_back(self) -> None:
        self.dismiss()

    def action_send(self) -> None:
        previewed: list[SendPreviewOut] = []

        async def preview(v: dict[str, str]) -> None:
            address = v["address"].strip()
            if not address:
                raise FieldInvalid("address", "where to send the money")
            sats = parse_sats(v["amount"])
            rate = v["fee_rate"].strip()
            if rate and not rate.isdigit():
                raise FieldInvalid("fee_rate", "whole sat/vB, or empty for the node's estimate")
            previewed.append(await self.client.preview_wallet_send(
                address, sats, sweep=sats is None,
                fee_rate_sat_vb=int(rate) if rate else None))

        def then(ok: bool | None) -> None:
            if ok and previewed:
                self.confirm_send(previewed[-1])

        fields = [Field("address", "To address", placeholder="bcrt1…"),
                  Field("amount", "Amount", placeholder="sats, 0.001btc or all",
                        api="/amount_sat"),
                  Field("fee_rate", "Fee sat/vB", placeholder="the chain's estimate",
                        api="/fee_rate_sat_vb")]
        self.app.push_screen(FormScreen("Send from the wallet", fields, preview,
                                        submit_label="Preview"), then)

    def confirm_send(self, p: SendPreviewOut) -> None:
        key = f"tui-{uuid.uuid4().hex}"  # one per confirmation: a second press pays once

        async def send(_: dict[str, str]) -> None:
            sent = await self.client.send_from_wallet(
                p.address, p.amount_sat, max_fee_sat=p.fee_sat,
                fee_rate_sat_vb=p.fee_rate_sat_vb, idempotency_key=key)
            self.notify(f"Sent {sent.amount_sat} sat to {sent.address} (fee {sent.fee_sat} "
                        f"sat): {sent.txid}", title="Wallet", timeout=10)

        def then(ok: bool | None) -> None:
            if ok:
                self.load()

        self.app.push_screen(FormScreen("Confirm the payment", [], send, note=confirmation(p),
                                        submit_label="Send"), then)
