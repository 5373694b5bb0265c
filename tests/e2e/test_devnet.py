"""`p2pmarket devnet --no-tui` as a process: it comes up with seeded listings and a funded buyer,
a whole escrowed trade runs through the client between its buyer and seller, the devchain shows
the money move, and SIGINT stops every process it started."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pmarket.client import ApiError, Client, Event
from tests.support.processes import base_env

pytestmark = pytest.mark.timeout(120)


def _wait_for_line(proc: subprocess.Popen[bytes], out: Path, pattern: str,
                   seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline:
        text = out.read_text(errors="replace")
        if re.search(pattern, text):
            return text
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r}; output:\n{text}")


def _pids_under(root: Path, *, exclude: int = 0) -> set[int]:
    """Processes whose command line names `root` (the devnet's children)."""
    pids: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmdline and int(entry) != exclude:
            pids.add(int(entry))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it counts as gone only once reaped
    return True


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - polls other processes over HTTP
            await asyncio.sleep(0.2)


async def _wait_event(events: AsyncIterator[Event], match: Callable[[Event], bool],
                      timeout: float = 30.0) -> Event:
    async with asyncio.timeout(timeout):
        async for event in events:
            if match(event):
                return event
    raise AssertionError("the event stream ended")


async def _trade(root: Path, chain_url: str) -> dict[str, Any]:
    async with Client.from_datadir(root / "seller", timeout=30) as seller, \
            Client.from_datadir(root / "buyer", timeout=30) as buyer, \
            aiohttp.ClientSession() as http:

        async def chain(method: str, path: str, body: object = None) -> Any:
            async with http.request(method, chain_url + path, json=body) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

        seller_id = (await seller.get_status()).peer_id
        assert seller_id is not None
        me = await buyer.get_my_profile()  # a location, so "near me" works in the TUI
        assert me.name == "Devnet Buyer" and me.location is not None
        assert me.location.country == "DE"
        buyer_start = (await buyer.get_wallet()).confirmed_sat
        seller_start = (await seller.get_wallet()).confirmed_sat
        assert buyer_start >= 1_000_000  # the devnet funded it from the faucet

        # search: the seeded road bike, priced in sats, naming the devnet's arbiter
        hits = (await buyer.search("road bike", seller=seller_id)).items
        listing = next(h.listing for h in hits if h.listing.price.currency == "BTC")
        assert listing.arbiters and listing.images
        assert len([x async for x in seller.pages(seller.list_my_listings)]) >= 30
        price = listing.price.amount

        status = await buyer.get_status()
        async with aclosing(buyer.events(last_event_id=status.last_event_id,
                                         reconnect=True)) as buyer_events:
            seller_status = await seller.get_status()
            async with aclosing(seller.events(last_event_id=seller_status.last_event_id,
                                              reconnect=True)) as seller_events:
                offer = await buyer.make_offer(seller_id, listing.id, price)
                await _wait_event(seller_events, lambda e: e.type == "offer.changed"
                                  and e.data["offer"] == offer.id)
            await seller.accept_offer(offer.id)
            opened = await _wait_event(buyer_events, lambda e: e.type == "order.changed"
                                       and e.data["kind"] == "opened")
        order_id = str(opened.data["order"])
        await buyer.send_address(order_id, "Erika Mustermann\nHauptstr. 5\n10115 Berlin")

        async def seller_state(*states: str) -> bool:
            return (await seller.get_order(order_id)).state in states

        await _until(lambda: seller_state("awaiting_payment"))

        # escrow: the buyer's node proposes, all three agree, the buyer's wallet pays
        await buyer.fund_escrow(order_id)

        async def escrow_paid() -> bool:
            esc = await buyer.get_escrow(order_id)
            if esc.address is None:
                return False
            utxos = await chain("GET", f"/address/{esc.address}/utxo")
            return sum(int(u["value"]) for u in utxos) == price

        await _until(escrow_paid)
        escrow_address = (await buyer.get_escrow(order_id)).address
        assert escrow_address is not None
        await chain("POST", "/devchain/mine", {"blocks": 1})

        async def seller_sees_funded() -> bool:
            return (await seller.get_escrow(order_id)).state in ("funded", "shipped")

        await _until(seller_sees_funded)

        await seller.ship_order(order_id, "DHL", "JJD0001234")

        async def buyer_state(*states: str) -> bool:
            return (await buyer.get_order(order_id)).state in states

        await _until(lambda: buyer_state("shipped"))
        await buyer.confirm_received(order_id, "arrived, thanks")
        # confirming receipt of an escrowed order has the buyer's node sign the release
        # itself; the explicit release then finds it signed (409), which is fine
        try:
            await buyer.release_escrow(order_id)
        except ApiError as exc:
            assert exc.status == 409 and "already signed the release" in str(exc), exc

        async def released() -> bool:
            return (await seller.get_escrow(order_id)).state == "released"

        await _until(released)
        await chain("POST", "/devchain/mine", {"blocks": 1})

        async def seller_paid() -> bool:
            return (await seller.get_wallet()).confirmed_sat > seller_start

        await _until(seller_paid)
        await _until(lambda: buyer_state("completed", "received"))
        review = await buyer.review_order(order_id, 5, "friendly seller, fast shipping")

        escrow_utxos = await chain("GET", f"/address/{escrow_address}/utxo")
        return {"order": await buyer.get_order(order_id), "review": review,
                "buyer": (await buyer.get_wallet()).confirmed_sat, "buyer_start": buyer_start,
                "seller": (await seller.get_wallet()).confirmed_sat,
                "seller_start": seller_start, "price": price, "escrow_utxos": escrow_utxos,
                "info": await chain("GET", "/devchain/info")}


def _start_devnet(root: Path, out: Path, env: dict[str, str], *extra: str
                  ) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "p2pmarket", "devnet", "--no-tui", "--dir", str(root),
             *extra], env=env, stdin=subprocess.DEVNULL, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True)


def _stop_devnet(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_devnet_trade_and_clean_stop(tmp_path: Path) -> None:
    root = tmp_path / "devnet"
    out = tmp_path / "devnet.out"
    env = base_env(tmp_path / "home")
    proc = _start_devnet(root, out, env)
    children: set[int] = set()
    try:
        text = _wait_for_line(proc, out, r"devnet ready")
        for name in ("seller", "buyer", "arbiter"):
            assert re.search(rf"^{name}\s+http://127\.0\.0\.1:\d+\s+cookie {root / name}/api"
                             r"\.cookie", text, re.M), text
        chain_url = re.search(r"^devchain\s+(http://\S+)", text, re.M)
        assert chain_url is not None
        children = _pids_under(root, exclude=proc.pid)
        assert len(children) >= 5  # devchain, bootstrap, seller, buyer, arbiter

        result = asyncio.run(_trade(root, chain_url.group(1)))
        price = result["price"]
        assert result["review"].rating == 5
        assert result["escrow_utxos"] == []  # the escrow output was spent by the release
        # the buyer paid the price plus the funding fee; the seller got it less fees
        assert result["buyer_start"] - result["buyer"] >= price
        gained = result["seller"] - result["seller_start"]
        assert price * 0.9 < gained < price, gained
        assert result["info"]["height"] > 0
    finally:
        code = _stop_devnet(proc)
    assert code == 0, out.read_text()
    assert "devnet stopped" in out.read_text()
    left = {pid for pid in children if _alive(pid)} | _pids_under(root)
    assert not left, f"processes left behind: {left}"

    # a rerun resumes: same identities, no second seed, an extra seller joins empty-handed
    again = tmp_path / "again.out"
    proc = _start_devnet(root, again, env, "--nodes", "1")
    try:
        text = _wait_for_line(proc, again, r"devnet ready")
    finally:
        assert _stop_devnet(proc) == 0
    assert "creating 1 node identity" in text  # only seller2 is new
    assert "sample listings already there" in text and "wallet has" in text
    assert not _pids_under(root)
