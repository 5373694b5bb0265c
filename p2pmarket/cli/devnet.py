"""`p2pmarket devnet`: a whole local market on loopback, as separate processes.

    <dir>/devchain     the regtest chain (Esplora API, faucet, a block every few seconds)
    <dir>/bootstrap    the DHT entry point (`p2pmarket bootstrap`)
    <dir>/seller, buyer, arbiter, seller2..  market nodes (`p2pmarket run`) with escrow on
    <dir>/logs/*.log   each process's output;  <dir>/devnet.json  ports and what was seeded

The first run creates the identities (no passphrase: development only), funds the buyer from the
faucet and seeds sample listings (`devnet_seed`); a rerun with the same dir reuses all of it.
Every child runs in its own process group; SIGINT/SIGTERM/SIGHUP stops them all and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from p2pmarket.cli.common import CliError, is_initialised
from p2pmarket.cli.devnet_seed import SAMPLES, listing_fields, png
from p2pmarket.client import Client
from p2pmarket.datadir import DataDirLock

log = logging.getLogger(__name__)
PROFILE_VERSION = 2  # 2: profiles carry a location
HOME = {"country": "DE", "geohash": "u33db"}  # Berlin, where the devnet's people live

STATE_FILE = "devnet.json"
LOG_DIR = "logs"
DEVNET_KEEP_MB = 256
BLOCK_INTERVAL = 5.0  # seconds: escrow funding confirms without anyone mining by hand
BUYER_FUNDS = 10_000_000  # sats from the faucet on the first run
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
ARBITER_NAME = "Devnet Arbiter"

Say = Callable[[str], None]


@dataclass
class NodeSpec:
    name: str
    datadir: Path
    ports: dict[str, int] = field(default_factory=dict)  # dht, p2p, api


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path


class DevnetError(CliError):
    """The devnet could not start (a child died, or did not come up in time)."""


# -- ports and state --------------------------------------------------------------------------


def _port_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_KINDS = {"dht": socket.SOCK_DGRAM, "p2p": socket.SOCK_STREAM, "api": socket.SOCK_STREAM,
          "chain": socket.SOCK_STREAM, "metrics": socket.SOCK_STREAM}


def _pick_ports(saved: dict[str, int], wanted: tuple[str, ...], taken: set[int]) -> dict[str, int]:
    """The saved ports where still free (stable URLs across runs), else fresh ones."""
    ports: dict[str, int] = {}
    for name in wanted:
        kind = _KINDS[name]
        port = saved.get(name, 0)
        if not port or port in taken or not _port_free(port, kind):
            port = _free_port(kind)
            while port in taken:
                port = _free_port(kind)
        taken.add(port)
        ports[name] = port
    return ports


def _child_env(esplora_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("P2PMARKET_") or k == "P2PMARKET_TEST_FAST_KDF"}
    env["P2PMARKET_ESPLORA_URL"] = esplora_url
    env["P2PMARKET_NETWORK"] = "regtest"
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- the devnet -------------------------------------------------------------------------------


class Devnet:
    def __init__(self, root: Path, extra_sellers: int, say: Say) -> None:
        self.root = root
        self.say = say
        self.logs = root / LOG_DIR
        self.state: dict[str, Any] = {}
        names = ["seller", "buyer", "arbiter"] + [f"seller{i + 2}" for i in range(extra_sellers)]
        self.nodes = [NodeSpec(n, root / n) for n in names]
        self.bootstrap_dir = root / "bootstrap"
        self.chain_dir = root / "devchain"
        self.children: list[Child] = []
        self.chain_url = ""
        self.boot_port = 0
        self.metrics_port = 0
        self.peer_ids: dict[str, str] = {}
        self.api_urls: dict[str, str] = {}

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    @property
    def sellers(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.name.startswith("seller")]

    # -- state file ---------------------------------------------------------------------------

    def _load_state(self) -> None:
        try:
            loaded = json.loads((self.root / STATE_FILE).read_text())
            self.state = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            self.state = {}

    def _save_state(self) -> None:
        path = self.root / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True))
        tmp.replace(path)

    # -- processes ----------------------------------------------------------------------------

    async def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} devnet starts {name}\n"
                      .encode())
            out.flush()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "p2pmarket", *args, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)  # its own process group: no stray Ctrl-C, killpg
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    async def _init(self, datadir: Path, env: dict[str, str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2pmarket", "init", "--no-show-mnemonic",
            "--datadir", str(datadir), "--insecure-no-passphrase", env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
        try:
            _, err = await proc.communicate()
        except asyncio.CancelledError:  # Ctrl-C while starting: leave nothing running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise DevnetError(f"p2pmarket init {datadir} failed: {err.decode().strip()}")

    def _check_alive(self, child: Child) -> None:
        if child.proc.returncode is not None:
            raise DevnetError(f"{child.name} exited with code {child.proc.returncode}; "
                              f"its log ({child.log_path}) ends with:\n{_tail(child.log_path)}")

    async def _until_http(self, child: Child, url: str, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive(child)
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise DevnetError(f"{child.name} did not answer on {url} within {START_TIMEOUT:.0f} s")

    async def _until_node_ready(self, spec: NodeSpec, child: Child) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        url_file = spec.datadir / "api.url"
        while time.monotonic() < deadline:
            self._check_alive(child)
            if url_file.exists() and (spec.datadir / "api.cookie").exists():
                with contextlib.suppress(Exception):
                    async with Client.from_datadir(spec.datadir, timeout=5) as api:
                        status = await api.get_status()
                        if status.state == "running" and status.dht is not None \
                                and status.dht.bootstrapped and status.peer_id:
                            self.peer_ids[spec.name] = status.peer_id
                            self.api_urls[spec.name] = url_file.read_text().strip()
                            return
            await asyncio.sleep(0.15)
        raise DevnetError(f"{spec.name} was not ready within {START_TIMEOUT:.0f} s; its log "
                          f"({child.log_path}) ends with:\n{_tail(child.log_path)}")

    async def stop(self) -> None:
        """Stop every child: market nodes first, then bootstrap and devchain; wait for each."""
        infra = {"devchain", "bootstrap"}
        for group in ([c for c in self.children if c.name not in infra],
                      [c for c in self.children if c.name in infra]):
            await asyncio.gather(*(_stop_child(c) for c in group))
        self.children.clear()

    # -- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        t0 = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        self._load_state()
        ports: dict[str, dict[str, int]] = self.state.get("ports", {})
        taken: set[int] = set()
        infra = _pick_ports(ports.get("infra", {}), ("chain", "dht", "metrics"), taken)
        for spec in self.nodes:
            spec.ports = _pick_ports(ports.get(spec.name, {}), ("dht", "p2p", "api"), taken)
        self.state["ports"] = {"infra": infra} | {n.name: n.ports for n in self.nodes}
        self._save_state()
        self.chain_url = f"http://127.0.0.1:{infra['chain']}"
        self.boot_port, self.metrics_port = infra["dht"], infra["metrics"]
        env = _child_env(self.chain_url)

        fresh = [d for d in [self.bootstrap_dir, *(n.datadir for n in self.nodes)]
                 if not is_initialised(d)]
        if fresh:
            self.say(f"creating {len(fresh)} node identit{'y' if len(fresh) == 1 else 'ies'}"
                     " (no passphrase: development only) ...")
            await asyncio.gather(*(self._init(d, env) for d in fresh))

        self.say(f"starting the devchain ({self.chain_url}) and the bootstrap node "
                 f"(DHT 127.0.0.1:{self.boot_port}) ...")
        chain = await self._spawn("devchain", [
            "devchain", "--datadir", str(self.chain_dir), "--port", str(infra["chain"]),
            "--block-interval", str(BLOCK_INTERVAL)], env)
        boot = await self._spawn("bootstrap", [
            "bootstrap", "--datadir", str(self.bootstrap_dir), "--dht-host", "127.0.0.1",
            "--dht-port", str(self.boot_port), "--metrics-port", str(self.metrics_port)], env)
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(
                self._until_http(chain, f"{self.chain_url}/devchain/info", http),
                self._until_http(boot, f"http://127.0.0.1:{self.metrics_port}/healthz", http))

        self.say(f"starting {len(self.nodes)} market nodes: "
                 f"{', '.join(n.name for n in self.nodes)} ...")
        started: list[tuple[NodeSpec, Child]] = []
        for spec in self.nodes:
            for stale in ("api.url", "api.cookie"):  # wait for this run's, not the last one's
                (spec.datadir / stale).unlink(missing_ok=True)
            started.append((spec, await self._spawn(spec.name, [
                "run", "--datadir", str(spec.datadir), "--dht-host", "127.0.0.1",
                "--dht-port", str(spec.ports["dht"]), "--p2p-host", "127.0.0.1",
                "--p2p-port", str(spec.ports["p2p"]), "--api-port", str(spec.ports["api"]),
                "--bootstrap", f"127.0.0.1:{self.boot_port}",
                # the arbiter also keeps sellers' images, so they show with a seller stopped
                *(["--keep-images", str(DEVNET_KEEP_MB)] if spec.name == "arbiter" else [])],
                env)))
        await asyncio.gather(*(self._until_node_ready(s, c) for s, c in started))
        self.say(f"nodes up after {time.monotonic() - t0:.1f} s")

        self.say("arbiter: publishing its advert ...")
        await publish_arbiter_advert(self.node("arbiter").datadir)
        await self._fund_buyer()
        await self._seed()
        self.say(f"ready after {time.monotonic() - t0:.1f} s")

    async def _fund_buyer(self) -> None:
        async with Client.from_datadir(self.node("buyer").datadir, timeout=30) as buyer:
            wallet = await buyer.get_wallet(refresh=True)
            have = wallet.confirmed_sat
            if have >= BUYER_FUNDS // 10:
                self.say(f"buyer: wallet has {have} sats")
                return
            address = (await buyer.new_receive_address()).address
            self.say(f"buyer: funding {BUYER_FUNDS} sats from the faucet to {address} ...")
            async with aiohttp.ClientSession() as http, http.post(
                    f"{self.chain_url}/devchain/faucet",
                    json={"address": address, "sats": BUYER_FUNDS, "confirm": True}) as resp:
                if resp.status != 200:
                    raise DevnetError(f"the faucet answered {resp.status}: {await resp.text()}")
            # the node's wallet syncs on its own schedule (often while an address is fresh);
            # wait until it has seen the coins, so the buyer's screens show them from the start
            async with asyncio.timeout(60):
                while True:  # another process: polled
                    if (await buyer.get_wallet(refresh=True)).confirmed_sat >= BUYER_FUNDS:
                        break
                    await asyncio.sleep(0.5)

    async def _seed(self) -> None:
        arbiter = self.peer_ids["arbiter"]
        await self._profile("arbiter", ARBITER_NAME, "Rules on devnet disputes within a day.")
        await self._profile("buyer", "Devnet Buyer", "Buys things on the devnet.")
        sellers = self.sellers
        have: set[str] = set()  # titles on any seller: a rerun with more sellers adds none
        for spec in sellers:
            async with Client.from_datadir(spec.datadir, timeout=30) as api:
                have |= {item.title async for item in api.pages(api.list_my_listings)}
        created = 0
        for n, spec in enumerate(sellers):
            todo = [(i, s) for i, s in enumerate(SAMPLES)
                    if i % len(sellers) == n and s.title not in have]
            async with Client.from_datadir(spec.datadir, timeout=30) as api:
                await self._profile(spec.name, f"Devnet {spec.name.title()}",
                                    "Sample listings for the devnet.", api)
                for i, sample in todo:
                    ref = await api.upload_image(png(sample.color), "image/png")
                    image = msgspec.to_builtins(ref)
                    await api.create_listing(listing_fields(i, sample, image, arbiter))
            created += len(todo)
        self.state["seeded"] = len(SAMPLES)
        self._save_state()
        if created:
            self.say(f"seeded {created} sample listings across {len(sellers)} seller(s)")
        else:
            self.say(f"sample listings already there ({len(SAMPLES)})")

    async def _profile(self, name: str, display: str, bio: str,
                       api: Client | None = None) -> None:
        """Publish the node's profile once (again when PROFILE_VERSION changes); every node
        lives in Berlin, so "near me" searches work in the TUI from the start."""
        profiles: dict[str, int] = self.state.setdefault("profiles", {})
        if profiles.get(name) == PROFILE_VERSION:
            return
        fields = {"name": display, "bio": bio, "location": HOME}
        if api is not None:
            await api.put_my_profile(fields)
        else:
            async with Client.from_datadir(self.node(name).datadir, timeout=30) as own:
                await own.put_my_profile(fields)
        profiles[name] = PROFILE_VERSION
        self._save_state()

    def summary(self) -> list[str]:
        lines = [f"devchain   {self.chain_url}  (faucet: POST {self.chain_url}/devchain/faucet,"
                 f" mine: POST {self.chain_url}/devchain/mine)",
                 f"bootstrap  DHT 127.0.0.1:{self.boot_port}, health "
                 f"http://127.0.0.1:{self.metrics_port}/healthz"]
        for spec in self.nodes:
            lines.append(f"{spec.name:<10} {self.api_urls.get(spec.name, '?')}  cookie "
                         f"{spec.datadir / 'api.cookie'}  peer {self.peer_ids.get(spec.name)}")
        lines.append(f"logs in {self.logs}; try: p2pmarket search --datadir "
                     f"{self.node('buyer').datadir} bike")
        return lines


async def _stop_child(child: Child) -> None:
    proc = child.proc
    pgid = proc.pid  # start_new_session: the child leads its own group
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s; killing it", child.name, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            await proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)  # anything the child left behind in its group


async def publish_arbiter_advert(datadir: Path) -> None:
    """The arbiter node publishes its advert itself (`PUT /arbiter`): signed with its key,
    kept in its node.db, put in the DHT and republished by the node."""
    from p2pmarket.api.schemas_trade import ArbiterFields

    async with Client.from_datadir(datadir, timeout=30) as arbiter:
        await arbiter.publish_arbiter_advert(ArbiterFields(
            name=ARBITER_NAME, description="Devnet arbiter: English, German. Rules within a day.",
            fee_percent_bp=100, fee_fixed_sat=500))


# -- entry point ------------------------------------------------------------------------------


async def run_devnet(root: Path, *, extra_sellers: int, tui: bool, say: Say, out: Say) -> int:
    """Start the devnet in `root`, then run the TUI on the buyer (`tui`) or wait for a signal;
    stop every child on the way out. `say` shows progress, `out` the summary."""
    with DataDirLock(root):  # the caller creates `root`
        net = Devnet(root, extra_sellers, say)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # SIGHUP too: closing the terminal must not leave the market running in the background
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        try:
            if not await _until_stopped(net.start(), stop):
                say("interrupted while starting")
                return 130
            for line in net.summary():
                out(line)
            out("p2pmarket: devnet ready")
            if tui:
                code = await _run_tui(net.node("buyer").datadir, _child_env(net.chain_url), stop)
                say("TUI closed" if code is not None else "signal received")
            else:
                say("running; press Ctrl-C to stop")
                await stop.wait()
            return 0
        finally:
            # the terminal may be gone (SIGHUP): a failed write must not skip the stop
            with contextlib.suppress(OSError):
                say("stopping the devnet ...")
            await net.stop()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            with contextlib.suppress(OSError):
                say("devnet stopped")


async def _until_stopped(start: Any, stop: asyncio.Event) -> bool:
    """Run `start`; False when `stop` is set first (the start is cancelled)."""
    task: asyncio.Task[None] = asyncio.ensure_future(start)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        task.result()  # raises the start's error
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def _run_tui(datadir: Path, env: dict[str, str], stop: asyncio.Event) -> int | None:
    """The TUI in the foreground (it owns the terminal); its exit code, or None on a signal."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pmarket", "tui", "--datadir", str(datadir), env=env)
    waiter = asyncio.ensure_future(proc.wait())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if waiter.done():
        return waiter.result()
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(waiter, STOP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    return None
