"""The trade layer's errors (inquiries, negotiation, orders, reviews), split h11-style by who
broke the rule: `LocalProtocolError` is our caller's mistake, `RemoteProtocolError` the peer's."""
from __future__ import annotations


class TradeError(Exception):
    """Base of the market trade layer's errors (negotiation, orders, reviews)."""


class LocalProtocolError(TradeError):
    """We asked for something the protocol forbids (a caller's mistake; nothing was sent)."""


class RemoteProtocolError(TradeError):
    """The peer broke the protocol: drop its message (and count it against the peer)."""


class IllegalEvent(LocalProtocolError):
    """Not allowed in the current state."""


class WrongRole(LocalProtocolError):
    """Allowed only to the other party (only the seller ships, only the buyer confirms)."""


class StaleOffer(LocalProtocolError):
    """The listing changed (higher seq) since the proposal was made."""


class InvalidTerms(LocalProtocolError):
    """Quantity, price or currency do not fit the listing."""


class NotFound(TradeError):
    """No negotiation or order with that id here."""


class Unavailable(TradeError):
    """Something the step needs is missing (the seller's encryption key, a DHT)."""
