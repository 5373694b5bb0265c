"""The escrow driver: per order an `EscrowMachine` fed by signed steps on the order's conversation,
an `EscrowSigner` for its PSBTs, the node's `NodeWallet` to fund it and an Esplora watcher for
funding and settlement; everything in SQLite (component "escrow"), so a restarted node resumes.

Three loops run in the node's TaskGroup: the worker (inbox, then each changed escrow), the chain
watcher and the clock. They take turns on one lock, so machines are only ever touched by one of
them at a time; blocking bdk work runs in threads. The public methods below are what the HTTP
API calls: the buyer `start`s an escrow on an order, and then `release`, `refund`, `dispute`,
`add_evidence`, `accept_ruling` and `cancel` act for this node's party (`rule` for an arbiter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

from escrow.bitcoin import WalletBalance
from escrow.machine import TRANSITIONS
from escrow.terms import (
    Cancel,
    DisputeOpened,
    EscrowError,
    Evidence,
    LocalEscrowError,
    PayoutKind,
    Role,
    Ruling,
    State,
    Terms,
)
from escrow.wallet import NodeWallet
from node.escrow.arbiters import find_advert
from node.escrow.book import Escrow, EscrowView, Flag, replay, view
from node.escrow.intake import PARK_FOR, EscrowIntake
from node.escrow.reconcile import SIGNED_EVENT
from node.escrow.steps import EscrowConfig, EscrowNode
from node.escrow.store import EscrowRow
from node.trade.errors import TradeError
from node.trade.orders import OrderState
from node.trade.orders import Role as OrderRole
from p2pmarket.storage import StorageError
from p2pmarket.wire.bodies import EscrowTerms
from p2pmarket.wire.escrow import (
    EscrowOpen,
    EscrowWireError,
    Proposal,
    digest,
    open_proposal,
    sign_proposal,
)
from p2pmarket.wire.messages import MessageError

log = logging.getLogger(__name__)

B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER
_RECOVERABLE = (EscrowError, TradeError, StorageError, MessageError, EscrowWireError)
__all__ = ["EscrowConfig", "EscrowDriver", "EscrowNode"]


class EscrowDriver(EscrowIntake):
    """Create with the node, `await open()` before `run()`; see the module docstring."""

    def __init__(self, node: EscrowNode, config: EscrowConfig, **kwargs: Any) -> None:
        super().__init__(node, config, **kwargs)
        self.dht = node.dht
        node.messenger.listeners.append(self._on_messenger_event)
        node.trade.listeners.append(self._on_trade_event)

    # -- lifetime -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the wallet and rebuild every escrow from the database (no network traffic)."""
        self._wallet = await NodeWallet.open(self.config.mnemonic, self.config.network,
                                             self.datadir)
        for row in self.store.escrows():
            try:
                self.escrows[row.order_id] = self._restore(row)
            except (*_RECOVERABLE, msgspec.MsgspecError, ValueError) as exc:
                log.error("escrow %s cannot be restored: %s", row.order_id, exc)
        self._dirty.update(self.escrows)
        self._wake.set()
        log.info("escrow driver open: %d escrows, chain %s (%s)", len(self.escrows),
                 self.chain.url, self.chain.network)

    def _restore(self, row: EscrowRow) -> Escrow:
        proposal = open_proposal(row.proposal)
        terms = msgspec.msgpack.decode(proposal.terms, type=Terms)
        role = Role(row.role)
        machine = replay(terms, role, row.created, self.store.steps(row.order_id, "applied"))
        esc = Escrow(proposal, row.proposal, digest(row.proposal), terms, role, machine,
                     row.created, funding_raw=row.funding_tx, settlement_raw=row.settlement_tx,
                     flags=set(row.flags))
        esc.refusals = [f"{r.author}: {r.reason}"
                        for r in self.store.steps(row.order_id, "rejected")]
        return esc

    async def run(self) -> None:
        """The worker, the chain watcher and the clock, until cancelled."""
        if self._wallet is None:
            await self.open()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._work_loop())
            tg.create_task(self._watch_loop())
            tg.create_task(self._tick_loop())

    def _on_trade_event(self, event: object) -> None:
        order = getattr(event, "order", None)
        if isinstance(order, str) and order in self.escrows:
            self._mark(self.escrows[order])

    async def _work_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            async with self._lock:
                await self._work()

    async def _work(self) -> None:
        await self._guarded(None, self._process_inbox())
        for _ in range(16):  # until quiet: one action often enables the next
            if not self._dirty:
                break
            dirty, self._dirty = sorted(self._dirty), set()
            for order_id in dirty:
                esc = self.escrows.get(order_id)
                if esc is not None:
                    await self._guarded(esc, self._reconcile(esc))

    async def _guarded(self, esc: Escrow | None, step: Any) -> None:
        try:
            await step
        except _RECOVERABLE as exc:  # retried on the next change or tick
            log.warning("escrow %s: %s", esc.order_id if esc else "inbox", exc)
        except Exception:  # a bug in one escrow must not stop the others
            log.exception("escrow %s failed", esc.order_id if esc else "inbox")

    async def _watch_loop(self) -> None:
        while True:
            self._poke.clear()
            for esc in list(self.escrows.values()):
                await self._guarded(esc, self._watch(esc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll):
                    await self._poke.wait()

    async def _watch(self, esc: Escrow) -> None:
        m = esc.machine
        late = m.state in (State.CANCELLED, State.EXPIRED) and m.funding is None
        if m.address is not None and (m.state is State.AGREED or (late and len(m.acks) == 3)):
            found = await self.chain.find_funding(m.address, esc.terms.amount_sats)
            if found is not None:
                async with self._lock:
                    await self._funding_seen(esc, found)
        tx_id = m.settlement_txid
        if tx_id is not None and Flag.CONFIRMED not in esc.flags:
            status = await self.chain.tx_status(tx_id)
            async with self._lock:
                await self._settlement_seen(esc, status.confirmations)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick)
            async with self._lock:
                for esc in self.escrows.values():
                    await self._guarded(esc, self._tick_one(esc))
                self.store.expire_parked(time.time() - PARK_FOR)

    async def _tick_one(self, esc: Escrow) -> None:
        self._tick(esc)
        await self._retry_pending(esc)
        if not esc.final or Flag.CONFIRMED not in esc.flags:
            self._mark(esc)

    # -- the buyer starts -----------------------------------------------------------------------

    async def start(self, order_id: str, arbiter: bytes | None = None,
                    **terms: object) -> EscrowView:
        """Buyer: propose the escrow of an order (priced in BTC) with `arbiter` (by default the
        listing's first); `terms` may set Terms fields such as `min_confirmations`."""
        trade = self.node.trade
        order = trade.store.load_order(order_id)
        if order.our_role is not OrderRole.BUYER:
            raise LocalEscrowError("the buyer proposes the escrow")
        if order.state in (OrderState.CANCELLED, OrderState.COMPLETED):
            raise LocalEscrowError(f"the order is {order.state}")
        price = order.terms.price
        if price.currency != "BTC":
            raise LocalEscrowError("only an order priced in BTC can use the escrow")
        listing = trade.store.listing(order.seller, order.terms.listing.id)
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
        async with self._lock:
            if order_id in self.escrows:
                raise LocalEscrowError("this order already has an escrow")
            with self.store.db.transaction():
                esc = self._new_escrow(proposal, raw, agreed, B)
                for peer in esc.others():
                    self.node.messenger.send(peer, EscrowOpen(order=order_id, proposal=raw))
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
        async with self._lock:
            esc = self._party(order_id)
            self._tick(esc)
            if kind == "ruling" and esc.machine.ruling is None:
                raise LocalEscrowError("there is no ruling to accept")
            if esc.signed(kind):
                raise LocalEscrowError(f"this node already signed the {kind}")
            if (esc.state, SIGNED_EVENT[kind]) not in TRANSITIONS:
                raise LocalEscrowError(f"no {kind} in an escrow that is {esc.state}")
            await self._sign_payout(esc, kind)
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
        async with self._lock:
            esc = self._escrow(order_id)
            self._act(esc, Cancel(esc.role, reason))
            return view(esc)

    async def _simple(self, order_id: str, make: Any) -> EscrowView:
        async with self._lock:
            esc = self._party(order_id)
            self._act(esc, make(esc))
            return view(esc)

    def _party(self, order_id: str) -> Escrow:
        esc = self._escrow(order_id)
        if esc.role is A:
            raise LocalEscrowError("only the buyer or the seller can do that")
        return esc

    # -- the arbiter rules --------------------------------------------------------------------

    async def rule(self, order_id: str, buyer_sats: int, seller_sats: int, note: str = "",
                   fee_sats: int | None = None) -> EscrowView:
        """Arbiter: split the escrow; our fee (the agreed maximum unless given) is an output,
        the miner fee is what is left. Allowed once both parties were heard, or at the ruling
        deadline when one never answered."""
        async with self._lock:
            esc = self._escrow(order_id)
            m, signer, funding = esc.machine, esc.signer, esc.funding
            if esc.role is not A or m.state is not State.DISPUTED:
                raise LocalEscrowError("only the arbiter of a disputed escrow rules")
            if signer is None or funding is None:
                raise LocalEscrowError("the escrow's funding is not known here yet")
            self._tick(esc)
            fee = esc.terms.arbiter_fee_sats if fee_sats is None else fee_sats
            payout = m.payout("ruling", Ruling(buyer_sats, seller_sats, fee, note))
            psbt = await asyncio.to_thread(signer.build, funding, payout)
            signed = await asyncio.to_thread(signer.sign, psbt, funding, payout)
            self._act(esc, Ruling(buyer_sats, seller_sats, fee, note, signed))
            return view(esc)

    async def rule_for(self, order_id: str, winner: Role, note: str = "") -> EscrowView:
        """Arbiter: everything to `winner`, less our agreed fee and the miner fee."""
        esc = self._escrow(order_id)
        fee, miner = esc.terms.arbiter_fee_sats, await self._fee(esc)
        share = esc.terms.amount_sats - fee - miner
        return await self.rule(order_id, share if winner is B else 0,
                               share if winner is S else 0, note, fee)

    # -- queries ------------------------------------------------------------------------------

    def view(self, order_id: str) -> EscrowView:
        return view(self._escrow(order_id))

    def views(self) -> list[EscrowView]:
        return [view(e) for e in self.escrows.values()]

    async def balance(self, *, sync: bool = True) -> WalletBalance:
        """The node wallet's balance (after catching up with the chain unless `sync=False`)."""
        if sync:
            return await self.wallet.sync(self.chain)
        return await self.wallet.balance()

    async def receive_address(self) -> str:
        return await self.wallet.receive_address()
