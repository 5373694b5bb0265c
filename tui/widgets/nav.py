"""The line under the header that names every screen with its key, the current one lit; a click
on a name switches to it. It is the footer hint for the app-wide F-keys, which the footer leaves
to the screen's own actions (at 80 columns both do not fit on one line)."""

from __future__ import annotations

from textual.widgets import Static

# mode -> (key, title, help); the order of the line and of the command palette
SCREENS: dict[str, tuple[str, str, str]] = {
    "market": ("f1", "Market", "search listings, open one, make an offer"),
    "orders": ("f2", "Orders", "my orders: pay, ship, confirm receipt, escrow steps"),
    "inbox": ("f3", "Inbox", "negotiations: accept, counter, decline, message"),
    "sell": ("f4", "Sell", "my listings: create, edit, delete"),
    "network": ("f5", "Network", "node status, peers, DHT, outbox, wallet"),
    "disputes": ("f6", "Disputes", "arbiter: cases with both logs and evidence, rulings"),
    "profile": ("f7", "Profile", "my profile and the reviews buyers gave me"),
}


def nav_markup(current: str) -> str:
    parts = []
    for mode, (key, title, _) in SCREENS.items():
        link = f"@click=app.switch_mode('{mode}')"
        if mode == current:
            parts.append(f"[{link} reverse b] {key.upper()} {title} [/]")
        else:
            parts.append(f"[{link}] [$accent]{key.upper()}[/] {title} [/]")
    return "".join(parts)


class NavBar(Static):
    DEFAULT_CSS = """
    NavBar { height: 1; width: 1fr; background: $panel; color: $text-muted; }
    """

    def __init__(self, current: str) -> None:
        super().__init__(nav_markup(current))
        self.current = current
