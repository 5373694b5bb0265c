"""Direct peer messages: a tagged union of bodies inside a signed, addressed envelope.

Wire form: msgpack array [payload, sig]; `payload` is the canonical msgpack of `Message` and `sig`
is Ed25519 over `p2pmarket/v1/msg` + NUL + payload (`signing.SignedCodec`). Binding the
recipient stops a message to one peer from being replayed to another; `seq` orders the messages
of one sender to one recipient.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Annotated

import msgspec
from msgspec import Meta

from p2pmarket.identity import Identity
from p2pmarket.wire import signing
from p2pmarket.wire.bodies import Key32, ObjectId
from p2pmarket.wire.escrow import EscrowCase, EscrowOpen, EscrowStep
from p2pmarket.wire.market import (
    Accept,
    Counter,
    Decline,
    Inquiry,
    Offer,
    OrderStep,
    Withdraw,
)
from p2pmarket.wire.message_base import ChatText
from p2pmarket.wire.message_base import MessageBodyBase as _Body

DOMAIN = b"p2pmarket/v1/msg\x00"
MAX_MESSAGE = 48 * 1024
MAX_ACK_IDS = 64


class MessageError(signing.EnvelopeError):
    """Base: a message this node refuses (the remote peer's fault)."""


class MalformedMessage(MessageError):
    pass


class BadMessageSignature(MessageError):
    pass


class WrongPeer(MessageError):
    """Signed by someone other than the connection's peer, or addressed to someone else."""


class Chat(_Body, frozen=True, tag="chat"):
    conversation: ObjectId
    text: ChatText


class Ack(_Body, frozen=True, tag="ack"):
    """End-to-end acknowledgement of the listed message ids (acks are never acked)."""

    ids: Annotated[tuple[ObjectId, ...], Meta(min_length=1, max_length=MAX_ACK_IDS)]


# later issues add offer/order/escrow kinds to this union
MessageBody = (Chat | Ack | Inquiry | Offer | Counter | Accept | Decline | Withdraw | OrderStep
               | EscrowOpen | EscrowStep | EscrowCase)


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: ObjectId
    sender: Key32
    recipient: Key32
    seq: Annotated[int, Meta(ge=0, le=2**63 - 1)]  # per (sender, recipient); acks use 0
    sent_ms: Annotated[int, Meta(ge=0)]
    body: MessageBody


# strict=False: messages have always been read leniently (see `signing.SignedCodec`)
_codec = signing.SignedCodec(
    DOMAIN, Message, name="message", max_size=MAX_MESSAGE, signer=lambda m: m.sender,
    errors=signing.Errors(MalformedMessage, BadMessageSignature, MalformedMessage), strict=False)


def new_message_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(15)).decode()


def sign_message(identity: Identity, recipient: bytes, body: MessageBody, *, seq: int,
                 msg_id: str | None = None, sent_ms: int | None = None) -> tuple[Message, bytes]:
    """Build, check and sign a message; returns it and its wire bytes."""
    message = Message(id=msg_id or new_message_id(), sender=identity.public, recipient=recipient,
                      seq=seq, sent_ms=int(time.time() * 1000) if sent_ms is None else sent_ms,
                      body=body)
    return message, _codec.sign(identity, message)


def open_message(raw: bytes, *, sender: bytes | None = None,
                 recipient: bytes | None = None) -> Message:
    """Verify untrusted bytes; `sender`/`recipient` are what the connection says they must be."""
    message = _codec.open(raw)
    if sender is not None and message.sender != sender:
        raise WrongPeer("message signed by a different peer than the one that sent it")
    if recipient is not None and message.recipient != recipient:
        raise WrongPeer("message addressed to another peer")
    return message
