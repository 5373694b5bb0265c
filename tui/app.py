"""The p2pmarket Textual app: screens as modes (F1-F5 and the command palette), live updates
from the node's event stream in a worker. Build it with `make_app(client)`; tests pass a fake."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.notifications import SeverityLevel

from p2pmarket.client import ClientError, Event, NodeUnreachable
from tui.format import describe_error, short
from tui.screens.disputes import DisputesScreen
from tui.screens.inbox import InboxScreen
from tui.screens.market import MarketScreen
from tui.screens.network import NetworkScreen
from tui.screens.orders import OrdersScreen
from tui.screens.profile import ProfileScreen
from tui.screens.sell import SellScreen
from tui.widgets.nav import SCREENS

if TYPE_CHECKING:
    from p2pmarket.api.schemas import NodeStatus
    from p2pmarket.client import Client

log = logging.getLogger(__name__)

NODE_CHECK_EVERY = 5.0  # seconds between status checks (a stopped node shows in the header)


class ScreensProvider(Provider):
    """Command palette entries that switch screens."""

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for mode, (key, title, help_text) in SCREENS.items():
            text = f"Go to {title} ({key.upper()})"
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text),
                          partial(self.app.switch_mode, mode), help=help_text)
        text = "Open the wallet (F5, then w)"
        score = matcher.match(text)
        if score > 0:
            yield Hit(score, matcher.highlight(text), self._open_wallet,
                      help="balance, receive address, history, send")

    def _open_wallet(self) -> None:
        from tui.screens.wallet import WalletScreen

        self.app.switch_mode("network")
        self.app.push_screen(WalletScreen())


class MarketApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "p2pmarket"
    MODES = {"market": MarketScreen, "orders": OrdersScreen, "inbox": InboxScreen,
             "sell": SellScreen, "network": NetworkScreen, "disputes": DisputesScreen,
             "profile": ProfileScreen}
    DEFAULT_MODE = "market"
    COMMANDS = App.COMMANDS | {ScreensProvider}
    # the F-keys' hint is the screens line under the header (tui/widgets/nav.py), not the footer
    BINDINGS = [
        *(Binding(key, f"app.switch_mode('{mode}')", title, id=f"app.{mode}", show=False)
          for mode, (key, title, _) in SCREENS.items()),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    def __init__(self, client: Client, *, live: bool = True) -> None:
        super().__init__()
        self.client = client
        self.live = live
        self.status: NodeStatus | None = None
        self.node_down = False  # the last status check found no node (it stopped)

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every notification is plain text (screens' calls arrive here too): many carry a
        peer's words (chats, reasons, titles), which must not be read as markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def on_mount(self) -> None:
        self.load_status()
        self.set_interval(NODE_CHECK_EVERY, self.check_node)

    async def on_unmount(self) -> None:
        try:
            await self.client.close()
        except Exception:  # closing must not turn an exit into a traceback
            log.exception("closing the client failed")

    @work(exclusive=True, group="status")
    async def load_status(self) -> None:
        try:
            self.status = await self.client.get_status()
        except ClientError as exc:
            self.notify(describe_error(exc), title="Node", severity="error", timeout=10)
            return
        self.sub_title = short(self.status.peer_id or "") + f" · {self.status.state}"
        if self.live:
            self.watch_events(self.status.last_event_id)

    @work(exclusive=True, group="node-check")
    async def check_node(self) -> None:
        """Say so when the node stops, and pick it up again when it is back (a restarted node
        has a new token and maybe a new port: the client re-reads them)."""
        try:
            status = await self.client.get_status()
        except NodeUnreachable:
            if not self.node_down:
                self.node_down = True
                peer = self.status.peer_id if self.status else None
                self.sub_title = short(peer or "") + " · node stopped — waiting"
                self.notify("The node stopped. Waiting for it to come back…", title="Node",
                            severity="warning", timeout=10)
            return
        except ClientError as exc:  # the node answers, with a problem
            log.warning("status check: %s", exc)
            return
        self.status = status
        self.sub_title = short(status.peer_id or "") + f" · {status.state}"
        if self.node_down:
            self.node_down = False
            self.notify("The node is back.", title="Node", timeout=5)
            from tui.base import BaseScreen
            if isinstance(self.screen, BaseScreen):
                self.screen.reload()

    @work(exclusive=True, group="events")
    async def watch_events(self, last_event_id: int | None = None) -> None:
        """Follow the node's SSE stream (reconnecting), notify, and tell the screens."""
        try:
            async for event in self.client.events(last_event_id=last_event_id,
                                                  reconnect=True):
                self.on_live_event(event)
        except ClientError as exc:
            log.warning("event stream ended: %s", exc)
            self.notify(describe_error(exc), title="Live updates stopped", severity="warning")

    def on_live_event(self, event: Event) -> None:
        log.debug("event %s %s", event.type, event.data)
        self.notify_event(event)
        from tui.base import BaseScreen
        for screen in self.screen_stack:
            if isinstance(screen, BaseScreen):
                screen.live(event)

    def notify_event(self, event: Event) -> None:
        data: dict[str, Any] = event.data
        if event.type == "offer.changed":
            self.notify(f"{data.get('kind', 'update')} by the {data.get('by', '?')} "
                        f"(now {data.get('state', '?')}). F3 opens the inbox.",
                        title="Negotiation")
        elif event.type == "order.changed":
            self.notify(f"Order step: {data.get('kind', '?')} (now {data.get('state', '?')}). "
                        "F2 opens orders.", title="Order")
        elif event.type == "chat.received":
            self.notify(str(data.get("text", ""))[:120],
                        title=f"Message from {short(str(data.get('sender', '')))}")
        elif event.type == "message.failed":
            self.notify(str(data.get("reason", "")), title="Message not delivered",
                        severity="warning")
        elif event.type == "escrow.changed":
            self.notify(f"Escrow {data.get('step', '')}: {data.get('state', '')}",
                        title="Escrow")
        elif event.type == "node.stopping":
            self.notify(f"The node is stopping: {data.get('reason', '')}", title="Node",
                        severity="error", timeout=15)


def make_app(client: Client, *, live: bool = True) -> MarketApp:
    """The app over `client` (a `p2pmarket.client.Client`, or a fake with the same methods)."""
    return MarketApp(client, live=live)
