"""What a DHT node accepts: a verified record bound to the key it is stored under.

Pure functions; the protocol calls them on every STORE and the client on every value it reads.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from p2pmarket.wire.bodies import Review
from p2pmarket.wire.dhtkeys import KEY_SIZE, record_key
from p2pmarket.wire.market import verify_grant
from p2pmarket.wire.records import (
    AnyRecord,
    BadSignature,
    ExpiredRecord,
    RecordError,
    decode_record,
)


class KeyMismatch(RecordError):
    """The record is valid but does not belong under this key."""


_VERIFIED_MAX = 20_000
# raw bytes -> (key, record): replicas answer with the same bytes, so a lookup would verify one
# signature several times; a hit still re-checks the key and the expiry
_verified: OrderedDict[bytes, tuple[bytes, AnyRecord]] = OrderedDict()


def validate_for_key(key: bytes, raw: object, now: float | None = None) -> AnyRecord:
    """Decode, verify and bind `raw` to `key`; raises `RecordError` subclasses only."""
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise KeyMismatch("DHT keys are 20 bytes")
    if not isinstance(raw, bytes):
        raise RecordError(f"a DHT value is bytes, got {type(raw).__name__}")
    hit = _verified.get(raw)
    if hit is not None and hit[0] == key:
        record = hit[1]
        if record.expires <= (time.time() if now is None else now):
            raise ExpiredRecord(f"{record.kind} record expired at {record.expires}")
        _verified.move_to_end(raw)
        return record
    record = decode_record(raw, now=now)
    if record_key(record) != key:
        raise KeyMismatch(f"{record.kind} record is not bound to key {key.hex()}")
    body = record.body
    if isinstance(body, Review) and not verify_grant(body.seller, body.order_id,
                                                     record.publisher, body.grant):
        raise BadSignature("review without the seller's grant for this rating key and order")
    _verified[raw] = (key, record)
    if len(_verified) > _VERIFIED_MAX:
        _verified.popitem(last=False)
    return record


def valid_records(key: bytes, raw_values: object, now: float | None = None
                  ) -> tuple[list[AnyRecord], int]:
    """The valid records among untrusted values read for `key`, and how many were invalid
    (a peer may send anything, not even a list)."""
    if not isinstance(raw_values, list | tuple):
        return [], 0 if raw_values is None else 1
    records: list[AnyRecord] = []
    invalid = 0
    for raw in raw_values:
        try:
            records.append(validate_for_key(key, raw, now=now))
        except RecordError:
            invalid += 1
    return records, invalid
