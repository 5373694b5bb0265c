"""Where each record lives in the DHT: key derivation and the slot a record occupies under its key.

Single-value kinds live at H(kind | publisher | id); multi-value kinds (search indexes, mailboxes,
reviews, the arbiter and keeper directories, an image's holders) share one key per topic and
hold one slot per publisher and member.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import TypeVar

from p2pmarket.identity import Identity
from p2pmarket.wire.bodies import (
    Arbiter,
    Body,
    Holder,
    IndexEntry,
    Keeper,
    Listing,
    Mail,
    Peer,
    Profile,
    Report,
    Review,
    Tombstone,
)
from p2pmarket.wire.records import Record, sign_record

KEY_SIZE = 20  # 160-bit Kademlia keys
MULTI_KINDS = frozenset({"index", "mail", "review", "arbiter", "report", "holder", "keeper"})


def _h(*parts: bytes | str) -> bytes:
    data = b"\x1f".join(p.encode() if isinstance(p, str) else p for p in parts)
    return hashlib.sha1(data).digest()


def normalize_term(term: str) -> str:
    """NFKC + casefold, so `Café` and `CAFÉ` land on one key."""
    return unicodedata.normalize("NFKC", term).casefold().strip()


def single_key(kind: str, publisher: bytes, object_id: str = "") -> bytes:
    return _h(kind, publisher, object_id)


def index_key(scope: str, term: str) -> bytes:
    return _h(scope, normalize_term(term))


def mailbox_key(recipient: bytes) -> bytes:
    return _h("mail", recipient)


def reviews_key(seller: bytes) -> bytes:
    return _h("reviews", seller)


def reports_key(listing_publisher: bytes, listing_id: str) -> bytes:
    return _h("reports", listing_publisher, listing_id)


def blob_key(sha256: bytes) -> bytes:
    """Where the holders of an image (by the sha256 of its bytes) announce themselves."""
    return _h("blob", sha256)


ARBITERS_KEY = _h("arbiters")
KEEPERS_KEY = _h("keepers")


def record_key(record: Record[Body]) -> bytes:
    """The one DHT key a record may be stored under."""
    body = record.body
    match body:
        case Listing():
            return single_key("listing", record.publisher, body.id)
        case Profile() | Peer():
            return single_key(body.KIND, record.publisher)
        case Tombstone() if body.target_kind == "arbiter":
            return ARBITERS_KEY
        case Tombstone() if body.target_kind == "mail" and body.recipient is not None:
            return mailbox_key(body.recipient)
        case Tombstone():
            return single_key(body.target_kind, record.publisher, body.target_id)
        case IndexEntry():
            return index_key(body.scope, body.term)
        case Mail():
            return mailbox_key(body.recipient)
        case Review():
            return reviews_key(body.seller)
        case Arbiter():
            return ARBITERS_KEY
        case Report():
            return reports_key(body.listing_publisher, body.listing_id)
        case Holder():
            return blob_key(body.sha256)
        case Keeper():
            return KEEPERS_KEY
    raise ValueError(f"no DHT key for kind {record.kind!r}")


# owners re-sign their records (see `renews`) this long before they expire
RENEW_BEFORE = 7 * 86_400


def renews(new: Record[Body], old: Record[Body]) -> bool:
    """`new` is `old` re-signed to live longer: same slot and seq, the same content, a later
    expiry. A slot takes it in place of `old` (the seq stays, so offers bound to a listing
    version survive its renewal); other content under the same seq is still refused."""
    return (new.seq == old.seq and new.kind == old.kind and new.publisher == old.publisher
            and new.expires > old.expires and new.body == old.body)


B = TypeVar("B", bound=Body)


def renewal(identity: Identity, record: Record[B], now: float) -> Record[B] | None:
    """`record` re-signed to live longer (see `renews`) when it expires within RENEW_BEFORE of
    `now`, or already expired; None while it has time left. Owners call it on their records."""
    if record.expires - now > RENEW_BEFORE:
        return None
    return sign_record(identity, record.body, seq=record.seq, created=int(now))


def record_slot(record: Record[Body]) -> tuple[bytes, str]:
    """(publisher, member): under one key, one live record per slot; the highest seq wins."""
    body = record.body
    match body:
        case IndexEntry():
            return record.publisher, body.listing_id
        case Mail():
            return record.publisher, body.id
        case Review():
            return record.publisher, body.order_id
        case Tombstone() if body.target_kind == "mail":
            return record.publisher, body.target_id
    return record.publisher, ""


def is_multi(record: Record[Body]) -> bool:
    """True when the record lives under a shared multi-value key."""
    body = record.body
    if isinstance(body, Tombstone):
        return body.target_kind in ("mail", "arbiter")
    return record.kind in MULTI_KINDS
