"""`p2pmarket wallet ...`: send (preview, then --yes) against a node on the devchain, and
`wallet backup` showing the 24 words only after the keystore's passphrase."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from mnemonic import Mnemonic

from escrow.bitcoin import HotWallet
from p2pmarket.cli.main import main
from tests.support.api import served
from tests.support.escrow_world import escrow_world
from tests.support.processes import base_env

pytestmark = pytest.mark.timeout(120)


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in a thread (it runs its own event loop), with what it printed."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    printed = capsys.readouterr()
    return code, printed.out, printed.err


async def test_wallet_send_balance_and_history(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    async with escrow_world(tmp_path) as world:
        buyer = await world.start("buyer")
        buyer.escrow.funds.refresh_every = 0
        async with served(buyer):
            d = ("--datadir", str(buyer.datadir))
            code, address, _ = await cli(capsys, "wallet", "address", *d)
            assert code == 0 and address.strip().startswith("bcrt1")
            await world.devchain.faucet(address.strip(), 300_000)
            code, balance, _ = await cli(capsys, "wallet", "balance", "--refresh", *d)
            assert code == 0 and "300000 sat confirmed" in balance

            to = HotWallet(Mnemonic("english").generate(128), "regtest").receive_address()
            code, _, err = await cli(capsys, "wallet", "send", to, "0.001btc", *d)
            assert code == 1 and "--yes" in err  # no terminal to ask in
            assert world.devchain.balance_of(to) == 0

            code, txid, err = await cli(capsys, "wallet", "send", to, "100000", "--yes", *d)
            assert code == 0, err
            assert "pay    100000 sat" in err and f"to     {to}" in err
            assert "fee    " in err and "total  " in err
            assert world.devchain.balance_of(to) == 100_000
            key = err.split("idempotency key ")[-1].strip()
            code, again, err = await cli(capsys, "wallet", "send", to, "100000", "--yes",
                                         "--key", key, *d)
            assert code == 0 and again == txid and "nothing new was paid" in err
            assert world.devchain.balance_of(to) == 100_000

            code, _, err = await cli(capsys, "wallet", "send", to, "all", "--yes", *d)
            assert code == 1 and "do not cover it" in err  # the change is unconfirmed
            code, history, _ = await cli(capsys, "wallet", "history", *d)
            assert code == 0 and txid.strip() in history and f"to {to}" in history


def test_wallet_backup_needs_the_passphrase(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    datadir = str(tmp_path / "node")

    def run(*args: str, extra: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "p2pmarket", *args, "--datadir", datadir],
                              env=env | (extra or {}), capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    made = run("init", "--no-show-mnemonic", extra={"P2PMARKET_PASSPHRASE": "hunter22"})
    assert made.returncode == 0, made.stderr
    refused = run("wallet", "backup")  # a script without the passphrase
    assert refused.returncode == 1 and refused.stdout == ""
    assert "P2PMARKET_PASSPHRASE" in refused.stderr
    wrong = run("wallet", "backup", extra={"P2PMARKET_PASSPHRASE": "nope"})
    assert wrong.returncode == 2 and wrong.stdout == ""
    shown = run("wallet", "backup", extra={"P2PMARKET_PASSPHRASE": "hunter22"})
    assert shown.returncode == 0 and len(shown.stdout.split()) == 24
    assert "m/84'" in shown.stderr
