"""Display helpers of the TUI: money in major units, short peer ids, and API errors turned into
one readable line (or per-field messages for a form)."""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.text import Text
from textual.markup import escape

from p2pmarket.client import ApiError, ClientError, NodeUnreachable

DECIMALS = {"BTC": 8, "JPY": 0}


def esc(value: object) -> str:
    """Text from a peer (titles, notes, chats, profiles...) made safe inside markup: a seller
    must not style our screen, let alone put `[@click=...]` actions in it."""
    return escape(str(value))


def plain(*values: object) -> list[Text]:
    """Table cells shown as they are (DataTable reads a str cell as markup)."""
    return [Text(str(v)) for v in values]


def money(price: Any) -> str:
    """`Price(1250, "EUR")` -> `12.50 EUR`."""
    places = DECIMALS.get(price.currency, 2)
    return f"{Decimal(price.amount).scaleb(-places):.{places}f} {price.currency}"


def to_minor(text: str, currency: str = "EUR") -> int:
    """`12.50` -> 1250; raises ValueError with a message fit for a form."""
    try:
        value = Decimal(text.strip()) * (10 ** DECIMALS.get(currency, 2))
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount") from None
    if value != value.to_integral_value() or value < 0:
        raise ValueError(f"{text} {currency}: too many decimals, or negative")
    return int(value)


def to_int(text: str, what: str = "a number") -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not {what}") from None


def short(peer: str) -> str:
    """A peer id shortened for a table cell: `12D3KooW…wRJsNK`."""
    return peer if len(peer) <= 16 else f"{peer[:8]}…{peer[-6:]}"


def ago(at: float) -> str:
    secs = max(0, int(time.time() - at))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if secs >= size:
            return f"{secs // size}{unit} ago"
    return f"{secs}s ago"


def describe_error(exc: BaseException) -> str:
    """One line for a notification: never a traceback."""
    if isinstance(exc, ApiError):
        text = exc.title or f"error {exc.status}"
        if exc.detail and exc.detail != exc.title:
            text += f": {exc.detail}"
        for err in exc.errors[:3]:
            where = err.get("pointer") or err.get("parameter") or ""
            if err.get("detail") and err.get("detail") != exc.detail:
                text += f"\n{where.strip('/') or 'input'}: {err['detail']}"
        return text
    if isinstance(exc, NodeUnreachable):
        return f"The node does not answer: {exc}"
    if isinstance(exc, ClientError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def field_errors(exc: ApiError) -> dict[str, str]:
    """Where (the JSON pointer without its leading slash, or the query parameter) -> message."""
    found: dict[str, str] = {}
    for err in exc.errors:
        name = str(err.get("pointer") or err.get("parameter") or "").strip("/")
        found.setdefault(name, str(err.get("detail", "invalid")))
    return found
