"""Receiving side of the message protocol, sans-IO: verify, deduplicate, order, acknowledge.

`Receiver.receive(remote, raw, now)` returns events for the shell to carry out. Messages from one
sender are delivered in `seq` order; a gap is held open for `gap_timeout` seconds (the sender's
outbox retries the missing one, and `GapOpened` tells the shell to look in the mailbox) and then
skipped. A message is acknowledged only once delivered.

A duplicate is a message whose (sender, id) was delivered before: the recent ones are in memory,
older ones are asked of `delivered(sender, id)` (the shell's inbox lookup). A message below the
sender's next seq that was never delivered is one a skipped gap left behind: it is delivered
late, never dropped, because an ack means it was stored. `receive_batch` opens a batch (a mailbox
fetch) first and feeds it in (sender, seq) order, so mail read in any order arrives in order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from p2pmarket.wire.messages import Ack, Message, MessageError, open_message

MAX_SEEN = 100_000
GAP_TIMEOUT = 900.0  # longer than the sender's mailbox recheck (600 s), so its direct retry lands


@dataclass(frozen=True, slots=True)
class Deliver:
    message: Message
    raw: bytes
    late: bool = False  # below the sender's next seq (a skipped gap left it behind)


@dataclass(frozen=True, slots=True)
class SendAck:
    to: bytes
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AckReceived:
    sender: bytes
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Violation:
    peer: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class GapOpened:
    """Messages from `sender` wait for a missing one (seq `missing`): it may be in the mailbox."""

    sender: bytes
    missing: int


Event = Deliver | SendAck | AckReceived | Violation | GapOpened


@dataclass(slots=True)
class _Sender:
    next_seq: int = 1
    held: dict[int, tuple[Message, bytes]] = field(default_factory=dict)
    gap_since: float | None = None


def _never(sender: bytes, msg_id: str) -> bool:
    return False


class Receiver:
    def __init__(self, me: bytes, *, next_seq: dict[bytes, int] | None = None,
                 seen: Iterable[tuple[bytes, str]] = (), max_held: int = 256,
                 gap_timeout: float = GAP_TIMEOUT,
                 delivered: Callable[[bytes, str], bool] = _never) -> None:
        self.me = me
        self.max_held, self.gap_timeout = max_held, gap_timeout
        self._delivered = delivered
        self._senders: dict[bytes, _Sender] = {
            s: _Sender(next_seq=n) for s, n in (next_seq or {}).items()}
        self._seen: OrderedDict[tuple[bytes, str], None] = OrderedDict.fromkeys(seen)

    def next_seq(self, sender: bytes) -> int:
        state = self._senders.get(sender)
        return state.next_seq if state else 1

    def receive(self, remote: bytes, raw: bytes, now: float) -> list[Event]:
        """A message that arrived from `remote` (the authenticated peer, or the mail's signer)."""
        try:
            message = open_message(raw, sender=remote, recipient=self.me)
        except MessageError as exc:
            return [Violation(remote, f"{type(exc).__name__}: {exc}")]
        return self._accept(message, raw, now)

    def _accept(self, message: Message, raw: bytes, now: float) -> list[Event]:
        """A verified message: acks, duplicates, late ones, gaps, deliveries."""
        if isinstance(message.body, Ack):
            return [AckReceived(message.sender, message.body.ids)]
        state = self._senders.setdefault(message.sender, _Sender())
        if self._was_delivered(message):
            return [SendAck(message.sender, (message.id,))]  # a retry: it was delivered
        if message.seq < state.next_seq:  # left behind by a skipped gap: deliver it late
            self._remember(message.sender, message.id)
            return [Deliver(message, raw, late=True), SendAck(message.sender, (message.id,))]
        if message.seq > state.next_seq:
            opened = state.gap_since is None
            state.held.setdefault(message.seq, (message, raw))
            if opened:
                state.gap_since = now
            if len(state.held) > self.max_held:
                return self._skip_gap(state)
            return [GapOpened(message.sender, state.next_seq)] if opened else []
        return self._deliver_from(state, message, raw)

    def receive_batch(self, items: Iterable[tuple[bytes, bytes]], now: float) -> list[Event]:
        """Messages read together (`(remote, raw)` pairs): each sender's in seq order."""
        events: list[Event] = []
        opened: list[tuple[Message, bytes]] = []
        for remote, raw in items:
            try:
                opened.append((open_message(raw, sender=remote, recipient=self.me), raw))
            except MessageError as exc:
                events.append(Violation(remote, f"{type(exc).__name__}: {exc}"))
        opened.sort(key=lambda item: (item[0].sender, item[0].seq))
        for message, raw in opened:
            events += self._accept(message, raw, now)
        # a gap the batch itself filled is not worth a mailbox look
        return [e for e in events if not isinstance(e, GapOpened)
                or self._senders[e.sender].gap_since is not None]

    def _was_delivered(self, message: Message) -> bool:
        key = (message.sender, message.id)
        if key in self._seen:
            return True
        if message.seq >= self.next_seq(message.sender):
            return False  # nothing at or above the next seq was delivered yet
        return self._delivered(message.sender, message.id)

    def not_stored(self, delivered: Deliver) -> None:
        """The shell could not store a delivered message (our disk, not the peer): forget it,
        so the sender's retry is taken as new. An in-order one moves the sender's next seq back
        to it; the shell drops the rest of that sender's run and acks none of it."""
        message = delivered.message
        self._seen.pop((message.sender, message.id), None)
        state = self._senders.get(message.sender)
        if state is not None and not delivered.late and message.seq < state.next_seq:
            state.next_seq = message.seq

    def tick(self, now: float) -> list[Event]:
        """Skip gaps that stayed open too long (the missing message is not coming)."""
        events: list[Event] = []
        for state in self._senders.values():
            if state.gap_since is not None and now - state.gap_since >= self.gap_timeout:
                events += self._skip_gap(state)
        return events

    def _skip_gap(self, state: _Sender) -> list[Event]:
        first = min(state.held)
        message, raw = state.held.pop(first)
        return self._deliver_from(state, message, raw)

    def _deliver_from(self, state: _Sender, message: Message, raw: bytes) -> list[Event]:
        delivered: list[Event] = []
        ids: list[str] = []
        while True:
            self._remember(message.sender, message.id)
            delivered.append(Deliver(message, raw))
            ids.append(message.id)
            state.next_seq = message.seq + 1
            nxt = state.held.pop(state.next_seq, None)
            if nxt is None:
                break
            message, raw = nxt
        state.gap_since = None if not state.held else state.gap_since
        for seq in [s for s in state.held if s < state.next_seq]:
            del state.held[seq]
        return [*delivered, SendAck(message.sender, tuple(ids))]

    def _remember(self, sender: bytes, msg_id: str) -> None:
        self._seen[(sender, msg_id)] = None
        while len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
