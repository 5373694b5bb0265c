"""The escrow driver: per order an `EscrowMachine` fed by signed steps on the order's conversation,
an `EscrowSigner` for its PSBTs, the node's `NodeWallet` to fund it and an Esplora watcher for
funding and settlement; everything in SQLite (component "escrow"), so a restarted node resumes.

The driver owns its parts and wires them: `EscrowSteps` (every change to a machine, stored and
sent), the `Reconciler` (what each escrow's state calls for, and the chain watcher's look at it)
and `EscrowIntake` (peers' messages); they share one `EscrowBook`. Three loops run in the node's
TaskGroup: the worker (inbox, then each changed escrow), the chain watcher and the clock. They
take turns on the book's lock, so machines are only ever touched by one of them at a time;
blocking bdk work runs in threads. The public methods below are what the HTTP API calls: the
buyer `start`s an escrow on an order, and then `release`, `refund`, `dispute`, `add_evidence`,
`accept_ruling` and `cancel` act for this node's party (`rule` for an arbiter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec

from dht.server import DhtNode
from escrow.bitcoin import WalletBalance
from escrow.chain import EsploraChain
from escrow.machine import TRANSITIONS
from escrow.terms import (
    Cancel,
    DisputeOpened,
    EscrowError,
    EscrowEvent,
    Evidence,
    LocalEscrowError,
    Network,
    NotAllowedNow,
    PayoutKind,
    Role,
    Ruling,
    State,
    Terms,
)
from escrow.wallet import NodeWallet
from node.escrow.adverts import find_advert
from node.escrow.book import (
    Escrow,
    EscrowBook,
    EscrowNotice,
    EscrowUpdate,
    EscrowView,
    Flag,
    view,
)
from node.escrow.intake import PARK_FOR, EscrowIntake
from node.escrow.reconcile import SIGNED_EVENT, Reconciler
from node.escrow.steps import EscrowSteps
from node.escrow.store import EscrowStore
from node.escrow.wallet import SYNC_EVERY, WalletService
from node.p2p.messenger import Messenger
from node.trade.errors import TradeError
from node.trade.orders import Order, OrderState
from node.trade.orders import Role as OrderRole
from node.trade.service import Trade
from node.trade.store import OrderView
from p2pmarket.identity import Identity
from p2pmarket.storage import Database, StorageError
from p2pmarket.wire.bodies import EscrowTerms, Listing
from p2pmarket.wire.escrow import EscrowOpen, EscrowWireError, Proposal, sign_proposal
from p2pmarket.wire.market import PaymentMethod
from p2pmarket.wire.messages import MessageError
from p2pmarket.wire.records import Record

log = logging.getLogger(__name__)

B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER
_RECOVERABLE = (EscrowError, TradeError, StorageError, MessageError, EscrowWireError)
__all__ = ["EscrowConfig", "EscrowDriver", "EscrowNode", "TradeDesk"]


@dataclass(frozen=True, slots=True)
class EscrowConfig:
    """How a node reaches its chain. `poll`: seconds between chain checks; `tick`: seconds
    between clock ticks (deadlines, retries); `wallet_sync`: seconds between background wallet
    syncs; `clock`: unix time (tests move it)."""

    esplora_url: str
    mnemonic: str = field(repr=False)
    network: Network = "regtest"
    allow_mainnet: bool = False
    poll: float = 5.0
    tick: float = 30.0
    fee_rate: int | None = None  # sat/vB; None asks the chain's fee estimates
    wallet_sync: float = SYNC_EVERY
    clock: Callable[[], float] = time.time


class EscrowNode(Protocol):
    """What the driver needs of a node (`node.app.Node` is one)."""

    @property
    def identity(self) -> Identity: ...
    @property
    def db(self) -> Database: ...
    @property
    def messenger(self) -> Messenger: ...
    @property
    def trade(self) -> Trade: ...
    @property
    def dht(self) -> DhtNode: ...


class TradeDesk:
    """The trade service as the escrow's parts see it (`node.escrow.book.OrderDesk`)."""

    def __init__(self, trade: Trade) -> None:
        self.trade = trade

    def load_order(self, order_id: str) -> Order:
        return self.trade.store.load_order(order_id)

    def order(self, order_id: str) -> OrderView:
        return self.trade.order(order_id)

    def listing(self, seller: bytes, listing_id: str) -> Record[Listing] | None:
        return self.trade.store.listing(seller, listing_id)

    def offered_listing(self, negotiation_id: str) -> Record[Listing] | None:
        return self.trade.store.offered_listing(negotiation_id)

    def own_listing(self, listing_id: str) -> Record[Listing] | None:
        own = self.trade.own_listing
        return own(listing_id) if own is not None else None

    async def confirm_payment(self, order_id: str, method: PaymentMethod,
                              reference: str) -> OrderView:
        return await self.trade.confirm_payment(order_id, method, reference)

    async def settle(self, order_id: str, reference: str) -> OrderView:
        return await self.trade.settle(order_id, reference)


class EscrowDriver:
    """Create with the node, `await open()` before `run()`; see the module docstring.
    `accepts_arbitration` says whether this node serves as an arbiter (has a live advert)."""

    def __init__(self, node: EscrowNode, config: EscrowConfig, *, datadir: Path | None = None,
                 accepts_arbitration: Callable[[], bool] = lambda: False) -> None:
        self.identity, self.config, self.datadir = node.identity, config, datadir
        self.dht = node.dht
        self.store = EscrowStore(node.db)
        self.chain = EsploraChain(config.esplora_url, config.network,
                                  allow_mainnet=config.allow_mainnet)
        self.book = EscrowBook()
        self.orders = TradeDesk(node.trade)
        self._send = node.messenger.send
        self._wallet: NodeWallet | None = None
        self.steps = EscrowSteps(node.identity, self.store, self.book, self._send, self.now)
        self.reconciler = Reconciler(self.book, self.steps, self.store, self.orders, self.chain,
                                     lambda: self.wallet, self._send, mnemonic=config.mnemonic,
                                     fee_rate=config.fee_rate)
        self.intake = EscrowIntake(node.identity.public, config.network, self.store, self.book,
                                   self.steps, self.orders,
                                   accepts_arbitration=accepts_arbitration)
        self.funds = WalletService(lambda: self.wallet, self.chain, node.db,
                                   escrow_addresses=self._escrow_addresses,
                                   fee_rate=config.fee_rate, sync_every=config.wallet_sync)
        node.messenger.listeners.append(self.intake.on_message)
        node.trade.listeners.append(self._on_trade_event)
        node.trade.ship_checks.append(self._ship_check)
        self.book.listeners.append(self._on_escrow_event)

    @property
    def escrows(self) -> dict[str, Escrow]:
        return self.book.escrows

    @property
    def listeners(self) -> list[Callable[[EscrowUpdate], None]]:
        return self.book.listeners

    @property
    def wallet(self) -> NodeWallet:
        if self._wallet is None:
            raise LocalEscrowError("the escrow driver is not open yet")
        return self._wallet

    def now(self) -> int:
        return int(self.config.clock())

    # -- lifetime -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the wallet and rebuild every escrow from the database (no network traffic)."""
        self._wallet = await NodeWallet.open(self.config.mnemonic, self.config.network,
                                             self.datadir)
        for row in self.store.escrows():
            try:
                self.book.escrows[row.order_id] = self.steps.restore(row)
            except (*_RECOVERABLE, msgspec.MsgspecError, ValueError) as exc:
                log.error("escrow %s cannot be restored: %s", row.order_id, exc)
        self.book.dirty.update(self.book.escrows)
        self.book.wake.set()
        log.info("escrow driver open: %d escrows, chain %s (%s)", len(self.book.escrows),
                 self.chain.url, self.chain.network)

    async def run(self) -> None:
        """The worker, the chain watcher and the clock, until cancelled; then it waits for
        wallet calls still running in threads, so none outlives the node."""
        if self._wallet is None:
            await self.open()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._work_loop())
                tg.create_task(self._watch_loop())
                tg.create_task(self._tick_loop())
        finally:
            if self._wallet is not None:
                await self._wallet.close()

    def _on_escrow_event(self, event: object) -> None:
        # a settlement on its way may pay our wallet: look for it soon, not at the next
        # scheduled sync
        if isinstance(event, EscrowNotice) and event.kind in ("broadcast", "settled"):
            self.funds.expect_payment()

    def _ship_check(self, order_id: str) -> str | None:
        """A seller does not ship an escrowed order whose funding is not counted (any more):
        while the escrow waits for funding, e.g. after a reorg took it back to AGREED."""
        esc = self.book.escrows.get(order_id)
        if esc is None or esc.role is not Role.SELLER:
            return None
        if esc.state not in (State.PROPOSED, State.AGREED):
            return None  # funded (or shipped, settled), or the escrow was given up
        return (f"the escrow is {esc.state} and holds no counted funding (if it was funded, "
                "a reorg or a double spend took it away); ship once it is funded again")

    def _on_trade_event(self, event: object) -> None:
        order = getattr(event, "order", None)
        if isinstance(order, str) and order in self.book.escrows:
            self.book.mark(self.book.escrows[order])

    async def _work_loop(self) -> None:
        book = self.book
        while True:
            await book.wake.wait()
            book.wake.clear()
            async with book.lock:
                await self._guarded(None, self.intake.process_inbox())
                for _ in range(16):  # until quiet: one action often enables the next
                    if not book.dirty:
                        break
                    for order_id in book.take_dirty():
                        esc = book.escrows.get(order_id)
                        if esc is not None:
                            await self._guarded(esc, self.reconciler.reconcile(esc))

    async def _guarded(self, esc: Escrow | None, step: Awaitable[None]) -> None:
        try:
            await step
        except _RECOVERABLE as exc:  # retried on the next change or tick
            log.warning("escrow %s: %s", esc.order_id if esc else "inbox", exc)
        except Exception:  # a bug in one escrow must not stop the others
            log.exception("escrow %s failed", esc.order_id if esc else "inbox")

    async def _watch_loop(self) -> None:
        while True:
            self.book.poke.clear()
            for esc in list(self.book.escrows.values()):
                await self._guarded(esc, self.reconciler.watch(esc))
            await self._guarded(None, self.funds.tick())  # the wallet's scheduled sync
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll):
                    await self.book.poke.wait()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick)
            async with self.book.lock:
                for esc in self.book.escrows.values():
                    await self._guarded(esc, self._tick_one(esc))
                self.store.expire_parked(time.time() - PARK_FOR)

    async def _tick_one(self, esc: Escrow) -> None:
        self.steps.tick(esc)
        await self.steps.retry_pending(esc)
        if not esc.final or Flag.CONFIRMED not in esc.flags:
            self.book.mark(esc)

    # -- the buyer starts -----------------------------------------------------------------------

    async def start(self, order_id: str, arbiter: bytes | None = None,
                    **terms: object) -> EscrowView:
        """Buyer: propose the escrow of an order (priced in BTC) with `arbiter` (by default the
        listing's first); `terms` may set Terms fields such as `min_confirmations`."""
        order = self.orders.load_order(order_id)
        if order.our_role is not OrderRole.BUYER:
            raise NotAllowedNow("the buyer proposes the escrow")
        if order.state in (OrderState.CANCELLED, OrderState.COMPLETED):
            raise NotAllowedNow(f"the order is {order.state}")
        price = order.terms.price
        if price.currency != "BTC":
            raise LocalEscrowError("only an order priced in BTC can use the escrow")
        listing = self.orders.listing(order.seller, order.terms.listing.id)
        names = listing.body.arbiters if listing is not None else ()
        chosen = arbiter or (names[0] if names else None)
        if chosen is None:
            raise LocalEscrowError("choose an arbiter: the listing names none")
        if names and chosen not in names:
            raise LocalEscrowError("the listing does not accept this arbiter")
        advert = await find_advert(self.dht, chosen)
        if advert is None:
            raise LocalEscrowError("no advert of this arbiter in the DHT directory")
        deadlines = listing.body.escrow if listing is not None else EscrowTerms()
        try:
            agreed = Terms.for_listing(order_id, price.amount, deadlines, advert.body,
                                       network=self.config.network, **terms)
        except (msgspec.ValidationError, ValueError) as exc:
            raise LocalEscrowError(f"bad escrow terms: {exc}") from exc
        proposal = Proposal(order=order_id, buyer=self.identity.public, seller=order.seller,
                            arbiter=chosen, opened=order.log.entries[0].raw, advert=advert.raw,
                            terms=msgspec.msgpack.encode(agreed), at_ms=int(time.time() * 1000))
        raw = sign_proposal(self.identity, proposal)
        async with self.book.lock:
            if order_id in self.book.escrows:
                raise NotAllowedNow("this order already has an escrow")
            with self.store.db.transaction():
                esc = self.steps.create(proposal, raw, agreed, B)
                for peer in esc.others():
                    self._send(peer, EscrowOpen(order=order_id, proposal=raw))
        return view(esc)

    # -- a party acts -------------------------------------------------------------------------

    async def release(self, order_id: str) -> EscrowView:
        """Sign the release (everything to the seller), or co-sign the one the peer signed."""
        return await self._payout(order_id, "release")

    async def refund(self, order_id: str) -> EscrowView:
        """Sign the refund (everything back to the buyer), or co-sign the peer's."""
        return await self._payout(order_id, "refund")

    async def accept_ruling(self, order_id: str) -> EscrowView:
        """Co-sign the arbiter's ruling (the favoured party's node does it by itself)."""
        return await self._payout(order_id, "ruling")

    async def _payout(self, order_id: str, kind: PayoutKind) -> EscrowView:
        async with self.book.lock:
            esc = self._party(order_id)
            self.steps.tick(esc)
            if kind == "ruling" and esc.machine.ruling is None:
                raise NotAllowedNow("there is no ruling to accept")
            if esc.signed(kind):
                raise NotAllowedNow(f"this node already signed the {kind}")
            if (esc.state, SIGNED_EVENT[kind]) not in TRANSITIONS:
                raise NotAllowedNow(f"no {kind} in an escrow that is {esc.state}")
            await self.reconciler.sign_payout(esc, kind)
            return view(esc)

    async def dispute(self, order_id: str, reason: str) -> EscrowView:
        """Ask the arbiter to rule; our node sends it our copy of the order log."""
        return await self._simple(order_id, lambda esc: DisputeOpened(esc.role, reason))

    async def add_evidence(self, order_id: str, text: str,
                           attachments: tuple[bytes, ...] = ()) -> EscrowView:
        """A statement for the arbiter (attachments: sha256s of blobs this node serves)."""
        return await self._simple(order_id, lambda esc: Evidence(esc.role, text, attachments))

    async def cancel(self, order_id: str, reason: str = "") -> EscrowView:
        """Stop an escrow before it is funded (any party)."""
        async with self.book.lock:
            esc = self.book.get(order_id)
            self.steps.act(esc, Cancel(esc.role, reason))
            return view(esc)

    async def _simple(self, order_id: str, make: Callable[[Escrow], EscrowEvent]) -> EscrowView:
        async with self.book.lock:
            esc = self._party(order_id)
            self.steps.act(esc, make(esc))
            return view(esc)

    def _party(self, order_id: str) -> Escrow:
        esc = self.book.get(order_id)
        if esc.role is A:
            raise NotAllowedNow("only the buyer or the seller can do that")
        return esc

    # -- the arbiter rules --------------------------------------------------------------------

    async def rule(self, order_id: str, buyer_sats: int, seller_sats: int, note: str = "",
                   fee_sats: int | None = None) -> EscrowView:
        """Arbiter: split the escrow; our fee (the agreed maximum unless given) is an output,
        the miner fee is what is left. Allowed once both parties were heard, or at the ruling
        deadline when one never answered."""
        async with self.book.lock:
            esc = self.book.get(order_id)
            m, signer, funding = esc.machine, esc.signer, esc.funding
            if esc.role is not A or m.state is not State.DISPUTED:
                raise NotAllowedNow("only the arbiter of a disputed escrow rules")
            if signer is None or funding is None:
                raise NotAllowedNow("the escrow's funding is not known here yet")
            self.steps.tick(esc)
            fee = esc.terms.arbiter_fee_sats if fee_sats is None else fee_sats
            payout = m.payout("ruling", Ruling(buyer_sats, seller_sats, fee, note))
            psbt = await asyncio.to_thread(signer.build, funding, payout)
            signed = await asyncio.to_thread(signer.sign, psbt, funding, payout)
            self.steps.act(esc, Ruling(buyer_sats, seller_sats, fee, note, signed))
            return view(esc)

    async def rule_for(self, order_id: str, winner: Role, note: str = "") -> EscrowView:
        """Arbiter: everything to `winner`, less our agreed fee and the miner fee."""
        esc = self.book.get(order_id)
        fee, miner = esc.terms.arbiter_fee_sats, await self.reconciler.fee(esc)
        share = esc.terms.amount_sats - fee - miner
        return await self.rule(order_id, share if winner is B else 0,
                               share if winner is S else 0, note, fee)

    # -- queries ------------------------------------------------------------------------------

    def view(self, order_id: str) -> EscrowView:
        return view(self.book.get(order_id))

    def views(self) -> list[EscrowView]:
        return [view(e) for e in self.book.escrows.values()]

    async def balance(self, *, sync: bool = True) -> WalletBalance:
        """The node wallet's balance (after catching up with the chain unless `sync=False`)."""
        if sync:
            return await self.wallet.sync(self.chain)
        return await self.wallet.balance()

    async def receive_address(self) -> str:
        address = await self.wallet.receive_address()
        self.funds.expect_payment()
        return address

    def _escrow_addresses(self) -> list[tuple[str, str]]:
        return [(e.order_id, e.machine.address) for e in self.book.escrows.values()
                if e.machine.address is not None]
