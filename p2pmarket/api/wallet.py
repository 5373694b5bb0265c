"""Wire schemas of the node wallet's API: balance with its sync time, send (previewed first, so
the user confirms amount, fee and destination) and history. Amounts are sats.

A send names the fee it was shown (`max_fee_sat`): the node refuses to spend more than that.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from p2pmarket.api.schemas import Page, Wire

DUST_SAT = 546  # below this an output is dust: nodes would not relay the payment
MAX_SAT = 2_100_000_000_000_000
Address = Annotated[str, Meta(min_length=14, max_length=100, description=(
    "A Bitcoin address of the node's network (bcrt1..., tb1..., bc1...)."))]
Sats = Annotated[int, Meta(ge=DUST_SAT, le=MAX_SAT, description=(
    f"Sats to the recipient, at least {DUST_SAT} (the dust limit)."))]
FeeRate = Annotated[int, Meta(ge=1, le=10_000, description=(
    "Miner fee rate in sat/vB; default: the chain's estimate for about 6 blocks. The node "
    "refuses a rate far above the chain's fresh estimate."))]
IdempotencyKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{8,100}$", description=(
    "Your name for this payment (8-100 of A-Z a-z 0-9 _ . : -): a send repeated with the "
    "same key answers the first one's transaction instead of paying again."))]


class WalletQuery(Wire, frozen=True):
    """`refresh=true` asks the node to sync with the chain first (at most every few seconds;
    otherwise the last synced balance comes back at once)."""

    refresh: bool = False


class SendPreviewFields(Wire, frozen=True):
    """A payment to preview: `amount_sat`, or `sweep=true` for everything confirmed (less the
    fee). Nothing is signed or reserved. With the `idempotency_key` of a send already made
    (a retry after a lost answer) the answer is that payment, with its `sent_txid`."""

    address: Address
    amount_sat: Sats | None = None
    sweep: bool = False
    fee_rate_sat_vb: FeeRate | None = None
    idempotency_key: IdempotencyKey | None = None


class SendFields(Wire, frozen=True):
    """Pay `amount_sat` to `address` from confirmed coins. `max_fee_sat` is the fee the user
    confirmed (the preview's `fee_sat`): a payment that would cost more is refused (409
    `fee-changed`). To send everything, send the sweep preview's `amount_sat`. The
    `idempotency_key` names the payment (address and amount): sent again, the node answers
    the first transaction (`replayed`) instead of paying twice; with another address or
    amount it is refused (409 `idempotency-key-reused`)."""

    address: Address
    amount_sat: Sats
    max_fee_sat: Annotated[int, Meta(ge=0, le=MAX_SAT)]
    fee_rate_sat_vb: FeeRate | None = None
    idempotency_key: IdempotencyKey | None = None


class SendPreviewOut(Wire, frozen=True):
    """What the payment would be: `total_sat` = `amount_sat` + `fee_sat` leaves the wallet,
    `change_sat` comes back to it."""

    address: str
    network: str
    amount_sat: int
    fee_sat: int
    fee_rate_sat_vb: int
    total_sat: int
    change_sat: int
    vsize: int
    spendable_sat: int  # the confirmed balance the payment is paid from
    sweep: bool = False
    sent_txid: str | None = None  # the key's payment was made already: this transaction


class SendOut(Wire, frozen=True):
    """The payment as broadcast. `replayed`: answered from an earlier send with the same
    `idempotency_key` (nothing new was paid)."""

    txid: str
    address: str
    amount_sat: int
    fee_sat: int
    total_sat: int
    change_sat: int
    fee_rate_sat_vb: int
    idempotency_key: str | None = None
    replayed: bool = False


class WalletTxOut(Wire, frozen=True):
    """One wallet transaction: `net_sat` is what it changed the balance by (a payment's fee
    included); `fee_sat` when known (always for ours); `height` null while unconfirmed;
    `time` the block's time, or when the node first saw it; `address`: where our own send
    (`POST /wallet/send`) paid, when it was one."""

    txid: str
    direction: Literal["in", "out"]
    net_sat: int
    sent_sat: int
    received_sat: int
    fee_sat: int | None
    confirmations: int
    height: int | None
    time: int | None
    address: str | None = None


WalletTxPage = Page[WalletTxOut]
