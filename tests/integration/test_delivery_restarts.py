"""An ack means stored: hundreds of messages across a recipient's stop, mailbox and restart.

The scenario of issue 16: A sends 300 lines to B; B stops after line 80 and comes back after
line 220 with its database kept, so 140 lines wait in B's DHT mailbox (more than one fetch of
8 pages used to read). B also writes to A the whole time. At the end each side counts what it
has: lost, duplicated, out of order; and every message A's outbox calls delivered must be in
B's inbox. Real DHT nodes on loopback; the channels are the in-memory host.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from dht.server import DhtNode
from dht.testing import dht_network
from node.p2p.memory import MemoryHost, MemoryNetwork
from node.p2p.messenger import MAILBOX_PAGES, Messenger, RetryPolicy
from node.p2p.outbox import Outbox, State
from node.p2p.peers import PeerDirectory
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.dhtkeys import mailbox_key
from p2pmarket.wire.messages import Chat, open_message
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(180)

TOTAL, STOP_AFTER, BACK_AFTER = 300, 80, 220


def policy(gap_timeout: float) -> RetryPolicy:
    # the sender tries direct again only 10 minutes after a mailbox deposit, so what B missed
    # while stopped can reach it only through its mailbox (the path that lost messages)
    return RetryPolicy(base=0.05, cap=0.5, ack_timeout=0.5, direct_before_mailbox=1,
                       mailbox_recheck=600.0, mailbox_poll=0.5, gap_timeout=gap_timeout)


class Side:
    """One node's messenger over a database file that outlives the messenger."""

    def __init__(self, net: MemoryNetwork, dht: DhtNode, path: Path, identity: Identity,
                 retry: RetryPolicy) -> None:
        self.net, self.dht, self.path, self.identity, self.retry = net, dht, path, identity, retry
        self.db: Database | None = None
        self.messenger: Messenger | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, tg: asyncio.TaskGroup, dht: DhtNode | None = None) -> Messenger:
        self.dht = dht or self.dht
        self.db = Database.open(self.path)
        host = MemoryHost(self.net, self.identity)
        self.net.hosts[host.peer_id] = host
        m = Messenger(self.identity, host, Outbox(self.db),
                      PeerDirectory(self.identity, host, self.dht), self.dht, policy=self.retry)
        await host.start()
        assert await m.peers.publish()
        self.messenger, self.task = m, tg.create_task(m.run())
        return m

    async def stop(self) -> None:
        assert self.task is not None and self.messenger is not None and self.db is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.messenger.host.stop()
        self.db.close()
        self.messenger = self.task = None

    def received_from(self, sender: bytes) -> list[str]:
        """The texts of B's inbox from `sender`, in the order they were delivered."""
        db = Database.open(self.path)
        try:
            rows = Outbox(db).inbox(sender=sender, limit=10_000)
        finally:
            db.close()
        texts = []
        for _, _, raw, _, _ in rows:
            body = open_message(raw).body
            assert isinstance(body, Chat)
            texts.append(body.text)
        return texts


def all_delivered(m: Messenger, recipient: bytes) -> bool:
    return all(e.state is State.DELIVERED
               for e in m.outbox.entries(recipient=recipient, limit=10_000))


def tally(got: list[str], sent: list[str]) -> dict[str, int]:
    counts = Counter(got)
    in_sent_order = [t for t in sent if t in counts]
    return {"lost": len(set(sent) - set(got)),
            "duplicated": sum(n - 1 for n in counts.values() if n > 1),
            "reordered": sum(1 for a, b in zip(list(dict.fromkeys(got)), in_sent_order,
                                               strict=False) if a != b)}


async def run_scenario(tmp_path: Path, retry: RetryPolicy) -> tuple[dict[str, int],
                                                                     dict[str, int]]:
    # ksize 4: a key lives on a few nodes, so B's mailbox is not simply in its own node's store
    # and has to be read page by page from the replicas, as in a real network
    async with dht_network(20, ksize=4) as dht:
        net = MemoryNetwork()
        a = Side(net, dht[1], tmp_path / "a.db", Identity.generate(), retry)
        b = Side(net, dht[2], tmp_path / "b.db", Identity.generate(), retry)
        a_pub, b_pub = a.identity.public, b.identity.public
        to_b = [f"a->b {i}" for i in range(1, TOTAL + 1)]
        to_a: list[str] = []
        sent_ids: list[str] = []
        async with asyncio.TaskGroup() as tg:
            alice = await a.start(tg)
            bob = await b.start(tg)

            def b_says(i: int) -> None:
                assert b.messenger is not None
                to_a.append(f"b->a {i}")
                b.messenger.send(a_pub, Chat(conversation="conv-0001", text=to_a[-1]))

            for i, text in enumerate(to_b, start=1):
                sent_ids.append(alice.send(b_pub, Chat(conversation="conv-0001", text=text)).id)
                if b.messenger is not None and i % 10 == 0:
                    b_says(i)
                if i == STOP_AFTER:
                    # B goes away with some lines in flight, unacknowledged
                    await asyncio.sleep(0.05)
                    await b.stop()
                elif i == BACK_AFTER:
                    # everything B missed is sealed in its mailbox by now
                    await until(lambda: all(
                        (e := alice.outbox.get(m)) is not None and e.state is not State.QUEUED
                        and (e.state is State.DELIVERED or e.via == "mailbox")
                        for m in sent_ids), timeout=60)
                    box = mailbox_key(b_pub)
                    waiting = await dht[9].get_all(box, max_pages=MAILBOX_PAGES)
                    # more mail than the 8 pages the mailbox fetch used to read
                    assert len(waiting) >= BACK_AFTER - STOP_AFTER > 8 * 16
                    outside = next(n for n in dht[3:] if not n._local_records(box))
                    bob = await b.start(tg, outside)
                await asyncio.sleep(0.002)

            await until(lambda: all_delivered(alice, b_pub), timeout=90)
            await until(lambda: all_delivered(bob, a_pub), timeout=90)
            delivered_at_a = {e.id for e in alice.outbox.entries(recipient=b_pub, limit=1000)
                              if e.state is State.DELIVERED}
            await a.stop()
            await b.stop()
        inbox_ids = {row[0] for row in _inbox(tmp_path / "b.db", a_pub)}
        # every `delivered` at A is in B's inbox: an ack means stored
        assert delivered_at_a == set(sent_ids) and delivered_at_a <= inbox_ids
        return (tally(b.received_from(a_pub), to_b), tally(a.received_from(b_pub), to_a))


def _inbox(path: Path, sender: bytes) -> list[tuple[str, bytes, bytes, float, str]]:
    db = Database.open(path)
    try:
        return Outbox(db).inbox(sender=sender, limit=10_000)
    finally:
        db.close()


async def test_300_messages_across_a_stop_and_a_full_mailbox(tmp_path: Path) -> None:
    at_b, at_a = await run_scenario(tmp_path, policy(gap_timeout=900.0))
    assert at_b == {"lost": 0, "duplicated": 0, "reordered": 0}
    assert at_a == {"lost": 0, "duplicated": 0, "reordered": 0}


async def test_a_skipped_gap_never_loses_the_late_message(tmp_path: Path) -> None:
    """With a gap timeout shorter than the mailbox path, gaps are skipped: what arrives late
    is delivered late (out of order at worst), never acknowledged and dropped."""
    at_b, at_a = await run_scenario(tmp_path, policy(gap_timeout=0.0))
    assert (at_b["lost"], at_b["duplicated"]) == (0, 0)
    assert (at_a["lost"], at_a["duplicated"]) == (0, 0)
