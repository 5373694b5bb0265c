"""300 chat lines from A to B (and B's replies) while B's process is stopped and started again.

Three `p2pmarket run` processes on loopback (R, the first node the others join; A, the buyer;
B, the seller). A asks about B's listing and writes 300 lines; B is stopped after line 80 (a
clean SIGTERM, or a SIGKILL mid-write) and started again on the same data dir after line 220,
so what it missed waits in its DHT mailbox while A keeps writing. At the end B's conversation
must hold every line once, in order, and every line A's node calls delivered. B replies every
tenth line while it runs, so the same holds the other way for lines sent around its stop.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from p2pmarket.api.schemas_trade import OutboxOut
from p2pmarket.client import Client
from tests.support.api import LISTING
from tests.support.processes import (
    base_env,
    free_tcp_port,
    free_udp_port,
    init_datadir,
    reap,
    spawn_node,
    stop_node,
    wait_for_api,
)
from tests.support.waiting import when

pytestmark = pytest.mark.timeout(240)

TOTAL, STOP_AFTER, BACK_AFTER = 300, 80, 220


async def all_lines(client: Client, conversation: str) -> list[tuple[str, bool, str | None]]:
    """(text, mine, delivery) of every line of a conversation, oldest first."""
    lines: list[tuple[str, bool, str | None]] = []
    token: str | None = None
    while True:
        page = await client.list_messages(conversation, page_size=200, page_token=token)
        lines += [(m.text, m.mine, m.delivery) for m in page.items]
        token = page.next_page_token
        if token is None:
            return lines


async def outbox(client: Client, peer: str) -> list[OutboxOut]:
    entries: list[OutboxOut] = []
    token: str | None = None
    while True:
        page = await client.list_outbox(peer=peer, page_size=200, page_token=token)
        entries += page.items
        token = page.next_page_token
        if token is None:
            return entries


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["clean", "kill"])
async def test_300_lines_across_a_restart(tmp_path: Path, stop: signal.Signals) -> None:
    env = base_env(tmp_path / "home")
    dirs = {name: tmp_path / name for name in ("r", "a", "b")}
    for d in dirs.values():
        init_datadir(d, env)
    r_port = free_udp_port()
    join = ("--bootstrap", f"127.0.0.1:{r_port}", "--api-port", "0")
    b_args = (str(free_udp_port()), "--p2p-port", str(free_tcp_port()), *join)
    procs: list[subprocess.Popen[str]] = []
    clients: list[Client] = []

    def start(name: str, *args: str) -> subprocess.Popen[str]:
        port, *rest = args
        proc = spawn_node(dirs[name], int(port), env, *rest)
        procs.append(proc)
        return proc

    async def client_of(name: str, proc: subprocess.Popen[str], stale: str = "") -> Client:
        # a killed node leaves its api.url behind: wait for the new one
        while await asyncio.to_thread(wait_for_api, dirs[name], proc) == stale:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        client = Client.from_datadir(dirs[name])
        clients.append(client)
        # running and joined: a node that starts its DHT before R answers retries later
        await when(client.get_status, lambda s: s.state == "running" and s.dht is not None
                   and s.dht.contacts > 0, timeout=60)
        return client

    try:
        r_proc = start("r", str(r_port), "--api-port", "0")
        await asyncio.to_thread(wait_for_api, dirs["r"], r_proc)
        r = Client.from_datadir(dirs["r"])
        clients.append(r)
        await when(r.get_status, lambda s: s.state == "running" and s.dht is not None
                   and s.dht.listening is not None)
        a_proc = start("a", str(free_udp_port()), *join)
        b_proc = start("b", *b_args)
        a, b = await client_of("a", a_proc), await client_of("b", b_proc)
        listing = await b.create_listing(LISTING)
        peer_b = (await b.get_status()).peer_id
        # lines of a real chat's length: the 140 B misses take more mailbox pages than the
        # 8 a mailbox fetch used to read
        sent = [f"line {i}: " + "the frame is fine, the wheels need new tyres. " * 6
                for i in range(1, TOTAL + 1)]
        # 404 until A's node finds the listing in the DHT
        conv = (await when(lambda: a.start_conversation(peer_b, listing.id, sent[0]),
                           lambda c: True)).id
        await when(lambda: b.list_messages(conv), lambda p: True)  # 404 until B has the question
        replies: list[str] = []  # B answers now and then while it runs: the other direction
        b_up = True
        for i, text in enumerate(sent[1:], start=2):
            await a.send_message(conv, text)
            if b_up and i % 10 == 0:
                replies.append(f"reply {len(replies) + 1} after line {i}")
                await b.send_message(conv, replies[-1])
            if i == STOP_AFTER:
                b_up = False
                assert stop_node(b_proc, stop) == (0 if stop == signal.SIGTERM else -9)
            elif i == BACK_AFTER:
                # B stays away until A's node has sealed every line it missed into B's mailbox
                await when(lambda: outbox(a, peer_b), lambda es: all(
                    e.state == "delivered" or (e.state == "sent" and e.via == "mailbox")
                    for e in es), timeout=90)
                b_proc = start("b", *b_args)
                b = await client_of("b", b_proc, stale=b.url)
                b_up = True

        # A's node settles: every line delivered (acknowledged by B's node)
        mine = await when(lambda: all_lines(a, conv), lambda ls: len([1 for _, m, _ in ls if m])
                          == TOTAL and all(d == "delivered" for _, m, d in ls if m), timeout=150)
        assert [t for t, m, _ in mine if m] == sent
        theirs = [t for t, m, _ in await all_lines(b, conv) if not m]
        counts = Counter(theirs)
        lost = [t for t in sent if t not in counts]
        duplicated = [t for t, n in counts.items() if n > 1]
        assert (lost, duplicated) == ([], [])
        assert theirs == sent  # in order

        # and the other way: every reply B's node stored before its stop (or after) reached A
        # once, in order, and B's node calls each delivered
        back = await when(lambda: all_lines(b, conv), lambda ls: all(
            d == "delivered" for _, m, d in ls if m), timeout=120)
        assert [t for t, m, _ in back if m] == replies
        at_a = [t for t, m, _ in await all_lines(a, conv) if not m]
        assert at_a == replies
    finally:
        for client in clients:
            await client.close()
        for proc in procs:
            reap(proc)
