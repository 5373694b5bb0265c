"""Receiving side of the message protocol, sans-IO: verify, deduplicate, order, acknowledge.

`Receiver.receive(remote, raw, now)` returns events for the shell to carry out. Messages from one
sender are delivered in `seq` order; a gap is held open for `gap_timeout` seconds (the sender's
outbox retries the missing one) and then skipped. A message is acknowledged only once delivered.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from p2pmarket.wire.messages import Ack, Message, MessageError, open_message

MAX_SEEN = 100_000


@dataclass(frozen=True, slots=True)
class Deliver:
    message: Message
    raw: bytes


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


Event = Deliver | SendAck | AckReceived | Violation


@dataclass(slots=True)
class _Sender:
    next_seq: int = 1
    held: dict[int, tuple[Message, bytes]] = field(default_factory=dict)
    gap_since: float | None = None


class Receiver:
    def __init__(self, me: bytes, *, next_seq: dict[bytes, int] | None = None,
                 seen: list[str] | None = None, max_held: int = 256,
                 gap_timeout: float = 120.0) -> None:
        self.me = me
        self.max_held, self.gap_timeout = max_held, gap_timeout
        self._senders: dict[bytes, _Sender] = {
            s: _Sender(next_seq=n) for s, n in (next_seq or {}).items()}
        self._seen: OrderedDict[str, None] = OrderedDict.fromkeys(seen or [])

    def next_seq(self, sender: bytes) -> int:
        state = self._senders.get(sender)
        return state.next_seq if state else 1

    def receive(self, remote: bytes, raw: bytes, now: float) -> list[Event]:
        """A message that arrived from `remote` (the authenticated peer, or the mail's signer)."""
        try:
            message = open_message(raw, sender=remote, recipient=self.me)
        except MessageError as exc:
            return [Violation(remote, f"{type(exc).__name__}: {exc}")]
        if isinstance(message.body, Ack):
            return [AckReceived(message.sender, message.body.ids)]
        state = self._senders.setdefault(message.sender, _Sender())
        if message.id in self._seen or message.seq < state.next_seq:
            return [SendAck(message.sender, (message.id,))]  # a retry: it was delivered
        if message.seq > state.next_seq:
            state.held.setdefault(message.seq, (message, raw))
            if state.gap_since is None:
                state.gap_since = now
            if len(state.held) > self.max_held:
                return self._skip_gap(state)
            return []
        return self._deliver_from(state, message, raw)

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
            self._remember(message.id)
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

    def _remember(self, msg_id: str) -> None:
        self._seen[msg_id] = None
        while len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
