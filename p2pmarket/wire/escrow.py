"""Wire bodies of the escrow conversation: the buyer's signed proposal, every party's signed escrow
steps, and the case file (order log) a party hands the arbiter in a dispute.

Like order steps, proposals and escrow steps are signed on their own (not only by the message
envelope), so they stay evidence after they arrive: a restarted node replays them, an arbiter can
check them. The escrow event itself (`escrow.terms.EscrowEvent`: keys, descriptor ack, funded,
release/refund PSBT and signature, dispute, evidence, ruling, ruling accepted, broadcast, cancel)
travels as its msgpack bytes in `EscrowStepPayload.event`, because core never imports escrow/.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec
from msgspec import Meta

from p2pmarket.identity import Identity, verify
from p2pmarket.wire.bodies import Key32, ObjectId, Sig64
from p2pmarket.wire.market import MAX_STEP
from p2pmarket.wire.message_base import MessageBodyBase

PROPOSAL_DOMAIN = b"p2pmarket/v1/escrow-proposal\x00"
STEP_DOMAIN = b"p2pmarket/v1/escrow-step\x00"
MAX_PROPOSAL = 12 * 1024
MAX_ESCROW_STEP = 40 * 1024  # a step with a PSBT; the message envelope allows 48 KiB
MAX_CASE_STEPS = 64

Hash32 = Annotated[bytes, Meta(min_length=32, max_length=32)]
Millis = Annotated[int, Meta(ge=0, le=2**63 - 1)]

_encoder = msgspec.msgpack.Encoder()
_DECODE_ERRORS = (msgspec.MsgspecError, ValueError, TypeError, OverflowError, RecursionError)


class EscrowWireError(Exception):
    """A proposal or escrow step that does not decode or verify (the sender's fault)."""


class Proposal(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """The buyer's escrow proposal for one order, signed by the buyer.

    `opened` is the seller's signed opening step of the order (it names buyer, seller, price and
    listing), `advert` the arbiter's signed `arbiter` record whose fees the terms use, and `terms`
    the msgpack of `escrow.terms.Terms`.
    """

    order: ObjectId
    buyer: Key32
    seller: Key32
    arbiter: Key32
    opened: Annotated[bytes, Meta(max_length=MAX_STEP)]
    advert: Annotated[bytes, Meta(max_length=8192)]
    terms: Annotated[bytes, Meta(max_length=4096)]
    at_ms: Millis


class EscrowStepPayload(msgspec.Struct, frozen=True, array_like=True,
                        forbid_unknown_fields=True):
    """One party's escrow event for one order, bound to the proposal by its hash."""

    order: ObjectId
    proposal: Hash32
    author: Key32
    at_ms: Millis
    event: Annotated[bytes, Meta(max_length=MAX_ESCROW_STEP)]


class Signed(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    payload: bytes  # canonical msgpack of a Proposal or an EscrowStepPayload
    sig: Sig64


def _sign(identity: Identity, domain: bytes, obj: msgspec.Struct, kind: type[msgspec.Struct],
          limit: int) -> bytes:
    payload = _encoder.encode(obj)
    try:  # the schema's constraints, as a receiver would check them
        msgspec.msgpack.decode(payload, type=kind)
    except msgspec.ValidationError as exc:
        raise EscrowWireError(f"invalid {kind.__name__}: {exc}") from exc
    raw = _encoder.encode(Signed(payload, identity.sign(domain + payload)))
    if len(raw) > limit:
        raise EscrowWireError(f"{kind.__name__} is {len(raw)} bytes; the limit is {limit}")
    return raw


def _open(raw: bytes, domain: bytes, kind: type[msgspec.Struct], limit: int
          ) -> tuple[msgspec.Struct, Signed]:
    if len(raw) > limit:
        raise EscrowWireError(f"{kind.__name__} is {len(raw)} bytes; the limit is {limit}")
    try:
        signed = msgspec.msgpack.decode(raw, type=Signed)
        obj = msgspec.msgpack.decode(signed.payload, type=kind)
    except _DECODE_ERRORS as exc:
        raise EscrowWireError(f"not a {kind.__name__}: {exc}") from exc
    if _encoder.encode(signed) != raw or _encoder.encode(obj) != signed.payload:
        raise EscrowWireError(f"{kind.__name__} is not canonically encoded")
    return obj, signed


def digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def sign_proposal(buyer: Identity, proposal: Proposal) -> bytes:
    if proposal.buyer != buyer.public:
        raise EscrowWireError("only the buyer signs the proposal")
    return _sign(buyer, PROPOSAL_DOMAIN, proposal, Proposal, MAX_PROPOSAL)


def open_proposal(raw: bytes) -> Proposal:
    """Decode and verify a proposal (signed by its buyer); raises `EscrowWireError` only."""
    obj, signed = _open(raw, PROPOSAL_DOMAIN, Proposal, MAX_PROPOSAL)
    assert isinstance(obj, Proposal)
    if len({obj.buyer, obj.seller, obj.arbiter}) != 3:
        raise EscrowWireError("buyer, seller and arbiter must be three different keys")
    if not verify(obj.buyer, signed.sig, PROPOSAL_DOMAIN + signed.payload):
        raise EscrowWireError("proposal signature does not verify")
    return obj


def sign_escrow_step(identity: Identity, step: EscrowStepPayload) -> bytes:
    if step.author != identity.public:
        raise EscrowWireError("a step is signed by its author")
    return _sign(identity, STEP_DOMAIN, step, EscrowStepPayload, MAX_ESCROW_STEP + 1024)


def open_escrow_step(raw: bytes) -> EscrowStepPayload:
    """Decode and verify an escrow step (signed by its author); raises `EscrowWireError` only."""
    obj, signed = _open(raw, STEP_DOMAIN, EscrowStepPayload, MAX_ESCROW_STEP + 1024)
    assert isinstance(obj, EscrowStepPayload)
    if not verify(obj.author, signed.sig, STEP_DOMAIN + signed.payload):
        raise EscrowWireError("escrow step signature does not verify")
    return obj


# -- message bodies (members of `messages.MessageBody`) ----------------------------------------


class EscrowOpen(MessageBodyBase, frozen=True, tag="escrow-open"):
    """The buyer's signed proposal, sent to the seller and to the chosen arbiter."""

    order: ObjectId
    proposal: Annotated[bytes, Meta(max_length=MAX_PROPOSAL)]


class EscrowStep(MessageBodyBase, frozen=True, tag="escrow-step"):
    """One signed escrow step, sent by its author to both other parties."""

    order: ObjectId
    step: Annotated[bytes, Meta(max_length=MAX_ESCROW_STEP + 1024)]


class EscrowCase(MessageBodyBase, frozen=True, tag="escrow-case"):
    """A party's case file for the arbiter: its copy of the order's signed log and, if it has
    one, the listing record the order was made on."""

    order: ObjectId
    order_log: Annotated[tuple[Annotated[bytes, Meta(max_length=MAX_STEP)], ...],
                         Meta(min_length=1, max_length=MAX_CASE_STEPS)]
    listing: Annotated[bytes, Meta(max_length=8192)] = b""


EscrowBody = EscrowOpen | EscrowStep | EscrowCase
