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

from p2pmarket.identity import Identity
from p2pmarket.wire import signing
from p2pmarket.wire.bodies import Key32, ObjectId
from p2pmarket.wire.market import MAX_STEP
from p2pmarket.wire.message_base import MessageBodyBase

PROPOSAL_DOMAIN = b"p2pmarket/v1/escrow-proposal\x00"
STEP_DOMAIN = b"p2pmarket/v1/escrow-step\x00"
MAX_PROPOSAL = 12 * 1024
MAX_ESCROW_STEP = 40 * 1024  # a step with a PSBT; the message envelope allows 48 KiB
MAX_CASE_STEPS = 64

Hash32 = Annotated[bytes, Meta(min_length=32, max_length=32)]
Millis = Annotated[int, Meta(ge=0, le=2**63 - 1)]


class EscrowWireError(signing.EnvelopeError):
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


# the wire form of a signed proposal or escrow step: [payload, sig], payload its canonical msgpack
Signed = signing.SignedPayload


def _distinct_parties(proposal: Proposal) -> None:
    if len({proposal.buyer, proposal.seller, proposal.arbiter}) != 3:
        raise EscrowWireError("buyer, seller and arbiter must be three different keys")


_ERRORS = signing.Errors(EscrowWireError, EscrowWireError, EscrowWireError)
_proposals = signing.SignedCodec(PROPOSAL_DOMAIN, Proposal, name="proposal",
                                 max_size=MAX_PROPOSAL, signer=lambda p: p.buyer,
                                 check=_distinct_parties, errors=_ERRORS)
_steps = signing.SignedCodec(STEP_DOMAIN, EscrowStepPayload, name="escrow step",
                             max_size=MAX_ESCROW_STEP + 1024, signer=lambda step: step.author,
                             errors=_ERRORS)


def digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def sign_proposal(buyer: Identity, proposal: Proposal) -> bytes:
    if proposal.buyer != buyer.public:
        raise EscrowWireError("only the buyer signs the proposal")
    return _proposals.sign(buyer, proposal)


def open_proposal(raw: bytes) -> Proposal:
    """Decode and verify a proposal (signed by its buyer); raises `EscrowWireError` only."""
    return _proposals.open(raw)


def sign_escrow_step(identity: Identity, step: EscrowStepPayload) -> bytes:
    if step.author != identity.public:
        raise EscrowWireError("a step is signed by its author")
    return _steps.sign(identity, step)


def open_escrow_step(raw: bytes) -> EscrowStepPayload:
    """Decode and verify an escrow step (signed by its author); raises `EscrowWireError` only."""
    return _steps.open(raw)


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
