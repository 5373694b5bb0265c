"""Network screen: the node's status (peers, DHT, counts, escrow and wallet), its peers and the
message outbox with delivery states; refreshed every few seconds. w opens the wallet."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Static

from p2pmarket.api.schemas import NodeStatus
from p2pmarket.api.schemas_trade import WalletOut
from tui.base import BaseScreen
from tui.format import ago, esc, short

REFRESH_SECONDS = 5.0


def status_text(st: NodeStatus, wallet: WalletOut | None) -> str:
    dht = st.dht
    if dht is None:
        dht_line = "DHT: off"
    else:
        if dht.bootstrapped:
            joined = f"joined ({dht.bootstrap_addrs} bootstrap)"
        elif not dht.bootstrap_addrs:
            joined = "[b]no bootstrap nodes configured[/b]"
        else:
            retry = (f", retry in {dht.next_bootstrap_retry:.0f}s"
                     if dht.next_bootstrap_retry is not None else "")
            joined = f"[b]no bootstrap node answers[/b] ({dht.bootstrap_addrs}{retry})"
        health = "healthy" if dht.contacts >= 8 else "few contacts" if dht.contacts else "alone"
        dht_line = (f"DHT {dht.listening or '-'} · {dht.contacts} contacts ({health}) · "
                    f"{dht.records_held} records · {joined}")
    lines = [
        f"[b]{st.peer_id or '(no peer id yet)'}[/b]",
        f"Node {st.version} · {st.state} · up {int(st.uptime)}s · "
        f"{st.connected_peers} peers connected"
        + (f" · starting: {', '.join(st.starting)}" if st.starting else ""),
        dht_line,
        f"Listings: {st.my_listings} mine, {st.cached_listings} cached · "
        f"{st.offers} offers · {st.orders} orders",
    ]
    chain = st.chain
    if chain is not None:
        tip = (f"tip {chain.tip_height}" if chain.tip_height is not None
               else f"[b]backend down[/b]: {esc(chain.error)}")
        lines.append(f"Chain {esc(chain.network)} · {esc(chain.backend)} · {tip}")
    if wallet is not None:
        lines.append(f"Escrow on · wallet: {wallet.confirmed_sat} sat confirmed, "
                     f"{wallet.pending_sat} pending")
    elif chain is None:
        lines.append("Escrow: " + ("on" if st.escrow else "off (manual payment only)"))
    return "\n".join(lines)


class NetworkScreen(BaseScreen):
    BINDINGS = [Binding("r", "refresh", "Refresh", id="network.refresh"),
                Binding("w", "wallet", "Wallet", id="network.wallet")]

    def action_wallet(self) -> None:
        from tui.screens.wallet import WalletScreen

        self.app.push_screen(WalletScreen())

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Loading node status…", id="node-status")
        with Horizontal(id="network-tables"):
            peers: DataTable[str] = DataTable(id="peers", cursor_type="row")
            peers.add_column("Peer", key="peer", width=15)
            peers.add_column("Conn", key="connected", width=4)
            yield peers
            outbox: DataTable[str] = DataTable(id="outbox", cursor_type="row")
            for label, key, width in (("To", "to", 15), ("Kind", "kind", 8),
                                      ("State", "state", 9), ("When", "when", 7)):
                outbox.add_column(label, key=key, width=width)
            yield outbox
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.set_interval(REFRESH_SECONDS, self.reload)

    def reload(self) -> None:
        if self.is_current:
            self.load()

    @work(exclusive=True, group="network")
    async def load(self) -> None:
        status = await self.call(self.client.get_status(), "Node status")
        if status is None:
            self.query_one("#node-status", Static).update("The node does not answer.")
            return
        wallet = await self.call(self.client.get_wallet(), "Wallet") if status.escrow else None
        self.query_one("#node-status", Static).update(status_text(status, wallet))
        peers = await self.call(self.client.list_peers(page_size=100), "Peers")
        if peers is not None:
            table = self.query_one("#peers", DataTable)
            table.clear()
            for p in peers.items:
                table.add_row(short(p.peer), "yes" if p.connected else "no", key=p.peer)
        outbox = await self.call(self.client.list_outbox(page_size=50), "Outbox")
        if outbox is not None:
            table = self.query_one("#outbox", DataTable)
            table.clear()
            for m in sorted(outbox.items, key=lambda m: -m.updated):
                table.add_row(short(m.recipient), m.kind, m.state, ago(m.updated), key=m.id)
