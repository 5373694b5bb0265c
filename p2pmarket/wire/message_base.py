"""The base of every direct-message body: a member of the tagged union `messages.MessageBody`.

It lives apart so `p2pmarket.wire.messages` and the market bodies can both build on it without
importing each other.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

# one line of chat (a `Chat`, or the first line of an `Inquiry`)
ChatText = Annotated[str, Meta(min_length=1, max_length=4000)]


class MessageBodyBase(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    """Subclasses name a unique `tag=`; the union decodes by the `kind` field."""
