"""Message envelopes, framing and the sans-IO receiver, with no event loop."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.p2p.framing import FrameDecoder, FrameTooLarge, encode_frame
from node.p2p.receiver import AckReceived, Deliver, GapOpened, Receiver, SendAck, Violation
from node.p2p.seal import SealError, encryption_key, encryption_public, seal, unseal
from p2pmarket.identity import Identity
from p2pmarket.wire.messages import (
    Ack,
    BadMessageSignature,
    Chat,
    MalformedMessage,
    MessageError,
    WrongPeer,
    open_message,
    sign_message,
)

ALICE, BOB, MALLORY = Identity.generate(), Identity.generate(), Identity.generate()


def chat(seq: int, text: str = "hello", sender: Identity = ALICE) -> tuple[str, bytes]:
    message, raw = sign_message(sender, BOB.public, Chat(conversation="conv-0001", text=text),
                                seq=seq)
    return message.id, raw


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 50))
def test_frames_survive_any_split(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(0, len(stream), chunk):
        out += decoder.feed(stream[i:i + chunk])
    assert out == payloads and decoder.pending == 0


def test_oversized_frame_announcement_is_refused() -> None:
    decoder = FrameDecoder(max_size=1000)
    with pytest.raises(FrameTooLarge):
        decoder.feed((5000).to_bytes(4, "big") + b"x")
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 1001, max_size=1000)


def test_message_checks() -> None:
    _, raw = chat(1)
    assert open_message(raw, sender=ALICE.public, recipient=BOB.public).seq == 1
    with pytest.raises(WrongPeer):
        open_message(raw, sender=MALLORY.public)  # valid signature, wrong connection
    with pytest.raises(WrongPeer):
        open_message(raw, recipient=MALLORY.public)  # replayed to another recipient
    tampered = bytearray(raw)
    tampered[-70] ^= 1
    with pytest.raises(MessageError):
        open_message(bytes(tampered))
    with pytest.raises(BadMessageSignature):
        open_message(raw.replace(ALICE.public, MALLORY.public))
    rng = random.Random(7)
    for _ in range(2000):
        with pytest.raises(MalformedMessage):
            open_message(rng.randbytes(rng.randrange(0, 200)))


def test_receiver_orders_and_deduplicates() -> None:
    rx = Receiver(BOB.public, gap_timeout=10)
    msgs = [chat(seq) for seq in range(1, 6)]
    # 3 before 1, 2: held, and the shell is told to look in the mailbox once
    assert rx.receive(ALICE.public, msgs[2][1], 0.0) == [GapOpened(ALICE.public, 1)]
    assert rx.receive(ALICE.public, msgs[1][1], 0.0) == []
    events = rx.receive(ALICE.public, msgs[0][1], 0.0)
    delivered = [e.message.seq for e in events if isinstance(e, Deliver)]
    assert delivered == [1, 2, 3]
    assert events[-1] == SendAck(ALICE.public, (msgs[0][0], msgs[1][0], msgs[2][0]))
    again = rx.receive(ALICE.public, msgs[1][1], 1.0)  # a retry of a delivered one
    assert again == [SendAck(ALICE.public, (msgs[1][0],))]


def test_receiver_skips_a_gap_after_timeout() -> None:
    rx = Receiver(BOB.public, gap_timeout=10)
    msgs = [chat(seq) for seq in range(1, 4)]
    rx.receive(ALICE.public, msgs[0][1], 0.0)
    assert rx.receive(ALICE.public, msgs[2][1], 1.0) == [GapOpened(ALICE.public, 2)]
    assert rx.tick(5.0) == []
    events = rx.tick(11.0)
    assert [e.message.seq for e in events if isinstance(e, Deliver)] == [3]
    # the skipped one arrives after all: delivered late, never acknowledged unread (an ack
    # means stored; this was the loss of issue 16)
    late = rx.receive(ALICE.public, msgs[1][1], 12.0)
    assert [type(e) for e in late] == [Deliver, SendAck]
    assert late[0].message.seq == 2 and late[1] == SendAck(ALICE.public, (msgs[1][0],))  # type: ignore[union-attr]
    # and a retry of it now is a duplicate
    assert rx.receive(ALICE.public, msgs[1][1], 13.0) == [SendAck(ALICE.public, (msgs[1][0],))]


def test_receiver_asks_the_inbox_about_old_messages() -> None:
    """What fell out of the in-memory window is asked of the inbox, by (sender, id)."""
    kept = {(ALICE.public, "x")}
    first = chat(1)
    kept.add((ALICE.public, first[0]))
    rx = Receiver(BOB.public, next_seq={ALICE.public: 5},
                  delivered=lambda sender, msg_id: (sender, msg_id) in kept)
    assert rx.receive(ALICE.public, first[1], 0.0) == [SendAck(ALICE.public, (first[0],))]
    never = chat(2)  # below the next seq but never delivered: a skipped gap's message
    assert isinstance(rx.receive(ALICE.public, never[1], 0.0)[0], Deliver)


def test_a_copied_id_is_not_a_duplicate_of_another_senders_message() -> None:
    """Mail ids are visible in the DHT: Mallory reusing one must not shadow Alice's message."""
    rx = Receiver(BOB.public)
    alice_id, alice_raw = chat(1)
    _, mallory_raw = sign_message(MALLORY, BOB.public, Chat(conversation="conv-0001", text="x"),
                                  seq=1, msg_id=alice_id)
    assert isinstance(rx.receive(MALLORY.public, mallory_raw, 0.0)[0], Deliver)
    assert isinstance(rx.receive(ALICE.public, alice_raw, 0.0)[0], Deliver)


def test_a_batch_is_taken_in_seq_order() -> None:
    """A mailbox fetch reads mail in page order (random ids): it is delivered in seq order."""
    rx = Receiver(BOB.public)
    msgs = [chat(seq) for seq in range(1, 41)]
    mixed = msgs[:]
    random.Random(3).shuffle(mixed)
    events = rx.receive_batch([(ALICE.public, raw) for _, raw in mixed], 0.0)
    assert [e.message.seq for e in events if isinstance(e, Deliver)] == list(range(1, 41))
    assert not any(isinstance(e, GapOpened) for e in events)  # the batch filled its own gaps
    rest = rx.receive_batch([(ALICE.public, chat(43)[1]), (ALICE.public, b"junk")], 1.0)
    assert [type(e) for e in rest] == [Violation, GapOpened]


def test_receiver_violations_and_acks() -> None:
    rx = Receiver(BOB.public)
    _, raw = chat(1, sender=MALLORY)
    [event] = rx.receive(ALICE.public, raw, 0.0)  # Mallory's message over Alice's connection
    assert isinstance(event, Violation) and "WrongPeer" in event.reason
    [event] = rx.receive(ALICE.public, b"\x00garbage", 0.0)
    assert isinstance(event, Violation)
    _, ack = sign_message(ALICE, BOB.public, Ack(ids=("abcdefgh",)), seq=0)
    assert rx.receive(ALICE.public, ack, 0.0) == [AckReceived(ALICE.public, ("abcdefgh",))]


def test_receiver_state_restores() -> None:
    old_id, old = chat(2)
    rx = Receiver(BOB.public, next_seq={ALICE.public: 3}, seen=[(ALICE.public, old_id)])
    assert rx.receive(ALICE.public, old, 0.0) == [SendAck(ALICE.public, (old_id,))]
    _, new = chat(3)
    assert isinstance(rx.receive(ALICE.public, new, 0.0)[0], Deliver)


def test_seal_round_trip_and_wrong_key() -> None:
    eph, nonce, ct = seal(encryption_public(BOB), b"secret")
    assert unseal(encryption_key(BOB), eph, nonce, ct) == b"secret"
    with pytest.raises(SealError):
        unseal(encryption_key(ALICE), eph, nonce, ct)
    with pytest.raises(SealError):
        unseal(encryption_key(BOB), eph, nonce, ct[:-1] + bytes([ct[-1] ^ 1]))


def test_inbox_of_an_older_database_keeps_its_messages_by_sender_and_id() -> None:
    """Migration 2 re-keys the inbox by (sender, id); what version 1 kept is still known."""
    from node.p2p.outbox import MIGRATIONS, Outbox
    from p2pmarket.storage import Database

    db = Database.open(":memory:")
    db.migrate("p2p", MIGRATIONS[:1])
    msg_id, raw = chat(1)
    db.execute("INSERT INTO inbox VALUES (?,?,?,?,?,?,?)",
               (msg_id, ALICE.public, 1, "chat", raw, 1.0, "direct"))
    outbox = Outbox(db)
    assert outbox.was_delivered(ALICE.public, msg_id)
    assert not outbox.was_delivered(MALLORY.public, msg_id)
    # another sender's message under the same id is a different message
    assert outbox.store_delivered(msg_id, MALLORY.public, 1, "chat", raw, "direct", now=2.0)
    assert outbox.load_receiver_state()[1] == [(ALICE.public, msg_id), (MALLORY.public, msg_id)]
