"""The API's routes, one module per resource, each a `registry.Routes` table."""
from __future__ import annotations

from node.api.routes import (
    arbiter,
    escrow,
    events,
    listings,
    messages,
    moderation,
    node,
    offers,
    orders,
    profiles,
    records,
    wallet,
)

__all__ = ["arbiter", "escrow", "events", "listings", "messages", "moderation", "node", "offers",
           "orders", "profiles", "records",
           "wallet"]
