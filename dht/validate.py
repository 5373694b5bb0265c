"""What a DHT node accepts: a verified record bound to the key it is stored under.

Pure functions; the protocol calls them on every STORE and the client on every value it reads.
"""

from __future__ import annotations

from p2pmarket.dhtkeys import KEY_SIZE, record_key
from p2pmarket.records import AnyRecord, RecordError, decode_record


class KeyMismatch(RecordError):
    """The record is valid but does not belong under this key."""


def validate_for_key(key: bytes, raw: object, now: float | None = None) -> AnyRecord:
    """Decode, verify and bind `raw` to `key`; raises `RecordError` subclasses only."""
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise KeyMismatch("DHT keys are 20 bytes")
    if not isinstance(raw, bytes):
        raise RecordError(f"a DHT value is bytes, got {type(raw).__name__}")
    record = decode_record(raw, now=now)
    if record_key(record) != key:
        raise KeyMismatch(f"{record.kind} record is not bound to key {key.hex()}")
    return record
