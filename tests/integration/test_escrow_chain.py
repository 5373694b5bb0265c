"""Whole trades on the devchain: three escrow machines, each with its own signer, a buyer wallet
funded by the faucet, settlement transactions accepted only if Bitcoin Core's consensus code
validates them. A tiny effect interpreter (`Trade`) stands in for the node's escrow driver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import pytest
from mnemonic import Mnemonic

from escrow import bitcoin as btc
from escrow.chain import EsploraChain, MainnetRefused
from escrow.devchain.server import Devchain
from escrow.machine import EscrowMachine
from escrow.terms import (
    Broadcast,
    ChainError,
    DeriveEscrowAddress,
    DescriptorAcked,
    DisputeOpened,
    Effect,
    EscrowEvent,
    Evidence,
    FinalizeAndBroadcast,
    Funded,
    FundEscrow,
    Funding,
    KeysExchanged,
    NeedSignature,
    PayoutKind,
    RefundSigned,
    ReleaseSigned,
    Role,
    Ruling,
    RulingAccepted,
    Shipped,
    State,
    Terms,
    Tick,
    TimeoutClaimAvailable,
    TimeoutClaimed,
)
from escrow.wallet import NodeWallet
from p2pmarket.wire.bodies import DAY

pytestmark = pytest.mark.timeout(60)
B, S, A = Role.BUYER, Role.SELLER, Role.ARBITER
AMOUNT = 250_000
T0 = 1_700_000_000
WORDS = {r: Mnemonic("english").to_mnemonic(bytes([i + 7]) * 32) for i, r in enumerate(Role)}


@dataclass
class Party:
    role: Role
    machine: EscrowMachine
    key: btc.OrderKey
    wallet: NodeWallet
    signer: btc.EscrowSigner | None = None
    funding: Funding | None = None
    cosign: set[PayoutKind] = field(default_factory=set)  # what this user agrees to co-sign
    claimable: bool = False


class Trade:
    """Delivers every event to all three machines and carries out the effects they return."""

    def __init__(self, chain: EsploraChain, devchain: Devchain, terms: Terms,
                 wallets: dict[Role, NodeWallet]) -> None:
        self.chain, self.devchain, self.terms = chain, devchain, terms
        self.parties = {r: Party(r, EscrowMachine(terms, r, now=T0),
                                 btc.derive_order_key(WORDS[r],
                                                      btc.legacy_order_index(terms.order_id),
                                                      "regtest"), wallets[r]) for r in Role}
        self.queue: list[tuple[Role, EscrowEvent]] = []
        self.now = T0

    async def act(self, author: Role, event: EscrowEvent) -> None:
        self.queue.append((author, event))
        while self.queue:
            who, ev = self.queue.pop(0)
            for p in self.parties.values():
                if p.role == who:
                    effects = p.machine.send(ev)
                else:  # the wire: peers get what msgspec decodes, not our object
                    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(ev), type=EscrowEvent)
                    effects = p.machine.receive(wire, who)
                for effect in effects:
                    await self.carry_out(p, effect)

    async def tick(self, seconds: int) -> None:
        self.now += seconds
        for p in self.parties.values():
            for effect in p.machine.send(Tick(self.now)):
                await self.carry_out(p, effect)

    async def carry_out(self, p: Party, effect: Effect) -> None:
        if isinstance(effect, DeriveEscrowAddress):
            policy = btc.EscrowPolicy("regtest", effect.buyer_xpub, effect.seller_xpub,
                                      effect.arbiter_xpub, effect.seller_timeout_xpub,
                                      effect.timeout_blocks)
            p.signer = btc.EscrowSigner(policy, p.key)
            self.queue.append((p.role, DescriptorAcked(p.role, policy.address)))
        elif isinstance(effect, FundEscrow):
            await p.wallet.fund_escrow(self.chain, effect.address, effect.amount_sats,
                                       sat_per_vb=2)
        elif isinstance(effect, NeedSignature) and effect.payout.kind in p.cosign:
            assert p.signer is not None and p.funding is not None
            signed = p.signer.sign(effect.psbt, p.funding, effect.payout)
            replies: dict[str, EscrowEvent] = {
                "release": ReleaseSigned(p.role, signed), "refund": RefundSigned(p.role, signed),
                "ruling": RulingAccepted(p.role, signed),
            }
            self.queue.append((p.role, replies[effect.payout.kind]))
        elif isinstance(effect, FinalizeAndBroadcast):
            txid = await self.chain.broadcast(btc.finalize(effect.psbts))
            self.queue.append((p.role, Broadcast(txid)))
        elif isinstance(effect, TimeoutClaimAvailable):
            p.claimable = True

    async def exchange_keys(self) -> None:
        for r, p in self.parties.items():
            timeout = p.key.timeout_xpub if r == S and self.terms.seller_timeout_blocks else None
            await self.act(r, KeysExchanged(r, p.key.xpub, await p.wallet.receive_address(),
                                            timeout))

    async def watch_funding(self) -> None:
        """Each party's own watcher: find the output on chain, teach the signer, report it."""
        for p in self.parties.values():
            assert p.signer is not None
            found = await self.chain.find_funding(p.signer.policy.address, AMOUNT)
            assert found is not None
            p.funding = p.signer.add_funding(found.raw_tx)
            await self.act(p.role, Funded(found.txid, found.vout, found.amount,
                                          found.confirmations))

    async def sign_first(self, role: Role, kind: PayoutKind, fee: int = 400,
                         ruling: Ruling | None = None) -> str:
        p = self.parties[role]
        assert p.signer is not None and p.funding is not None
        payout = p.machine.payout(kind, ruling)
        return p.signer.sign(p.signer.build(p.funding, payout, fee), p.funding, payout)

    def states(self) -> set[State]:
        return {p.machine.state for p in self.parties.values()}


@pytest.fixture
async def devchain() -> AsyncIterator[Devchain]:
    async with Devchain.running(":memory:", host="127.0.0.1", port=0) as chain:
        yield chain


async def funded_trade(devchain: Devchain, **terms: object) -> Trade:
    chain = EsploraChain(devchain.url, "regtest")
    wallets = {r: await NodeWallet.open(WORDS[r], "regtest", None) for r in Role}
    await devchain.faucet(await wallets[B].receive_address(), 1_000_000, confirm=True)
    assert (await wallets[B].sync(chain)).confirmed == 1_000_000
    t = Trade(chain, devchain, msgspec.convert(
        {"order_id": "order-chain-1", "amount_sats": AMOUNT, "min_fee_sats": 150,
         "max_fee_sats": 5_000, "arbiter_fee_bp": 200, "arbiter_fee_fixed_sats": 1_000, **terms},
        Terms), wallets)
    await t.exchange_keys()
    assert t.states() == {State.AGREED}  # and the buyer's wallet paid the escrow
    await devchain.mine(1)
    await t.watch_funding()
    assert t.states() == {State.FUNDED}
    return t


def paid(t: Trade, role: Role) -> int:
    return t.devchain.balance_of(t.parties[role].machine.keys[role].payout_address)


async def settle(t: Trade) -> None:
    assert t.parties[B].machine.settlement_txid is not None
    await t.devchain.mine(1)
    status = await t.chain.tx_status(t.parties[S].machine.settlement_txid or "")
    assert status.confirmations == 1


async def test_release(devchain: Devchain) -> None:
    t = await funded_trade(devchain)
    t.parties[S].cosign.add("release")
    await t.act(S, Shipped("parcel 1"))
    await t.act(B, ReleaseSigned(B, await t.sign_first(B, "release", fee=400)))
    assert t.states() == {State.RELEASED}
    await settle(t)
    assert paid(t, S) == AMOUNT - 400 and paid(t, B) == 0
    balance = await t.parties[B].wallet.sync(t.chain)
    assert 1_000_000 - AMOUNT - 1_000 < balance.confirmed < 1_000_000 - AMOUNT  # minus its fee


async def test_refund(devchain: Devchain) -> None:
    t = await funded_trade(devchain)
    t.parties[B].cosign.add("refund")
    await t.act(S, RefundSigned(S, await t.sign_first(S, "refund", fee=300)))
    assert t.states() == {State.REFUNDED}
    await settle(t)
    assert paid(t, B) == AMOUNT - 300


@pytest.mark.parametrize("winner", [B, S])
async def test_dispute_ruled_for_the_winner_with_the_arbiter_fee(devchain: Devchain,
                                                                 winner: Role) -> None:
    t = await funded_trade(devchain)
    t.parties[winner].cosign.add("ruling")
    await t.act(S, Shipped())
    await t.act(B, DisputeOpened(B, "not as described"))
    await t.act(S, Evidence(S, "it was"))
    fee = t.terms.arbiter_fee_sats  # 1_000 + 2 %
    win = AMOUNT - fee - 500
    ruling = Ruling(win if winner == B else 0, win if winner == S else 0, fee)
    signed = await t.sign_first(A, "ruling", ruling=ruling)
    await t.act(A, Ruling(ruling.buyer_sats, ruling.seller_sats, fee, "decided", signed))
    assert t.states() == {State.RESOLVED}
    await settle(t)
    assert paid(t, winner) == win and paid(t, A) == fee == 6_000


async def test_the_devchain_refuses_tampered_and_early_spends(devchain: Devchain) -> None:
    t = await funded_trade(devchain, seller_timeout_blocks=5)
    await t.act(S, Shipped())
    await t.tick(14 * DAY)
    seller = t.parties[S]
    assert seller.claimable and seller.signer is not None and seller.funding is not None
    claim = seller.machine.payout("timeout")
    psbt = seller.signer.sign(seller.signer.build(seller.funding, claim, 300), seller.funding,
                              claim)
    raw = btc.finalize([psbt])
    i = raw.index((AMOUNT - 300).to_bytes(8, "little"))
    tampered = raw[:i] + (AMOUNT - 200).to_bytes(8, "little") + raw[i + 8:]
    with pytest.raises(ChainError):
        await t.chain.broadcast(tampered)  # the signature no longer covers the outputs
    with pytest.raises(ChainError):
        await t.chain.broadcast(raw)  # the funding output is only 1 block deep, not 5
    await devchain.mine(3)
    with pytest.raises(ChainError):
        await t.chain.broadcast(raw)  # one block early
    await devchain.mine(1)
    await t.act(S, TimeoutClaimed(psbt))
    assert t.states() == {State.RELEASED}
    await settle(t)
    assert paid(t, S) == AMOUNT - 300


def test_mainnet_needs_the_explicit_flag() -> None:
    with pytest.raises(MainnetRefused):
        EsploraChain("http://127.0.0.1:1", "mainnet")
    assert EsploraChain("http://127.0.0.1:1", "mainnet", allow_mainnet=True).network == "mainnet"
    with pytest.raises(ChainError):
        EsploraChain("ftp://example", "regtest")
