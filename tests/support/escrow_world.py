"""Three whole nodes (seller, buyer, arbiter) on loopback libp2p + DHT with escrow drivers on a
devchain: the harness of tests/integration/test_escrow_trade.py and bench/escrow.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mnemonic import Mnemonic

from dht.server import DhtNode
from dht.testing import dht_network
from escrow.chain import EsploraChain
from escrow.devchain.server import Devchain
from escrow.terms import State
from node.app import Node
from node.escrow.book import EscrowUpdate
from node.escrow.driver import EscrowConfig, EscrowDriver
from node.market.listings import build_listing, new_listing_id
from node.p2p.messenger import RetryPolicy
from node.trade.negotiation import NegotiationState
from node.trade.orders import OrderState
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Listing
from p2pmarket.wire.records import Record
from tests.support.nodes import make_node
from tests.support.waiting import until

AMOUNT = 250_000
FEE_RATE = 2  # sat/vB: a settlement costs 2 * 220 = 440 sats
FEE = FEE_RATE * 220  # the miner fee every settlement here pays
ARBITER_FEE = 1_000 + AMOUNT * 200 // 10_000  # market()'s advert: 2 % plus 1000 sats
POLICY = RetryPolicy(base=0.05, cap=0.5, ack_timeout=1.0, direct_before_mailbox=2,
                     mailbox_recheck=2.0, mailbox_poll=0.25)


class Clock:
    """Unix time plus an offset every node's escrow driver shares (to pass deadlines)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Party:
    name: str
    identity: Identity
    mnemonic: str
    datadir: Path
    node: Node
    db: Database
    stop: asyncio.Event
    task: asyncio.Task[None]
    updates: list[EscrowUpdate] = field(default_factory=list)

    @property
    def public(self) -> bytes:
        return self.identity.public

    @property
    def escrow(self) -> EscrowDriver:
        assert self.node.escrow is not None
        return self.node.escrow


@dataclass
class World:
    devchain: Devchain
    chain: EsploraChain
    backbone: list[DhtNode]
    tg: asyncio.TaskGroup
    tmp: Path
    clock: Clock = field(default_factory=Clock)
    poll: float = 0.1  # the escrow drivers' chain watcher interval
    parties: dict[str, Party] = field(default_factory=dict)

    async def start(self, name: str, identity: Identity | None = None,
                    mnemonic: str | None = None) -> Party:
        """A node in `<tmp>/<name>` (again: same identity, mnemonic, db file and wallet)."""
        old = self.parties.get(name)
        identity = identity or (old.identity if old else Identity.generate())
        mnemonic = mnemonic or (old.mnemonic if old else Mnemonic("english").generate(128))
        datadir = self.tmp / name
        config = EscrowConfig(esplora_url=self.devchain.url, mnemonic=mnemonic, poll=self.poll,
                              tick=0.5, fee_rate=FEE_RATE, clock=self.clock)
        node = make_node(datadir, policy=POLICY, identity=identity, escrow=config)
        db = node.db
        await node.start(dht_host="127.0.0.1", dht_port=0)
        stop = asyncio.Event()
        task = self.tg.create_task(node.run(stop, [self.backbone[0].address]))
        party = Party(name, identity, mnemonic, datadir, node, db, stop, task)
        party.escrow.listeners.append(party.updates.append)
        await node.ready.wait()
        await node.peers.publish(force=True)
        self.parties[name] = party
        return party

    async def stop(self, party: Party) -> None:
        party.stop.set()
        await party.task
        party.db.close()

    async def fund_wallet(self, party: Party, sats: int) -> None:
        await self.devchain.faucet(await party.escrow.receive_address(), sats, confirm=True)
        assert (await party.escrow.balance()).confirmed == sats

    async def mine(self, blocks: int = 1) -> None:
        await self.devchain.mine(blocks)


@asynccontextmanager
async def escrow_world(tmp: Path) -> AsyncIterator[World]:
    async with Devchain.running(":memory:", host="127.0.0.1", port=0) as devchain, \
            dht_network(4) as backbone, asyncio.TaskGroup() as tg:
        world = World(devchain, EsploraChain(devchain.url, "regtest"), backbone, tg, tmp)
        try:
            yield world
        finally:
            for party in world.parties.values():
                if not party.task.done():
                    party.stop.set()
            for party in world.parties.values():
                await party.task
                party.db.close()


def escrow_state(p: Party, order_id: str) -> State | None:
    esc = p.escrow.escrows.get(order_id)
    return esc.state if esc is not None else None


def order_state(p: Party, order_id: str) -> OrderState | None:
    return p.node.trade.order(order_id).state if order_id in p.node.trade.store.order_ids() \
        else None


async def market(world: World) -> tuple[Party, Party, Party, Record[Listing]]:
    """Seller, buyer (wallet funded) and arbiter (advert published); a BTC listing naming it."""
    seller, buyer, arbiter = [await world.start(n) for n in ("seller", "buyer", "arbiter")]
    await arbiter.node.adverts.publish("Ada Arbiter", "English, German. Rules in 3 days.",
                                       fee_percent_bp=200, fee_fixed_sat=1_000)
    listing = await seller.node.listings.create(build_listing(dict(
        id=new_listing_id(),
        title="Road bike", description="56 cm steel frame", price=dict(amount=AMOUNT,
                                                                        currency="BTC"),
        category="sports", condition="good", quantity=100,
        location=dict(country="DE", geohash="u33db"), arbiters=[arbiter.public])))
    await world.fund_wallet(buyer, 1_000_000)
    return seller, buyer, arbiter, listing


async def open_order(seller: Party, buyer: Party, listing: Record[Listing]) -> str:
    """The buyer offers the list price, the seller accepts, the buyer sends its address."""
    listing = seller.node.listings.get(listing.body.id)  # the current version (sales edit it)
    neg = (await buyer.node.trade.make_offer(listing, 1, AMOUNT)).id
    await until(lambda: any(v.id == neg and v.state is NegotiationState.OPEN
                            for v in seller.node.trade.negotiations()))
    await seller.node.trade.accept(neg)
    await until(lambda: buyer.node.trade.negotiation(neg).order_id is not None)
    order_id = buyer.node.trade.negotiation(neg).order_id
    assert order_id is not None
    await buyer.node.trade.send_address(order_id, "Erika Mustermann\nHauptstr. 5\nBerlin")
    await until(lambda: order_state(seller, order_id) is OrderState.AWAITING_PAYMENT)
    return order_id


async def agree(world: World, order_id: str, buyer: Party, *others: Party) -> str:
    """The buyer starts the escrow; all agree on the address and the buyer pays it."""
    await buyer.escrow.start(order_id)
    await until(lambda: all(escrow_state(p, order_id) is State.AGREED
                            for p in (buyer, *others)))
    address = buyer.escrow.view(order_id).address
    assert address is not None
    await until(lambda: world.devchain.balance_of(address) == AMOUNT)  # in the mempool
    return address


async def funded(world: World, order_id: str, *parties: Party) -> None:
    await world.mine()
    await until(lambda: all(escrow_state(p, order_id) is State.FUNDED for p in parties))
