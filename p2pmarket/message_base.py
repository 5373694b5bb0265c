"""The base of every direct-message body: a member of the tagged union `messages.MessageBody`.

It lives apart so `p2pmarket.messages` and the market bodies can both build on it without
importing each other.
"""

from __future__ import annotations

import msgspec


class MessageBodyBase(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    """Subclasses name a unique `tag=`; the union decodes by the `kind` field."""
