"""Escrow wire format: signed proposals and steps verify, and anything altered does not."""

from __future__ import annotations

import msgspec
import pytest

from escrow.terms import Funded
from node.escrow.book import decode_event, encode_event
from p2pmarket.identity import Identity
from p2pmarket.wire.escrow import (
    EscrowStep,
    EscrowStepPayload,
    EscrowWireError,
    Proposal,
    Signed,
    open_escrow_step,
    open_proposal,
    sign_escrow_step,
    sign_proposal,
)
from p2pmarket.wire.messages import Message, open_message, sign_message

BUYER, SELLER, ARBITER = Identity.generate(), Identity.generate(), Identity.generate()


def proposal(**changes: object) -> Proposal:
    fields: dict[str, object] = dict(order="order-0001", buyer=BUYER.public,
                                     seller=SELLER.public, arbiter=ARBITER.public,
                                     opened=b"step", advert=b"advert", terms=b"terms", at_ms=1)
    fields.update(changes)
    return Proposal(**fields)  # type: ignore[arg-type]


def test_a_proposal_is_the_buyers_and_tamper_evident() -> None:
    raw = sign_proposal(BUYER, proposal())
    assert open_proposal(raw) == proposal()
    with pytest.raises(EscrowWireError):
        sign_proposal(SELLER, proposal())  # only the buyer proposes
    signed = msgspec.msgpack.decode(raw, type=Signed)
    forged = msgspec.msgpack.encode(Signed(signed.payload.replace(b"terms", b"TERMS"),
                                           signed.sig))
    with pytest.raises(EscrowWireError, match="signature"):
        open_proposal(forged)
    with pytest.raises(EscrowWireError, match="three different keys"):
        open_proposal(sign_proposal(BUYER, proposal(arbiter=SELLER.public)))
    with pytest.raises(EscrowWireError):
        open_proposal(b"\x92\x01\x02")


def test_a_step_carries_an_escrow_event_signed_by_its_author() -> None:
    event = Funded("ab" * 32, 1, 250_000, 1)
    step = EscrowStepPayload(order="order-0001", proposal=bytes(32), author=SELLER.public,
                             at_ms=5, event=encode_event(event))
    raw = sign_escrow_step(SELLER, step)
    opened = open_escrow_step(raw)
    assert opened == step and decode_event(opened.event) == event
    with pytest.raises(EscrowWireError):
        sign_escrow_step(BUYER, step)  # not the author
    flipped = bytearray(raw)
    flipped[-1] ^= 1
    with pytest.raises(EscrowWireError):
        open_escrow_step(bytes(flipped))
    # and it travels as a direct message body
    _, wire = sign_message(SELLER, BUYER.public, EscrowStep(order="order-0001", step=raw), seq=1)
    message: Message = open_message(wire)
    assert isinstance(message.body, EscrowStep) and message.body.step == raw
