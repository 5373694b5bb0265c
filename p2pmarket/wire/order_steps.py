"""An order's hash-chained log: signed steps, each naming the hash of the step before it.

Both parties keep the same log. `open_step` and `verify_chain` check steps from bytes alone
(canonical encoding, author's signature, order id, positions, prev hashes); which steps are legal
in which state is `orders.py`'s business. Pure code: no IO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from p2pmarket.identity import Identity
from p2pmarket.wire import signing
from p2pmarket.wire.market import MAX_STEP, MAX_STEPS, Action, Step

STEP_DOMAIN = b"p2pmarket/v1/order-step\x00"
GENESIS_PREV = bytes(32)


class OrderLogError(signing.EnvelopeError):
    """A step or a log that does not verify."""


class BadStep(OrderLogError):
    """Not a canonical, correctly signed step."""


class BrokenChain(OrderLogError):
    """Steps out of place: wrong order id, index or prev hash."""


# one step, one encoding, one hash (the codec is strict): anything else could fork identical logs
_codec = signing.SignedCodec(STEP_DOMAIN, Step, name="order step", max_size=MAX_STEP,
                             signer=lambda step: step.author,
                             errors=signing.Errors(BadStep, BadStep, BadStep))


@dataclass(frozen=True, slots=True)
class Entry:
    """One verified step; `raw` is its exact signed bytes and `hash` their SHA-256."""

    raw: bytes
    step: Step
    hash: bytes

    @property
    def author(self) -> bytes:
        return self.step.author

    @property
    def action(self) -> Action:
        return self.step.action


def sign_step(identity: Identity, order: str, index: int, prev: bytes, action: Action,
              at_ms: int) -> Entry:
    step = Step(order=order, index=index, prev=prev, author=identity.public, at_ms=at_ms,
                action=action)
    raw = _codec.sign(identity, step)
    return Entry(raw, step, hashlib.sha256(raw).digest())


def open_step(raw: bytes) -> Entry:
    """Decode and verify one step from untrusted bytes; raises `BadStep` only."""
    step = _codec.open(raw)
    return Entry(bytes(raw), step, hashlib.sha256(raw).digest())


class OrderLog:
    """The entries of one order in chain order; `append` refuses a step that does not extend it."""

    def __init__(self, order: str, entries: Iterable[Entry] = ()) -> None:
        self.order = order
        self.entries: list[Entry] = []
        for entry in entries:
            self.append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def head(self) -> bytes:
        return self.entries[-1].hash if self.entries else GENESIS_PREV

    def extends(self, entry: Entry) -> bool:
        return entry.step.index == len(self.entries) and entry.step.prev == self.head

    def append(self, entry: Entry) -> None:
        if entry.step.order != self.order:
            raise BrokenChain(f"step of order {entry.step.order}, not {self.order}")
        if not self.extends(entry):
            raise BrokenChain(f"step {entry.step.index} does not extend the log at "
                              f"{len(self.entries)}")
        if len(self.entries) >= MAX_STEPS:
            raise BrokenChain(f"an order log holds at most {MAX_STEPS} steps")
        self.entries.append(entry)

    def truncate(self, length: int) -> list[Entry]:
        """Drop the entries from `length` on; returns them."""
        dropped = self.entries[length:]
        del self.entries[length:]
        return dropped

    def find(self, digest: bytes) -> int | None:
        return next((i for i, e in enumerate(self.entries) if e.hash == digest), None)

    def raws(self) -> list[bytes]:
        return [e.raw for e in self.entries]


def verify_chain(raws: Iterable[bytes], order: str | None = None) -> OrderLog:
    """Verify a whole log from its bytes: every signature, position and prev hash."""
    entries = [open_step(raw) for raw in raws]
    if not entries:
        raise BrokenChain("an order log has at least its opening step")
    return OrderLog(order or entries[0].step.order, entries)
