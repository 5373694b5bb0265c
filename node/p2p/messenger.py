"""Reliable direct messages: the async shell around the outbox, the receiver and the transport.

Send: the outbox signs and queues; the send loop delivers over a channel, retries with backoff,
and after failed direct attempts seals the message into the recipient's DHT mailbox. Receive:
frames from the transport and mail from our mailbox go through the sans-IO `Receiver`; delivered
messages are stored and acknowledged end to end. Misbehaving peers are scored and banned.
Short path (a `DirectHost` transport): frames come to `_on_frame` as they arrive, acks and the
first copy of a fresh message are queued with `send_soon`, without a task in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dht.server import DhtNode
from node.p2p.ids import peer_id_of, public_of
from node.p2p.outbox import Outbox, OutboxEntry
from node.p2p.peers import PeerDirectory
from node.p2p.receiver import (
    GAP_TIMEOUT,
    AckReceived,
    Deliver,
    Event,
    GapOpened,
    Receiver,
    SendAck,
    Violation,
)
from node.p2p.seal import SealError, encryption_key, seal, unseal
from node.p2p.transport import DirectHost, Host, P2PError
from p2pmarket.identity import Identity, PeerIdError
from p2pmarket.storage import StorageError
from p2pmarket.wire.bodies import MAX_TTL, Mail, Tombstone
from p2pmarket.wire.dhtkeys import mailbox_key
from p2pmarket.wire.messages import MAX_ACK_IDS, Ack, Message, MessageBody, sign_message
from p2pmarket.wire.records import RecordError, sign_record

log = logging.getLogger(__name__)

MAIL_CIPHERTEXT_MAX = 6000
BAN_SCORE = 5
BAN_FOR = 600.0
SEND_TIMEOUT = 20.0  # a write that takes longer counts as a failed attempt
RECORD_SENT_AFTER = 1.0  # a direct first copy is recorded as sent this late, or with its ack
# a mailbox holds at most 2048 mails (dht.storage caps), ~16 to a page: read all of it, or a
# message waiting beyond the last page read holds up every later one from its sender
MAILBOX_PAGES = 160
MAILBOX_EARLIEST = 5.0  # a gap asks for a mailbox look at most this often


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 1.0  # first retry after this many seconds, doubling
    cap: float = 300.0
    ack_timeout: float = 10.0  # resend a sent message not acknowledged by then
    direct_before_mailbox: int = 2  # failed direct attempts before sealing into the mailbox
    mailbox_recheck: float = 600.0  # after a mailbox deposit, try direct again this much later
    max_age: float = float(MAX_TTL["mail"])  # give up on a message older than this
    mailbox_poll: float = 60.0
    gap_timeout: float = GAP_TIMEOUT  # receiving: how long later messages wait for a missing one

    def backoff(self, attempts: int) -> float:
        return float(min(self.cap, self.base * 2 ** max(0, attempts)))


@dataclass(frozen=True, slots=True)
class MessageReceived:
    message: Message
    via: str


@dataclass(frozen=True, slots=True)
class MessageDelivered:
    id: str
    recipient: bytes


@dataclass(frozen=True, slots=True)
class MessageFailed:
    id: str
    reason: str


MessengerEvent = MessageReceived | MessageDelivered | MessageFailed
Job = Callable[[], Awaitable[None]]


class Messenger:
    def __init__(self, identity: Identity, host: Host, outbox: Outbox, peers: PeerDirectory,
                 dht: DhtNode | None = None, *, policy: RetryPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.identity, self.host, self.outbox = identity, host, outbox
        self.peers, self.dht = peers, dht
        self.policy = policy or RetryPolicy()
        self.clock = clock
        next_seq, seen = outbox.load_receiver_state()
        self.receiver = Receiver(identity.public, next_seq=next_seq, seen=seen,
                                 delivered=outbox.was_delivered,
                                 gap_timeout=self.policy.gap_timeout)
        self.listeners: list[Callable[[MessengerEvent], None]] = []
        # the user's blocklist: messages from these peers are dropped unread
        self.is_blocked: Callable[[bytes], bool] = lambda peer: False
        self.scores: Counter[bytes] = Counter()
        self._banned: dict[bytes, float] = {}
        self._wake = asyncio.Event()
        self._look_in_mailbox = asyncio.Event()
        self._busy: set[bytes] = set()  # recipients the send loop is sending to right now
        self._running = False
        # first copies written directly, not yet recorded as sent: id -> when to resend
        self._unrecorded: dict[str, float] = {}
        self._record_timer: asyncio.TimerHandle | None = None
        self._frame_error: Exception | None = None
        self._frame_failed = asyncio.Event()
        self._jobs: asyncio.Queue[Job] = asyncio.Queue(maxsize=1000)
        self._enc_key = encryption_key(identity)
        # the short path: frames straight from the transport, acks queued without a task
        self._direct = host if isinstance(host, DirectHost) else None
        host.on_violation = self._host_violation

    # -- API -----------------------------------------------------------------------------------

    def send(self, recipient: bytes, body: MessageBody) -> OutboxEntry:
        """Queue a message; it is delivered (or fails) in the background. Returns its entry.

        The entry is committed to the outbox before this returns. When the transport allows
        it and the send loop is not busy with this recipient, its first copy leaves at once;
        the send loop then sees it only if no ack came in time (or the copy failed).
        """
        now = self.clock()
        direct = (self._running and self._direct is not None and recipient not in self._busy
                  and self.peers.resolved_now(recipient))
        entry = self.outbox.enqueue(
            self.identity, recipient, body, now=now,
            next_attempt=now + self.policy.ack_timeout if direct else now)
        if direct:
            self._send_now(entry, now)
        else:
            self._wake.set()
        return entry

    async def run(self) -> None:
        """Run the loops until cancelled (put it in the node's TaskGroup)."""
        self._frame_error, self._frame_failed = None, asyncio.Event()
        if self._direct is not None:
            self._direct.set_frame_handler(self._on_frame)
        self._running = True
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive_loop())  # frames from before the handler was set
                tg.create_task(self._send_loop())
                tg.create_task(self._job_loop())
                tg.create_task(self._tick_loop())
                tg.create_task(self._raise_frame_error())
                if self.dht is not None:
                    tg.create_task(self._mailbox_loop())
        finally:
            self._running = False
            if self._direct is not None:
                self._direct.set_frame_handler(None)
            self._record_sent()

    def is_banned(self, peer: bytes) -> bool:
        until = self._banned.get(peer)
        return until is not None and until > self.clock()

    # -- receiving -----------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        async for peer_id, payload in self.host.incoming():
            try:
                remote = public_of(peer_id)
            except PeerIdError:
                continue
            self._handle(remote, payload, via="direct")

    def _on_frame(self, peer_id: str, payload: bytes) -> None:
        """The transport's frame handler (a `DirectHost` calls it as each frame arrives).

        Runs what the receive loop runs, in the same order: verify, store, notify the
        listeners, acknowledge. It is called inside libp2p's trio task (on this loop's thread),
        so an ack leaves without crossing over; listeners are called synchronously as before.
        """
        if self._frame_error is not None:
            return  # the messenger is failing: not handled, not acknowledged; the sender retries
        try:
            remote = public_of(peer_id)
        except PeerIdError:
            return
        try:
            self._handle(remote, payload, via="direct")
        except Exception as exc:
            # what an exception in the receive loop does: stop the messenger (the receiver's
            # memory may now be ahead of the database, so nothing more may be acknowledged)
            self._frame_error = exc
            self._frame_failed.set()

    async def _raise_frame_error(self) -> None:
        await self._frame_failed.wait()
        assert self._frame_error is not None
        raise self._frame_error

    def _handle(self, remote: bytes, raw: bytes, via: str) -> None:
        if self.is_banned(remote) or self.is_blocked(remote):
            return
        self._apply(self.receiver.receive(remote, raw, self.clock()), via)

    def _apply(self, events: list[Event], via: str) -> None:
        not_stored: set[str] = set()  # ids to leave unacknowledged (the sender retries them)
        stuck: set[bytes] = set()  # senders whose in-order run stopped at a failed store
        for event in events:
            match event:
                case Deliver(message, raw) if message.sender in stuck and not event.late:
                    self.receiver.not_stored(event)  # after the failed one: not taken either
                    not_stored.add(message.id)
                case Deliver(message, raw):
                    # one transaction: the inbox row and what the listeners keep of it (a chat
                    # line, an order step) are stored together or not at all, so a crash
                    # between them cannot leave a message "delivered" that nobody shows
                    try:
                        with self.outbox.db.transaction():
                            self.outbox.store_delivered(
                                message.id, message.sender, message.seq,
                                message.body.__class__.__name__.lower(), raw, via,
                                now=self.clock())
                            self._notify(MessageReceived(message, via))
                    except StorageError as exc:  # ours (a full disk...): not stored, no ack
                        log.error("could not store message %s from %s: %s", message.id,
                                  peer_id_of(message.sender), exc)
                        self.receiver.not_stored(event)
                        not_stored.add(message.id)
                        if not event.late:
                            stuck.add(message.sender)
                case SendAck(to, ids):
                    ids = tuple(i for i in ids if i not in not_stored)
                    for start in range(0, len(ids), MAX_ACK_IDS):
                        self._ack(to, ids[start:start + MAX_ACK_IDS], connected=via == "direct")
                case AckReceived(sender, ids):
                    for msg_id, via in self.outbox.delivered(sender, ids, now=self.clock(),
                                                             direct_copies=self._unrecorded):
                        self._unrecorded.pop(msg_id, None)
                        self._notify(MessageDelivered(msg_id, sender))
                        if via == "mailbox":
                            self._job(self._tombstone_mail, msg_id, sender)
                case Violation(peer, reason):
                    self._score(peer, reason)
                case GapOpened():
                    self._look_in_mailbox.set()

    def _ack(self, to: bytes, ids: tuple[str, ...], *, connected: bool) -> None:
        """Acknowledge `ids` to `to`: queued at once when the transport allows, else a job.

        `connected`: the messages came in over a channel from `to`, so the ack needs no address
        lookup (were the connection gone, the sender's retry brings a new one).
        """
        if self._direct is None or not (connected or self.peers.resolved_now(to)):
            self._job(self._send_ack, to, ids)
            return
        _, raw = sign_message(self.identity, to, Ack(ids=ids), seq=0)
        try:
            sent = self._direct.send_soon(peer_id_of(to), raw)
        except P2PError:  # the sender retries; we ack again then
            return
        sent.add_done_callback(_settled)

    async def _send_ack(self, to: bytes, ids: tuple[str, ...]) -> None:
        _, raw = sign_message(self.identity, to, Ack(ids=ids), seq=0)
        await self.peers.resolve(to)
        with contextlib.suppress(P2PError):  # the sender retries; we ack again then
            await self.host.send(peer_id_of(to), raw)

    def _host_violation(self, peer_id: str, reason: str) -> None:
        if "rate" in reason:  # the host already throttled it; a busy honest peer is no foe
            log.debug("peer %s throttled: %s", peer_id, reason)
            return
        with contextlib.suppress(PeerIdError):
            self._score(public_of(peer_id), reason)

    def _score(self, peer: bytes, reason: str) -> None:
        self.scores[peer] += 1
        log.info("peer %s misbehaved (%s), score %d", peer_id_of(peer), reason,
                 self.scores[peer])
        if self.scores[peer] >= BAN_SCORE and not self.is_banned(peer):
            self._banned[peer] = self.clock() + BAN_FOR
            log.warning("banning peer %s for %.0f s", peer_id_of(peer), BAN_FOR)
            self._job(self.host.disconnect, peer_id_of(peer))

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            self._apply(self.receiver.tick(self.clock()), "direct")

    # -- mailbox -------------------------------------------------------------------------------

    async def _mailbox_loop(self) -> None:
        """Poll the mailbox, and look sooner when a gap opens (the missing mail may be there)."""
        while True:
            self._look_in_mailbox.clear()
            try:
                await self.fetch_mailbox()
            except (P2PError, RecordError, OSError) as exc:
                log.warning("mailbox fetch failed: %s", exc)
            await asyncio.sleep(min(MAILBOX_EARLIEST, self.policy.mailbox_poll))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self.policy.mailbox_poll - MAILBOX_EARLIEST)):
                    await self._look_in_mailbox.wait()

    async def fetch_mailbox(self) -> int:
        """Fetch, open and process the mail waiting for us; returns how many mails were read."""
        if self.dht is None:
            return 0
        opened: list[tuple[bytes, bytes]] = []
        records = await self.dht.get_all(mailbox_key(self.identity.public),
                                         max_pages=MAILBOX_PAGES)
        for record in records:
            body = record.body
            if not isinstance(body, Mail) or body.recipient != self.identity.public:
                continue
            if self.is_banned(record.publisher) or self.is_blocked(record.publisher):
                continue
            try:
                raw = unseal(self._enc_key, body.ephemeral, body.nonce, body.ciphertext)
            except SealError:
                self._score(record.publisher, "mail that does not open")
                continue
            opened.append((record.publisher, raw))
        # all of it at once, so each sender's mail is taken in seq order whatever the page order
        self._apply(self.receiver.receive_batch(opened, self.clock()), "mailbox")
        return len(opened)

    async def _deposit(self, entry: OutboxEntry) -> str:
        """Seal a message into the recipient's mailbox; returns an error, or "" when stored."""
        if self.dht is None:
            return "no DHT for offline delivery"
        info = await self.peers.resolve(entry.recipient, fresh=True)
        if info is None:
            return "recipient has no peer record (its encryption key is unknown)"
        ephemeral, nonce, ciphertext = seal(info.enc_key, entry.raw)
        if len(ciphertext) > MAIL_CIPHERTEXT_MAX:
            return "message too large for offline delivery"
        mail = Mail(id=entry.id, recipient=entry.recipient, ephemeral=ephemeral, nonce=nonce,
                    ciphertext=ciphertext)
        report = await self.dht.put(sign_record(self.identity, mail, seq=1))
        return "" if report.ok else f"mailbox store refused: {report.refused}"

    async def _tombstone_mail(self, msg_id: str, recipient: bytes) -> None:
        if self.dht is None:
            return
        tomb = Tombstone(target_kind="mail", target_id=msg_id, recipient=recipient)
        await self.dht.put(sign_record(self.identity, tomb, seq=2), remember=False)

    # -- sending -------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            if self._unrecorded:
                self._record_sent()  # so that due() sees every copy that left
            due = self.outbox.due(now=self.clock())
            if due:
                groups: dict[bytes, list[OutboxEntry]] = defaultdict(list)
                for entry in due:
                    groups[entry.recipient].append(entry)
                await asyncio.gather(*(self._send_group(r, g) for r, g in groups.items()))
                continue
            next_due = self.outbox.next_due()
            wait = 5.0 if next_due is None else max(0.0, min(5.0, next_due - self.clock()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _send_now(self, entry: OutboxEntry, now: float) -> None:
        """The first copy of a fresh entry, without the send loop (see `send`)."""
        assert self._direct is not None
        loop = asyncio.get_running_loop()
        try:
            sent = self._direct.send_soon(peer_id_of(entry.recipient), entry.raw)
        except P2PError as exc:
            self._job(self._undeliverable, entry, str(exc) or type(exc).__name__, now)
            return
        timer = loop.call_later(SEND_TIMEOUT, sent.cancel)

        def written(fut: asyncio.Future[None]) -> None:
            timer.cancel()
            if fut.cancelled():  # by the timer, or by the host stopping
                error = f"not written within {SEND_TIMEOUT:.0f} s or the host stopped"
            elif (exc := fut.exception()) is not None:
                error = str(exc) or type(exc).__name__
            else:
                self._sent(entry.id, now + self.policy.ack_timeout)
                return
            self._job(self._undeliverable, entry, error, now)

        sent.add_done_callback(written)

    def _sent(self, msg_id: str, retry_at: float) -> None:
        """A direct first copy was written: record it soon, or with its ack if that is sooner.

        One UPDATE (and its commit) fewer per message when the ack comes back within
        RECORD_SENT_AFTER; meanwhile the entry reads "queued". A crash before the record
        leaves it queued, so it is sent again and the receiver drops the duplicate.
        """
        if not self._running:
            self.outbox.attempted(msg_id, via="direct", retry_at=retry_at, now=self.clock())
            return
        self._unrecorded[msg_id] = retry_at
        if self._record_timer is None:
            delay = min(RECORD_SENT_AFTER, self.policy.ack_timeout / 2)
            self._record_timer = asyncio.get_running_loop().call_later(delay, self._record_sent)

    def _record_sent(self) -> None:
        if self._record_timer is not None:
            self._record_timer.cancel()
            self._record_timer = None
        pending, self._unrecorded = self._unrecorded, {}
        self.outbox.attempted_all(list(pending.items()), via="direct", now=self.clock())

    async def _send_group(self, recipient: bytes, entries: list[OutboxEntry]) -> None:
        self._busy.add(recipient)
        try:
            await self._send_entries(recipient, entries)
        finally:
            self._busy.discard(recipient)

    async def _send_entries(self, recipient: bytes, entries: list[OutboxEntry]) -> None:
        peer_id = peer_id_of(recipient)
        await self.peers.resolve(recipient)
        unreachable = ""
        for entry in entries:
            now = self.clock()
            if now - entry.created > self.policy.max_age:
                self.outbox.fail(entry.id, "gave up: too old", now=now)
                self._notify(MessageFailed(entry.id, "gave up: too old"))
                continue
            if not unreachable:
                try:
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await self.host.send(peer_id, entry.raw)
                except (P2PError, TimeoutError) as exc:
                    unreachable = str(exc) or type(exc).__name__
                else:
                    self.outbox.attempted(entry.id, via="direct", now=now,
                                          retry_at=now + self.policy.ack_timeout)
                    continue
            await self._undeliverable(entry, unreachable, now)

    async def _undeliverable(self, entry: OutboxEntry, error: str, now: float) -> None:
        if entry.attempts + 1 >= self.policy.direct_before_mailbox and entry.via != "mailbox":
            failure = await self._deposit(entry)
            if not failure:
                self.outbox.attempted(entry.id, via="mailbox", now=now,
                                      retry_at=now + self.policy.mailbox_recheck)
                return
            error = f"{error}; {failure}"
        self.outbox.attempted(entry.id, via=entry.via, error=error, now=now,
                              retry_at=now + self.policy.backoff(entry.attempts))

    # -- plumbing ------------------------------------------------------------------------------

    def _job(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        try:
            self._jobs.put_nowait(lambda: fn(*args))
        except asyncio.QueueFull:
            log.warning("messenger job queue full; dropping %s", getattr(fn, "__name__", fn))

    async def _job_loop(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except (P2PError, RecordError, OSError) as exc:
                log.warning("messenger job failed: %s", exc)

    def _notify(self, event: MessengerEvent) -> None:
        for listener in list(self.listeners):
            listener(event)


def _settled(fut: asyncio.Future[None]) -> None:
    """Done callback of a frame nobody awaits: a failure is fine (the peer retries)."""
    if not fut.cancelled():
        fut.exception()
