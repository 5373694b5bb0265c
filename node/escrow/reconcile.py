"""`Reconciler`: what the escrow driver does about each escrow, decided from its state (not from
one-off effects) after every change and on every tick, so a restarted node picks up where it
stopped: send our keys, acknowledge the address, fund it (buyer), tie it to the order (seller:
payment confirmed, shipment, settlement), release once the buyer confirms receipt, co-sign what
is in our interest, finalize and broadcast, answer a dispute with our order log. Plus the chain
watcher's look at each escrow (`watch`).

Who signs what: the buyer signs the release when it confirms receipt and the seller's node
co-signs it (it pays the seller); the seller signs a refund and the buyer's node co-signs it; the
arbiter signs its ruling and the party it favours (the larger share) co-signs at once, the other
only if its user accepts. Every node finalizes and broadcasts once a payout has its signatures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import NoReturn

from escrow.bitcoin import (
    EscrowSigner,
    derive_order_key,
    finalize,
    index_secret,
    order_index,
    txid,
)
from escrow.chain import EsploraChain, FundingOutput
from escrow.machine import TRANSITIONS
from escrow.terms import (
    Broadcast,
    Cancel,
    ChainError,
    DescriptorAcked,
    EscrowBitcoinError,
    Evidence,
    Funded,
    Funding,
    FundingLost,
    KeysExchanged,
    LocalEscrowError,
    PayoutKind,
    PsbtRejected,
    RefundSigned,
    ReleaseSigned,
    Role,
    RulingAccepted,
    Shipped,
    State,
)
from escrow.wallet import NodeWallet
from node.escrow.book import Escrow, EscrowBook, EscrowNotice, Flag, OrderDesk, Send, policy_of
from node.escrow.steps import EscrowSteps
from node.escrow.store import EscrowStore, KeyRepeated
from node.trade.errors import TradeError
from node.trade.orders import OrderState
from p2pmarket.wire.escrow import MAX_CASE_STEPS, EscrowCase
from p2pmarket.wire.market import listing_ref
from p2pmarket.wire.messages import MessageError

log = logging.getLogger(__name__)

B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER
O = OrderState  # noqa: E741
RETRY = 30.0  # seconds before a failed chain action is tried again
SETTLEMENT_VSIZE = 220  # vbytes of a 2-of-3 P2WSH spend to up to three outputs, rounded up
FUNDED_STATES = frozenset({State.FUNDED, State.SHIPPED, State.DISPUTED, State.RELEASED,
                           State.REFUNDED, State.RESOLVED})
WATCHED_FUNDING = frozenset({State.FUNDED, State.SHIPPED, State.DISPUTED})  # unsettled, funded
SIGNED_EVENT: dict[PayoutKind, type[ReleaseSigned | RefundSigned | RulingAccepted]] = {
    "release": ReleaseSigned, "refund": RefundSigned, "ruling": RulingAccepted}


class Reconciler:
    """Looks at one escrow at a time (`reconcile`, `watch`) and does what its state calls for.
    `wallet` gives the node wallet once the driver opened it; `fee_rate` (sat/vB) overrides the
    chain's estimate."""

    def __init__(self, book: EscrowBook, steps: EscrowSteps, store: EscrowStore,
                 orders: OrderDesk, chain: EsploraChain, wallet: Callable[[], NodeWallet],
                 send: Send, *, mnemonic: str, fee_rate: int | None) -> None:
        self.book, self.steps, self.store, self.orders = book, steps, store, orders
        self.chain, self.wallet, self.send = chain, wallet, send
        self.mnemonic, self.fee_rate = mnemonic, fee_rate
        self._secret: bytes | None = None  # index_secret(mnemonic), made on first use

    async def reconcile(self, esc: Escrow) -> None:
        if esc.refused is not None:  # said once (a notice); nothing more to do for it
            return
        if esc.state is State.PROPOSED and esc.role not in esc.machine.keys:
            await self._send_keys(esc)
        await self.ensure_signer(esc)
        m = esc.machine
        if m.state is State.PROPOSED and esc.signer is not None and m.address is None:
            self.steps.act(esc, DescriptorAcked(esc.role, esc.signer.policy.address))
        if esc.role is B and m.state is State.AGREED and m.funding is None:
            await self._fund(esc)
        if esc.role is not A:
            await self._order_hooks(esc)
            await self._cosign(esc)
            self._answer_dispute(esc)
        await self._settle(esc)

    async def _send_keys(self, esc: Escrow) -> None:
        """Our per-order xpub and a fresh payout address of our wallet."""
        await self.ensure_signer(esc)
        assert esc.key is not None
        address = await self.wallet().receive_address()
        timeout = (esc.key.timeout_xpub if esc.role is S and esc.terms.seller_timeout_blocks
                   else None)
        self.steps.act(esc, KeysExchanged(esc.role, esc.key.xpub, address, timeout))

    async def ensure_signer(self, esc: Escrow) -> None:
        if esc.refused is not None:
            raise LocalEscrowError(esc.refused)
        if esc.key is None:
            slot = self.store.key_slot(esc.order_id)
            if slot is None:  # a new escrow: the first index no other order holds
                if self._secret is None:
                    self._secret = await asyncio.to_thread(index_secret, self.mnemonic)
                secret, height = self._secret, await self.chain.tip_height()
                try:
                    slot = self.store.claim_index(
                        esc.order_id, (order_index(secret, esc.order_id, n) for n in range(64)),
                        height)
                except KeyRepeated as exc:
                    self._refuse(esc, str(exc))
            esc.key = await asyncio.to_thread(derive_order_key, self.mnemonic, slot.index,
                                              esc.terms.network)
            esc.made_height = slot.made_height
        if esc.signer is None and len(esc.machine.keys) == 3:
            policy = await asyncio.to_thread(policy_of, esc.machine)
            await asyncio.to_thread(lambda: (policy.address, policy.script_pubkey))  # cached
            theirs = [x for role, k in esc.machine.keys.items() if role is not esc.role
                      for x in (k.xpub, k.timeout_xpub) if x]
            try:
                self.store.claim_address(esc.order_id, policy.address, theirs)
            except KeyRepeated as exc:  # never sign for (or fund) an address that repeats
                self._refuse(esc, str(exc))
            esc.signer = await asyncio.to_thread(EscrowSigner, policy, esc.key)
        if esc.signer is not None and esc.funding is None and esc.funding_raw is not None:
            esc.funding = await asyncio.to_thread(esc.signer.add_funding, esc.funding_raw)

    def _refuse(self, esc: Escrow, why: str) -> NoReturn:
        """This node takes no part in the escrow: said once, as a notice; it never gets to
        acknowledge the address, so the buyer's node never pays it."""
        esc.refused = f"refusing this escrow: {why}"
        log.error("escrow %s: %s", esc.order_id, esc.refused)
        self.book.emit(EscrowNotice(esc.order_id, "escrow_refused", esc.refused))
        raise LocalEscrowError(esc.refused)

    # -- funding ------------------------------------------------------------------------------

    async def _fund(self, esc: Escrow) -> None:
        """Buyer: pay the agreed amount to the agreed address, once, before the deadline."""
        m = esc.machine
        due = m.deadline("funding")
        if (Flag.FUND_STARTED in esc.flags or time.monotonic() < esc.retry_at
                or m.address is None or (due is not None and self.steps.now() >= due)):
            return
        amount = esc.terms.amount_sats
        try:  # a crash right after an earlier payment must not pay twice
            if await self.chain.find_funding(m.address, amount, unspent=False) is None:
                wallet = self.wallet()
                await wallet.sync(self.chain)
                paid = await wallet.fund_escrow(self.chain, m.address, amount,
                                                sat_per_vb=self.fee_rate)
                self.book.emit(EscrowNotice(esc.order_id, "funding_sent", paid.txid))
        except (EscrowBitcoinError, ChainError) as exc:
            esc.retry_at = time.monotonic() + RETRY
            log.warning("escrow %s: cannot fund: %s", esc.order_id, exc)
            self.book.emit(EscrowNotice(esc.order_id, "funding_failed", str(exc)))
            return
        self.steps.save_flags(esc, Flag.FUND_STARTED)
        self.book.poke.set()

    async def watch(self, esc: Escrow) -> None:
        """The chain watcher's look at one escrow: its funding output, its settlement."""
        if esc.refused is not None:
            return
        m = esc.machine
        late = m.state in (State.CANCELLED, State.EXPIRED) and m.funding is None
        if m.address is not None and (m.state is State.AGREED or (late and len(m.acks) == 3)):
            found = await self.chain.find_funding(m.address, esc.terms.amount_sats,
                                                  after_height=esc.made_height)
            if found is not None:
                async with self.book.lock:
                    await self._funding_seen(esc, found)
        if m.funding is not None and m.state in WATCHED_FUNDING:
            await self._check_funding(esc, m.funding)
        tx_id = m.settlement_txid
        if tx_id is not None and Flag.CONFIRMED not in esc.flags:
            await self._check_settlement(esc, tx_id)

    async def _check_funding(self, esc: Escrow, funding: Funding) -> None:
        """The funding we counted must stay as deep as agreed until it is spent: a reorg that
        takes its block or a double spend that replaces it is a FundingLost (back to AGREED
        before shipping; an alarm after)."""
        status = await self.chain.tx_status(funding.txid)
        need = esc.terms.min_confirmations
        if status.confirmations >= need or esc.machine.confirmations < need:
            return  # as deep as agreed, or never counted deep yet
        gone = await self.chain.get_tx(funding.txid) is None
        reason = ("its transaction is gone from the chain and the mempool (double spent?)"
                  if gone else f"only {status.confirmations} confirmations now (a reorg)")
        async with self.book.lock:
            if esc.machine.funding == funding and esc.machine.state in WATCHED_FUNDING:
                log.warning("escrow %s: funding %s lost: %s", esc.order_id, funding.txid, reason)
                self.steps.act(esc, FundingLost(funding.txid, reason, self.steps.now()),
                               share=False)

    async def _check_settlement(self, esc: Escrow, tx_id: str) -> None:
        """Confirmed means: the funding output's spender is our settlement, in a block. Another
        spender is an alarm; a settlement that left the mempool is broadcast again."""
        funding = esc.machine.funding
        spender = None if funding is None else await self.chain.spender(funding.txid,
                                                                        funding.vout)
        if spender is not None and spender != tx_id:
            if Flag.CONFLICT not in esc.flags:
                self.steps.save_flags(esc, Flag.CONFLICT)
                self.book.emit(EscrowNotice(esc.order_id, "settlement_conflict",
                                            f"the escrow was spent by {spender}, not {tx_id}"))
            return
        status = await self.chain.tx_status(tx_id)
        async with self.book.lock:
            if (status.confirmations == 0 and spender is None and Flag.BROADCAST in esc.flags
                    and esc.settlement_raw is not None
                    and await self.chain.get_tx(tx_id) is None):
                # evicted (or never relayed): broadcast it again on the next pass
                self.steps.drop_flags(esc, Flag.BROADCAST)
                self.book.emit(EscrowNotice(esc.order_id, "rebroadcast", tx_id))
                self.book.mark(esc)
            await self._settlement_seen(esc, status.confirmations)

    async def _funding_seen(self, esc: Escrow, found: FundingOutput) -> None:
        """Our watcher found the funding output (at some depth): learn it and tell the machine."""
        await self.ensure_signer(esc)
        m, signer = esc.machine, esc.signer
        if signer is None:
            return
        seen = Funding(found.txid, found.vout, found.amount)
        if esc.funding_raw is None or (esc.funding != seen and m.state is State.AGREED):
            learned = await asyncio.to_thread(signer.add_funding, found.raw_tx)
            if learned != seen:
                raise EscrowBitcoinError("the funding transaction pays the escrow twice")
            esc.funding_raw, esc.funding = found.raw_tx, seen
            self.store.set_funding(esc.order_id, found.raw_tx)
        if m.funding == seen and found.confirmations <= m.confirmations:
            return
        deep = found.confirmations >= esc.terms.min_confirmations
        share = deep and Flag.FUNDED_SHARED not in esc.flags and m.state is State.AGREED
        self.steps.act(esc, Funded(found.txid, found.vout, found.amount, found.confirmations),
                  share=share)
        if share:
            self.steps.save_flags(esc, Flag.FUNDED_SHARED)
        await self.steps.retry_pending(esc)

    # -- the order and the escrow -------------------------------------------------------------

    async def _order_hooks(self, esc: Escrow) -> None:
        orders = self.orders
        try:
            order = orders.order(esc.order_id)
        except TradeError:
            return
        m = esc.machine
        funded = m.funding is not None and m.state in FUNDED_STATES
        if esc.role is S:
            if funded and order.state is O.AWAITING_PAYMENT and m.funding is not None:
                await orders.confirm_payment(esc.order_id, "escrow", m.funding.txid)
            if (m.state is State.FUNDED and order.shipment is not None
                    and order.state in (O.SHIPPED, O.RECEIVED, O.COMPLETED)):
                self.steps.act(esc, Shipped(order.shipment.tracking))
            if (m.state is State.RELEASED and Flag.CONFIRMED in esc.flags
                    and order.state is O.RECEIVED):
                await orders.settle(esc.order_id, m.settlement_txid or "")
        if order.state is O.CANCELLED or (esc.role is S and m.state in (State.CANCELLED,
                                                                         State.EXPIRED)):
            await self._order_cancelled(esc)
        elif (esc.role is B and order.state in (O.RECEIVED, O.COMPLETED)
              and m.state in (State.FUNDED, State.SHIPPED, State.DISPUTED)
              and not esc.signed("release")):
            await self.sign_payout(esc, "release")  # receipt confirmed: release the money

    async def _order_cancelled(self, esc: Escrow) -> None:
        """A cancelled order (or escrow): stop an unfunded escrow; the seller gives money that
        reached the escrow back (the buyer's node co-signs a refund by itself)."""
        m = esc.machine
        if m.state in (State.PROPOSED, State.AGREED) and m.funding is None:
            self.steps.act(esc, Cancel(esc.role, "the order was cancelled"))
        elif (esc.role is S and m.funding is not None and not esc.signed("refund")
              and (m.state, RefundSigned) in TRANSITIONS):
            await self.sign_payout(esc, "refund")

    # -- signatures ---------------------------------------------------------------------------

    async def _cosign(self, esc: Escrow) -> None:
        """Add our signature where it serves us: the seller to a release, the buyer to a refund,
        the favoured party to a ruling."""
        m = esc.machine
        wants: tuple[tuple[PayoutKind, bool], ...] = (("release", esc.role is S),
                                                      ("refund", esc.role is B))
        for kind, ours in wants:
            if (ours and m.signatures.get(kind) and not esc.signed(kind)
                    and (m.state, SIGNED_EVENT[kind]) in TRANSITIONS):
                await self.sign_payout(esc, kind)
        r = m.ruling
        if r is not None and m.state is State.DISPUTED and not esc.signed("ruling"):
            mine, theirs = ((r.buyer_sats, r.seller_sats) if esc.role is B
                            else (r.seller_sats, r.buyer_sats))
            if mine >= theirs:
                await self.sign_payout(esc, "ruling")

    async def sign_payout(self, esc: Escrow, kind: PayoutKind) -> None:
        """Sign `kind`: co-sign the PSBT a peer signed, or build and sign the first one."""
        m, signer, funding = esc.machine, esc.signer, esc.funding
        if signer is None or funding is None:
            raise EscrowBitcoinError("the escrow's funding is not known here yet")
        payout = m.payout(kind)
        theirs = [p for r, p in m.signatures.get(kind, {}).items() if r != esc.role]
        if theirs:
            psbt = theirs[0]
        else:
            psbt = await asyncio.to_thread(signer.build, funding, payout, await self.fee(esc))
        signed = await asyncio.to_thread(signer.sign, psbt, funding, payout)
        self.steps.act(esc, SIGNED_EVENT[kind](esc.role, signed))

    async def fee(self, esc: Escrow) -> int:
        rate = self.fee_rate or await self.chain.fee_rate()
        t = esc.terms
        return max(t.min_fee_sats, min(t.max_fee_sats, rate * SETTLEMENT_VSIZE))

    # -- settlement ---------------------------------------------------------------------------

    async def _settle(self, esc: Escrow) -> None:
        """Finalize a payout that has its signatures and broadcast it (every node does)."""
        m = esc.machine
        if m.settled_by is None:
            return
        if esc.settlement_raw is None:
            psbts = list(m.signatures.get(m.settled_by, {}).values())
            try:
                raw = await asyncio.to_thread(finalize, psbts)
            except PsbtRejected as exc:
                self.book.emit(EscrowNotice(esc.order_id, "finalize_failed", exc.reason))
                raise
            esc.settlement_raw = raw
            self.store.set_settlement(esc.order_id, raw)
        if Flag.BROADCAST in esc.flags or time.monotonic() < esc.retry_at:
            return
        tx_id = await asyncio.to_thread(txid, esc.settlement_raw)
        try:
            await self.chain.broadcast(esc.settlement_raw)
        except ChainError as exc:
            if await self.chain.get_tx(tx_id) is None:  # "already known" is no failure
                esc.retry_at = time.monotonic() + RETRY
                self.book.emit(EscrowNotice(esc.order_id, "broadcast_failed", str(exc)))
                raise
        self.steps.save_flags(esc, Flag.BROADCAST)
        self.book.emit(EscrowNotice(esc.order_id, "broadcast", tx_id))
        if m.settlement_txid is None:
            self.steps.act(esc, Broadcast(tx_id))
        self.book.poke.set()

    async def _settlement_seen(self, esc: Escrow, confirmations: int) -> None:
        if confirmations >= 1 and Flag.CONFIRMED not in esc.flags:
            self.steps.save_flags(esc, Flag.CONFIRMED)
            self.book.emit(EscrowNotice(esc.order_id, "settled", esc.machine.settlement_txid or ""))
            self.book.mark(esc)

    # -- disputes -----------------------------------------------------------------------------

    def _answer_dispute(self, esc: Escrow) -> None:
        """In a dispute our node hands the arbiter its copy of the order log and answers, so
        the arbiter can rule; a party whose node never answers is ruled on at the deadline."""
        m = esc.machine
        if m.state is not State.DISPUTED:
            return
        if Flag.CASE_SENT not in esc.flags:
            self._send_case(esc)
            self.steps.save_flags(esc, Flag.CASE_SENT)
        if esc.role not in m.heard and Flag.EVIDENCE not in esc.flags:
            self.steps.act(esc, Evidence(esc.role, "order log sent to the arbiter"))
            self.steps.save_flags(esc, Flag.EVIDENCE)

    def _send_case(self, esc: Escrow) -> None:
        orders = self.orders
        try:
            order = orders.load_order(esc.order_id)
        except TradeError as exc:
            log.warning("escrow %s: no order log to send: %s", esc.order_id, exc)
            return
        # the version the order was made on; else the newest copy this node has
        listing = orders.offered_listing(order.terms.negotiation)
        if listing is None or listing_ref(listing) != order.terms.listing:
            listing = (orders.own_listing(order.terms.listing.id) if esc.role is S
                       else orders.listing(order.seller, order.terms.listing.id))
        case = EscrowCase(order=esc.order_id, order_log=tuple(order.log.raws()[-MAX_CASE_STEPS:]),
                          listing=listing.raw if listing is not None else b"")
        try:
            self.send(esc.proposal.arbiter, case)
        except MessageError:  # too big for one message: the log alone still is evidence
            self.send(esc.proposal.arbiter, EscrowCase(
                order=esc.order_id, order_log=case.order_log))
