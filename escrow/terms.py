"""Escrow vocabulary shared by the state machine and the bitcoin adapter: roles, the agreed terms,
payouts, the events that travel on an order's log, and the escrow error hierarchy. Pure data.

Amounts are integer satoshis everywhere. Events are frozen msgspec structs in one tagged union
(`EscrowEvent`), so the node can carry them in signed channel messages as they are.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from p2pmarket.wire import bodies

MAX_MONEY = 21_000_000 * 100_000_000
# Outputs below this are non-standard for some script types (P2PKH's 546); a payout output is
# either absent (0) or at least this big, so every transaction we build relays.
DUST_SATS = 546

Network = Literal["regtest", "signet", "testnet", "mainnet"]
Sats = Annotated[int, Meta(ge=0, le=MAX_MONEY)]
Txid = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
Psbt64 = Annotated[str, Meta(max_length=200_000)]  # base64 PSBT; "" when a message carries none
Text = Annotated[str, Meta(max_length=4000)]
Extkey = Annotated[str, Meta(min_length=100, max_length=120)]  # a bare xpub/tpub
AddressStr = Annotated[str, Meta(min_length=14, max_length=100)]
PayoutKind = Literal["release", "refund", "ruling", "timeout"]


# -- errors -----------------------------------------------------------------------------------


class EscrowError(Exception):
    """Base of every error the escrow package raises."""


class LocalEscrowError(EscrowError):
    """We tried something the escrow rules forbid: a bug or a wrong user action on this node."""


class UnknownEscrow(LocalEscrowError):
    """This node has no escrow for that order."""


class NotAllowedNow(LocalEscrowError):
    """The escrow's rules refuse our action in its current state, or from our role in it."""


class RemoteEscrowError(EscrowError):
    """A peer broke the escrow rules; its message was rejected and the escrow is unchanged."""


class EscrowBitcoinError(EscrowError):
    """A bitcoin-level failure: bad key, descriptor, address, PSBT or transaction."""


class PsbtRejected(EscrowBitcoinError):
    """A PSBT failed the check before signing (or could not be finalized); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChainError(EscrowError):
    """The chain backend failed or refused (unreachable, bad reply, transaction rejected)."""


# -- roles, terms, payouts --------------------------------------------------------------------


class Role(StrEnum):
    BUYER = "buyer"
    SELLER = "seller"
    ARBITER = "arbiter"


class Terms(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the three parties agreed before any key was exchanged.

    `deadlines` is the listing's `EscrowTerms` (seconds). The arbiter's fee is
    `arbiter_fee_fixed_sats + amount_sats * arbiter_fee_bp / 10_000`, owed only on a ruling.
    Miner fees of every settlement transaction lie in `[min_fee_sats, max_fee_sats]` and come
    out of the escrow. `seller_timeout_blocks` (relative, BIP68) adds the seller-only branch.
    """

    order_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    amount_sats: Annotated[int, Meta(ge=DUST_SATS, le=MAX_MONEY)]
    network: Network = "regtest"
    min_fee_sats: Sats = 110
    max_fee_sats: Sats = 20_000
    arbiter_fee_bp: Annotated[int, Meta(ge=0, le=2000)] = 0
    arbiter_fee_fixed_sats: Annotated[int, Meta(ge=0, le=10_000_000)] = 0
    deadlines: bodies.EscrowTerms = bodies.EscrowTerms()
    min_confirmations: Annotated[int, Meta(ge=0, le=100)] = 1
    seller_timeout_blocks: Annotated[int, Meta(ge=1, le=65_535)] | None = None

    def __post_init__(self) -> None:
        if self.min_fee_sats > self.max_fee_sats:
            raise ValueError("min_fee_sats exceeds max_fee_sats")
        if self.amount_sats - self.max_fee_sats < DUST_SATS:
            raise ValueError("amount_sats leaves a dust payout at the maximum fee")
        if self.arbiter_fee_sats + self.min_fee_sats + DUST_SATS > self.amount_sats:
            raise ValueError("the arbiter fee leaves nothing to pay out")

    @property
    def arbiter_fee_sats(self) -> int:
        """The most the arbiter may take in a ruling."""
        return self.arbiter_fee_fixed_sats + self.amount_sats * self.arbiter_fee_bp // 10_000

    @classmethod
    def for_listing(cls, order_id: str, amount_sats: int, listing_escrow: bodies.EscrowTerms,
                    arbiter: bodies.Arbiter, **extra: object) -> Terms:
        """Terms from a listing's deadlines and the chosen arbiter's advert (validated)."""
        fields: dict[str, object] = dict(
            order_id=order_id, amount_sats=amount_sats, deadlines=listing_escrow,
            arbiter_fee_bp=arbiter.fee_percent_bp, arbiter_fee_fixed_sats=arbiter.fee_fixed_sat,
        )
        fields.update(extra)
        return msgspec.convert(fields, cls, from_attributes=True)


class PayoutOutput(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    address: AddressStr
    sats: Sats


class Payout(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The outputs a settlement transaction must have, exactly.

    `outputs` have fixed amounts. If `remainder_to` is set, that address receives what is left
    after the fixed outputs and the miner fee (the signer who builds picks the fee within the
    bounds); otherwise the fee is whatever the fixed outputs leave, and must be within bounds.
    """

    kind: PayoutKind
    outputs: tuple[PayoutOutput, ...]
    remainder_to: AddressStr | None
    min_fee_sats: Sats
    max_fee_sats: Sats


class Funding(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The escrow's funding output."""

    txid: Txid
    vout: Annotated[int, Meta(ge=0, le=100_000)]
    amount: Sats


# -- events (the messages on an order's log, plus the local clock) ----------------------------


class _Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    pass


class KeysExchanged(_Event, frozen=True, tag="escrow_keys"):
    """A party's per-order xpub and payout address (the seller adds its timeout key)."""

    party: Role
    xpub: Extkey
    payout_address: AddressStr
    timeout_xpub: Extkey | None = None


class DescriptorAcked(_Event, frozen=True, tag="descriptor_ack"):
    """A party recomputed the escrow address from the three xpubs and confirms it."""

    party: Role
    address: AddressStr


class Funded(_Event, frozen=True, tag="funded"):
    txid: Txid
    vout: Annotated[int, Meta(ge=0, le=100_000)]
    amount: Sats
    confirmations: Annotated[int, Meta(ge=0)]


class Shipped(_Event, frozen=True, tag="shipped"):
    tracking: Annotated[str, Meta(max_length=200)] = ""


class ReleaseSigned(_Event, frozen=True, tag="release_signed"):
    """`party` signed the release (everything to the seller); `psbt` carries its signature."""

    party: Role
    psbt: Psbt64 = ""


class RefundSigned(_Event, frozen=True, tag="refund_signed"):
    party: Role
    psbt: Psbt64 = ""


class DisputeOpened(_Event, frozen=True, tag="dispute_opened"):
    by: Role
    reason: Text


class Evidence(_Event, frozen=True, tag="evidence"):
    by: Role
    text: Text = ""
    attachments: Annotated[tuple[bodies.Key32, ...], Meta(max_length=16)] = ()  # blob sha256s


class Ruling(_Event, frozen=True, tag="ruling"):
    """The arbiter's split, signed by the arbiter (`psbt`); the fee is the arbiter's own cut."""

    buyer_sats: Sats
    seller_sats: Sats
    fee_sats: Sats
    note: Text = ""
    psbt: Psbt64 = ""


class RulingAccepted(_Event, frozen=True, tag="ruling_accepted"):
    party: Role
    psbt: Psbt64 = ""


class TimeoutClaimed(_Event, frozen=True, tag="timeout_claimed"):
    """The seller spends through its timeout branch (seller key 2 alone, after N blocks)."""

    psbt: Psbt64 = ""


class Broadcast(_Event, frozen=True, tag="broadcast"):
    txid: Txid


class Cancel(_Event, frozen=True, tag="cancel"):
    by: Role
    reason: Text = ""


class Tick(_Event, frozen=True, tag="tick"):
    """The local clock (unix seconds). Never accepted from a peer."""

    now: Annotated[int, Meta(ge=0)]


class FundingLost(_Event, frozen=True, tag="funding_lost"):
    """Our chain watcher: the funding we counted is no longer as deep as agreed (a reorg took
    its block, or a double spend replaced it). Local like the clock: never from a peer."""

    txid: Txid
    reason: Text
    at: Annotated[int, Meta(ge=0)]  # local clock: a second loss of the same tx is news too


EscrowEvent = (
    KeysExchanged | DescriptorAcked | Funded | Shipped | ReleaseSigned | RefundSigned
    | DisputeOpened | Evidence | Ruling | RulingAccepted | TimeoutClaimed | Broadcast | Cancel
    | Tick | FundingLost
)


# -- escrow states and the effects the machine asks the shell for ---------------------------


class State(StrEnum):
    PROPOSED = "proposed"
    AGREED = "agreed"
    FUNDED = "funded"
    SHIPPED = "shipped"
    RELEASED = "released"
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Effect(msgspec.Struct, frozen=True, tag_field="type"):
    pass


class StateChanged(Effect, frozen=True, tag="state_changed"):
    old: State
    new: State


class DeriveEscrowAddress(Effect, frozen=True, tag="derive_address"):
    """All keys are in: compute the address (bitcoin.EscrowPolicy) and send DescriptorAcked."""

    buyer_xpub: str
    seller_xpub: str
    arbiter_xpub: str
    seller_timeout_xpub: str | None
    timeout_blocks: int | None


class FundEscrow(Effect, frozen=True, tag="fund_escrow"):
    """Buyer only: pay exactly `amount_sats` to `address` before `deadline`."""

    address: str
    amount_sats: int
    deadline: int


class WatchFunding(Effect, frozen=True, tag="watch_funding"):
    address: str
    amount_sats: int
    min_confirmations: int


class NeedSignature(Effect, frozen=True, tag="need_signature"):
    """A peer signed `payout` (its PSBT attached); check it, then co-sign if the user agrees."""

    payout: Payout
    psbt: str


class FinalizeAndBroadcast(Effect, frozen=True, tag="finalize_and_broadcast"):
    """Enough signatures: combine the PSBTs, finalize, broadcast, then send Broadcast(txid)."""

    payout: Payout
    psbts: tuple[str, ...]


class WatchSettlement(Effect, frozen=True, tag="watch_settlement"):
    txid: str


class RulingNeeded(Effect, frozen=True, tag="ruling_needed"):
    """Arbiter only: a dispute was opened."""

    opened_by: Role
    reason: str


class FundingDoubted(Effect, frozen=True, tag="funding_doubted"):
    """The funding we counted is gone or not deep enough any more: tell the user (a seller
    must not ship); before shipping the escrow went back to AGREED to wait for it again."""

    funding: Funding
    reason: str


class DeadlinePassed(Effect, frozen=True, tag="deadline_passed"):
    name: str


class TimeoutClaimAvailable(Effect, frozen=True, tag="timeout_claim_available"):
    """Seller only: the dispute window closed; the timeout branch may be spent once the funding
    output is `blocks` deep (a chain rule the shell checks against the tip)."""

    payout: Payout
    blocks: int


class LateFunding(Effect, frozen=True, tag="late_funding"):
    """Money reached the escrow of a cancelled or expired trade: refund it (buyer + seller)."""

    funding: Funding


class PeerMisbehaved(Effect, frozen=True, tag="peer_misbehaved"):
    party: Role
    reason: str
