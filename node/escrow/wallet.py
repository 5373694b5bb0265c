"""The node wallet as the API uses it: the balance from the last sync (synced on a schedule by
the escrow driver's chain watcher, and on demand at most every `REFRESH_EVERY` seconds, so a
public Esplora is not asked on every `GET /wallet`), payments out and the history.

A payment is checked before it is signed: an address of the node's network that is no escrow
of ours, at least the dust limit, a fee rate from 1 sat/vB up to a cap relative to the chain's
fresh estimate, confirmed coins that cover amount and fee, and a fee no higher than the one the
user confirmed. A send with an idempotency key is stored (signed transaction included) before
it is broadcast, so repeating it never pays twice: it answers, and re-broadcasts, the first one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from escrow.bitcoin import PaymentPlan, WalletBalance, WalletTx, address_script
from escrow.chain import EsploraChain
from escrow.terms import DUST_SATS, ChainError, EscrowBitcoinError, EscrowError
from escrow.wallet import NodeWallet
from p2pmarket.storage import Database

log = logging.getLogger(__name__)

REFRESH_EVERY = 10.0  # seconds: the least time between two syncs a client asks for
SYNC_EVERY = 60.0  # seconds between background syncs (EscrowConfig.wallet_sync overrides)
EXPECT_FOR, EXPECT_EVERY = 600.0, 5.0  # after handing out an address: sync this often
FEE_CAP_FACTOR = 5  # a fee rate above 5x the chain's fastest estimate is refused ...
FEE_CAP_FLOOR = 20  # ... unless it is at most 20 sat/vB (estimates can be very low)

MIGRATIONS = [
    """
    CREATE TABLE wallet_sends (
        key TEXT PRIMARY KEY,          -- the client's idempotency key
        request BLOB NOT NULL,         -- sha256 of what it pays (address, amount)
        txid TEXT NOT NULL,
        raw_tx BLOB NOT NULL,          -- signed, stored before the first broadcast
        address TEXT NOT NULL,
        amount INTEGER NOT NULL,
        fee INTEGER NOT NULL,
        change INTEGER NOT NULL,
        fee_rate INTEGER NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX wallet_sends_txid ON wallet_sends (txid);
    """,
]


class WalletRequestError(EscrowError):
    """A payment the node refuses before signing anything."""


class PaymentInvalid(WalletRequestError):
    """A field of the request is wrong (`pointer`: which, as a JSON pointer)."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(message)
        self.pointer = pointer


class FeeChanged(WalletRequestError):
    """The payment would cost more than the fee the user confirmed."""


class KeyReused(WalletRequestError):
    """An idempotency key already named a different payment."""


class EscrowAddress(WalletRequestError):
    """The address is the escrow of one of our orders: those are funded by the escrow."""


@dataclass(frozen=True, slots=True)
class Preview:
    plan: PaymentPlan
    address: str
    fee_rate: int
    spendable: int
    sweep: bool
    sent: str | None = None  # the txid, when the key's payment was made already


@dataclass(frozen=True, slots=True)
class Sent:
    plan: PaymentPlan
    address: str
    fee_rate: int
    key: str | None
    replayed: bool


@dataclass(frozen=True, slots=True)
class HistoryItem:
    tx: WalletTx
    confirmations: int
    address: str | None  # where our own send paid


class WalletService:
    """Balance, payments and history of the node wallet (`wallet()` gives it once open)."""

    def __init__(self, wallet: Callable[[], NodeWallet], chain: EsploraChain, db: Database, *,
                 escrow_addresses: Callable[[], Iterable[tuple[str, str]]],
                 fee_rate: int | None = None, sync_every: float = SYNC_EVERY,
                 refresh_every: float = REFRESH_EVERY) -> None:
        self.wallet, self.chain, self.db = wallet, chain, db
        self.escrow_addresses = escrow_addresses  # (order id, escrow address) of our escrows
        self.fee_rate, self.sync_every, self.refresh_every = fee_rate, sync_every, refresh_every
        self.sync_error: str | None = None
        self._synced_mono = -math.inf  # monotonic time of the last sync attempt
        self._expecting_until = -math.inf  # an address was handed out: money may come soon
        self._sync_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        db.migrate("wallet", MIGRATIONS)

    # -- balance and sync ---------------------------------------------------------------------

    @property
    def synced_at(self) -> float | None:
        return self.wallet().synced_at

    async def balance(self, *, refresh: bool = False) -> WalletBalance:
        """The balance the wallet knows (no chain traffic), after a sync if `refresh` and the
        last one is older than `refresh_every`; a failed sync leaves `sync_error` set."""
        if refresh:
            await self.sync_if_older(self.refresh_every)
        return await self.wallet().balance()

    def expect_payment(self) -> None:
        """A receive address went out: for EXPECT_FOR seconds sync every EXPECT_EVERY, so
        the money shows soon after it arrives rather than at the next scheduled sync."""
        self._expecting_until = time.monotonic() + EXPECT_FOR

    async def tick(self) -> None:
        """The background sync, called by the driver's chain watcher on every round."""
        expecting = time.monotonic() < self._expecting_until
        await self.sync_if_older(min(self.sync_every, EXPECT_EVERY) if expecting
                                 else self.sync_every)

    async def sync_if_older(self, age: float) -> None:
        async with self._sync_lock:  # callers arriving during a sync share its result
            if time.monotonic() - self._synced_mono < age:
                return
            self._synced_mono = time.monotonic()
            try:
                await self.wallet().sync(self.chain)
                self.sync_error = None
            except ChainError as exc:
                self.sync_error = str(exc)
                log.warning("wallet sync failed: %s", exc)

    # -- payments -----------------------------------------------------------------------------

    async def preview(self, address: str, sats: int | None, fee_rate: int | None,
                      key: str | None = None) -> Preview:
        """What the payment would cost, from confirmed coins; `sats=None` sends everything.
        With the `key` of a send already made: that payment (`Preview.sent` is its txid)."""
        if key is not None:
            earlier = self._earlier(key, address, sats)
            if earlier is not None:
                _, sent = earlier
                return Preview(sent.plan, address, sent.fee_rate, 0, sats is None,
                               sent=sent.plan.txid)
        self._check_address(address)
        if sats is not None and sats < DUST_SATS:
            raise PaymentInvalid("/amount_sat", f"{sats} sat is below the dust limit "
                                                f"({DUST_SATS} sat)")
        rate = await self._fee_rate(fee_rate)
        wallet = self.wallet()
        plan = await wallet.preview(address, sats, rate)
        spendable = (await wallet.balance()).confirmed
        return Preview(plan, address, rate, spendable, sats is None)

    async def send(self, address: str, sats: int, max_fee: int, fee_rate: int | None,
                   key: str | None) -> Sent:
        """Pay `sats` to `address` unless the fee would exceed `max_fee`; see the module.
        A key names the payment (address and amount): repeated, it answers the first one."""
        async with self._send_lock:
            if key is not None:
                earlier = self._earlier(key, address, sats)
                if earlier is not None:
                    raw, sent = earlier
                    await self.wallet().rebroadcast(self.chain, raw)
                    return sent
            self._check_address(address)
            if sats < DUST_SATS:
                raise PaymentInvalid("/amount_sat", f"{sats} sat is below the dust limit")
            rate = await self._fee_rate(fee_rate)

            def check(plan: PaymentPlan) -> None:
                if plan.fee > max_fee:
                    raise FeeChanged(f"the payment would cost {plan.fee} sat in fees, more than "
                                     f"the {max_fee} sat confirmed; preview it again")
                if key is not None:
                    assert plan.raw_tx is not None
                    self.db.execute(
                        "INSERT INTO wallet_sends (key, request, txid, raw_tx, address, amount, "
                        "fee, change, fee_rate, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (key, _request(address, sats), plan.txid, plan.raw_tx, address,
                         plan.amount, plan.fee, plan.change, rate, time.time()))

            plan = await self.wallet().send(self.chain, address, sats, rate, check)
            return Sent(plan, address, rate, key, replayed=False)

    def _earlier(self, key: str, address: str, sats: int | None) -> tuple[bytes, Sent] | None:
        """The send made with `key` (its raw tx and answer), if it paid `sats` (None: any
        amount, a sweep's retry) to `address`; `KeyReused` if it paid something else."""
        row = self.db.query_one("SELECT * FROM wallet_sends WHERE key=?", (key,))
        if row is None:
            return None
        same = (row["address"] == address if sats is None
                else row["request"] == _request(address, sats))
        if not same:
            raise KeyReused(f"idempotency key {key!r} already named a different payment")
        plan = PaymentPlan(row["txid"], row["amount"], row["fee"], row["change"], 0, None)
        return row["raw_tx"], Sent(plan, row["address"], row["fee_rate"], key, replayed=True)

    def _check_address(self, address: str) -> None:
        network = self.wallet().network
        try:
            address_script(address, network)
        except EscrowBitcoinError:
            raise PaymentInvalid("/address", f"not a valid {network} address") from None
        for order_id, escrow in self.escrow_addresses():
            if escrow == address:
                raise EscrowAddress(f"{address} is the escrow of order {order_id}; the escrow "
                                    "steps fund it (POST /orders/{id}/escrow/fund)")

    async def _fee_rate(self, asked: int | None) -> int:
        """The rate to pay: the one asked (checked against the chain's fresh estimates), else
        the node's configured rate, else the chain's estimate for about 6 blocks."""
        if asked is None:
            return self.fee_rate if self.fee_rate is not None else await self.chain.fee_rate()
        if asked < 1:
            raise PaymentInvalid("/fee_rate_sat_vb", "the fee rate must be at least 1 sat/vB")
        estimates = await self.chain.fee_estimates()
        fastest = max(estimates.values(), default=1.0)
        cap = max(FEE_CAP_FLOOR, math.ceil(FEE_CAP_FACTOR * fastest))
        if asked > cap:
            raise PaymentInvalid("/fee_rate_sat_vb", f"{asked} sat/vB is far above the chain's "
                                 f"estimate ({fastest:g} sat/vB for the next block); at most "
                                 f"{cap} sat/vB")
        return asked

    # -- history ------------------------------------------------------------------------------

    async def history(self) -> list[HistoryItem]:
        txs, tip = await self.wallet().history()
        sent_to = {r["txid"]: r["address"]
                   for r in self.db.query("SELECT txid, address FROM wallet_sends")}
        return [HistoryItem(t, 0 if t.height is None else max(0, tip - t.height + 1),
                            sent_to.get(t.txid)) for t in txs]


def _request(address: str, sats: int) -> bytes:
    return hashlib.sha256(f"{address}|{sats}".encode()).digest()
