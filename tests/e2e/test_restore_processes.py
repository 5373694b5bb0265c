"""A seller's disk dies: its node comes back from the 24 words, then from a backup file.

Three real processes on loopback and the devchain: R (the node the others join, and the
buyer), A (the seller). A lists two items, publishes its profile, receives coins, gets a
question and an order from R, and is backed up (words and file) while R keeps writing to it.
Then A's data dir is deleted. Restored from the words, A has the same peer id and takes its
listings and profile back from the DHT, and its wallet finds its coins again; restored from the
backup file it also has the order and the conversation, in a database that passes
`PRAGMA integrity_check`.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from escrow.devchain.server import Devchain
from p2pmarket.client import Client
from tests.support.api import LISTING
from tests.support.processes import (
    base_env,
    free_udp_port,
    init_datadir,
    reap,
    spawn_node,
    stop_node,
    wait_for_api,
)
from tests.support.waiting import when

pytestmark = pytest.mark.timeout(300)

COINS = 70_000


def cli(env: dict[str, str], *args: str, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "p2pmarket", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


async def test_a_lost_disk_comes_back_from_words_and_from_a_backup(tmp_path: Path) -> None:
    async with Devchain.running(":memory:", host="127.0.0.1", port=0) as chain:
        env = base_env(tmp_path / "home") | {"P2PMARKET_ESPLORA_URL": chain.url}
        r_dir, a_dir = tmp_path / "r", tmp_path / "a"
        init_datadir(r_dir, env)
        peer_a = init_datadir(a_dir, env)
        r_port = free_udp_port()
        join = ("--bootstrap", f"127.0.0.1:{r_port}", "--api-port", "0")
        procs: list[subprocess.Popen[str]] = []
        clients: list[Client] = []

        async def start_a() -> Client:
            proc = spawn_node(a_dir, free_udp_port(), env, *join)
            procs.append(proc)
            await asyncio.to_thread(wait_for_api, a_dir, proc)
            client = Client.from_datadir(a_dir)
            clients.append(client)
            await when(client.get_status, lambda s: s.state == "running" and s.dht is not None
                       and s.dht.contacts > 0, timeout=60)
            return client

        try:
            r_proc = spawn_node(r_dir, r_port, env, "--api-port", "0")
            procs.append(r_proc)
            await asyncio.to_thread(wait_for_api, r_dir, r_proc)
            r = Client.from_datadir(r_dir)
            clients.append(r)
            await when(r.get_status, lambda s: s.state == "running" and s.dht is not None
                       and s.dht.listening is not None)
            a = await start_a()

            # the seller's life before the crash
            made = [await a.create_listing(LISTING),
                    await a.create_listing({**LISTING, "id": "oak-desk-lamp-2",
                                            "title": "Oak desk lamp"})]
            assert all(m.published_at is not None for m in made)
            await a.put_my_profile({"name": "Ada", "bio": "Bikes and lamps"})
            address = (await a.new_receive_address()).address
            await chain.faucet(address, COINS, confirm=True)
            await when(a.get_wallet, lambda w: w.confirmed_sat == COINS, timeout=60)
            offer = await when(lambda: r.make_offer(peer_a, LISTING["id"], 24_000),
                               lambda o: True, timeout=60)  # 404 until R finds the listing
            await when(a.list_offers, lambda p: any(o.id == offer.id for o in p.items))
            await a.accept_offer(offer.id)
            order = await when(a.list_orders, lambda p: len(p.items) == 1)
            await when(r.list_orders, lambda p: len(p.items) == 1)
            words = cli(env, "backup", "--words", "--datadir", str(a_dir)).stdout

            # a backup taken while R keeps writing to A
            backup = tmp_path / "a.p2pbak"

            sent: list[str] = []
            done = asyncio.Event()

            async def chatter() -> None:
                while not done.is_set():  # until the backup is written
                    sent.append(f"still there? {len(sent)}")
                    await r.send_message(offer.id, sent[-1])

            async with asyncio.TaskGroup() as tg:
                tg.create_task(chatter())
                await when(lambda: a.list_messages(offer.id, page_size=200),
                           lambda p: len(p.items) >= 3)  # A is storing lines now
                await asyncio.to_thread(cli, env, "backup", "--out", str(backup),
                                        "--datadir", str(a_dir))
                done.set()
            await when(lambda: a.list_messages(offer.id, page_size=200),
                       lambda p: sum(m.text in sent for m in p.items) == len(sent), timeout=60)

            # the disk dies
            assert stop_node(procs[-1]) == 0
            shutil.rmtree(a_dir)

            # back from the 24 words
            restored = cli(env, "restore", "--words-file", "-", "--datadir", str(a_dir),
                           "--insecure-no-passphrase", stdin=words)
            assert restored.stdout.split()[0] == peer_a
            a = await start_a()
            assert (await a.get_status()).peer_id == peer_a
            mine = await when(a.list_my_listings,
                              lambda p: {x.id for x in p.items} == {m.id for m in made},
                              timeout=90)
            assert all(x.published_at is not None for x in mine.items)
            profile = await when(a.get_my_profile, lambda p: p.found, timeout=30)
            assert (profile.name, profile.bio) == ("Ada", "Bikes and lamps")
            wallet = await when(a.get_wallet, lambda w: w.confirmed_sat == COINS, timeout=60)
            assert wallet.pending_sat == 0
            # the words are keys, not data: the order and the chat live in the backup file
            assert (await a.list_orders()).items == []
            assert stop_node(procs[-1]) == 0
            shutil.rmtree(a_dir)

            # back from the backup file
            restored = cli(env, "restore", "--from", str(backup), "--datadir", str(a_dir))
            assert restored.stdout.split()[0] == peer_a
            conn = sqlite3.connect(a_dir / "node.db")
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            conn.close()
            a = await start_a()
            orders = (await a.list_orders()).items
            assert [o.id for o in orders] == [order.items[0].id]
            lines = (await a.list_messages(offer.id, page_size=200)).items
            assert lines, "the conversation came back"
            texts = [m.text for m in lines if m.text in sent]
            # the lines stored when the copy was taken: a prefix of what R sent, in order
            assert texts and texts == sent[:len(texts)]
            print(f"backup taken with {len(texts)} of {len(sent)} lines stored")
            assert {x.id for x in (await a.list_my_listings()).items} == {m.id for m in made}
            await when(a.get_wallet, lambda w: w.confirmed_sat == COINS, timeout=60)
        finally:
            for client in clients:
                await client.close()
            for proc in procs:
                reap(proc)
