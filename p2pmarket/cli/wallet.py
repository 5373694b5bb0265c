"""`p2pmarket wallet balance | address | send | history | backup`: the node wallet through the
running node's API (`backup` reads the keystore instead, after its passphrase).

`send` previews the payment (amount, fee, total, destination), asks y/N in a terminal unless
`--yes`, then sends with the previewed fee as the most the node may spend and a fresh
idempotency key (printed, so a lost answer can be retried with `--key`).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from p2pmarket.cli.api_verbs import out, run
from p2pmarket.cli.common import CliError, in_terminal, require_initialised, unlock
from p2pmarket.datadir import resolve_datadir

if TYPE_CHECKING:
    from p2pmarket.api.wallet import SendPreviewOut, WalletTxOut

SAT_PER_BTC = 100_000_000


def btc(sats: int) -> str:
    return f"{Decimal(sats).scaleb(-8):.8f} BTC"


def parse_amount(text: str) -> int | None:
    """Sats: `150000`, `0.0015btc`; None for `all` (everything confirmed, less the fee)."""
    raw = text.strip().lower()
    if raw == "all":
        return None
    try:
        if raw.endswith("btc"):
            value = Decimal(raw[:-3]) * SAT_PER_BTC
        elif raw.endswith("sat"):
            value = Decimal(raw[:-3])
        else:
            value = Decimal(raw)
    except InvalidOperation:
        raise CliError(f"{text!r} is not an amount: give sats (150000), BTC (0.0015btc) or "
                       "all") from None
    if value != value.to_integral_value() or value <= 0:
        raise CliError(f"{text}: not a whole, positive number of sats")
    return int(value)


def ago(when: float | None) -> str:
    if when is None:
        return "not synced yet"
    return f"synced {max(0, int(time.time() - when))}s ago"


def cmd_balance(args: argparse.Namespace, _h: object) -> int:
    wallet = run(args, lambda c: c.get_wallet(refresh=args.refresh))
    if args.json:
        out(wallet)
        return 0
    print(f"{wallet.confirmed_sat} sat confirmed ({btc(wallet.confirmed_sat)}), "
          f"{wallet.pending_sat} sat pending  [{wallet.network}, {ago(wallet.synced_at)}]")
    if wallet.sync_error:
        print(f"p2pmarket: warning: the last sync failed: {wallet.sync_error}", file=sys.stderr)
    return 0


def cmd_address(args: argparse.Namespace, _h: object) -> int:
    address = run(args, lambda c: c.new_receive_address())
    if args.json:
        out(address)
    else:
        print(address.address)
    return 0


def preview_lines(p: SendPreviewOut) -> list[str]:
    return [f"pay    {p.amount_sat} sat ({btc(p.amount_sat)})"
            + ("  (everything confirmed, less the fee)" if p.sweep else ""),
            f"to     {p.address}  [{p.network}]",
            f"fee    {p.fee_sat} sat ({p.fee_rate_sat_vb} sat/vB, {p.vsize} vB)",
            f"total  {p.total_sat} sat leaves the wallet ({btc(p.total_sat)}); "
            f"{p.change_sat} sat change comes back"]


def confirm(question: str, *, prompt: Callable[[str], str] = input) -> bool:
    try:
        return prompt(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_send(args: argparse.Namespace, _h: object) -> int:
    amount = parse_amount(args.amount)
    if not args.yes and not in_terminal():
        raise CliError("wallet send asks for confirmation in a terminal; pass --yes to send "
                       "without asking (after checking the amount and address)")
    preview = run(args, lambda c: c.preview_wallet_send(
        args.address, amount, sweep=amount is None, fee_rate_sat_vb=args.fee_rate,
        idempotency_key=args.key))
    for line in preview_lines(preview):
        print(line, file=sys.stderr)
    if preview.sent_txid is not None:
        print(f"p2pmarket: already sent with key {args.key} in {preview.sent_txid}",
              file=sys.stderr)
    elif not args.yes and not confirm("Send? [y/N] "):
        print("p2pmarket: nothing sent", file=sys.stderr)
        return 1
    key = args.key or f"cli-{uuid.uuid4().hex}"
    sent = run(args, lambda c: c.send_from_wallet(
        args.address, preview.amount_sat, max_fee_sat=preview.fee_sat,
        fee_rate_sat_vb=args.fee_rate, idempotency_key=key))
    if args.json:
        out(sent)
        return 0
    print(sent.txid)
    again = " (already sent with this key: nothing new was paid)" if sent.replayed else ""
    print(f"p2pmarket: sent {sent.amount_sat} sat to {sent.address}, fee {sent.fee_sat} sat"
          f"{again}; idempotency key {key}", file=sys.stderr)
    return 0


def tx_line(t: WalletTxOut) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(t.time)) if t.time else "?"
    confs = f"{t.confirmations} conf" if t.height is not None else "unconfirmed"
    fee = f"fee {t.fee_sat}" if t.fee_sat is not None else ""
    return (f"{when}  {t.direction:<3} {t.net_sat:>+14} sat  {fee:<10} {confs:<12} {t.txid}"
            + (f"  to {t.address}" if t.address else ""))


def cmd_history(args: argparse.Namespace, _h: object) -> int:
    page = run(args, lambda c: c.list_wallet_transactions(page_size=args.limit))
    if args.json:
        out(page)
        return 0
    for t in page.items:
        print(tx_line(t))
    if not page.items:
        print("no transactions yet (p2pmarket wallet address: where to receive)",
              file=sys.stderr)
    return 0


def cmd_backup(args: argparse.Namespace, _h: object) -> int:
    """The 24 words, after the keystore's passphrase (asked, or $P2PMARKET_PASSPHRASE)."""
    from p2pmarket.cli.keys import print_words

    datadir = resolve_datadir(args.datadir)
    require_initialised(datadir)
    keystore, passphrase = unlock(datadir)  # refuses a protected keystore without it
    if passphrase is None:
        print("p2pmarket: warning: this keystore has no passphrase: anyone who can read the "
              "data dir can read these words", file=sys.stderr)
    print_words(keystore)
    print("p2pmarket: the wallet is BIP84 (wpkh) at m/84'/0'/0' (mainnet) or m/84'/1'/0' "
          "(test networks) of these words, without a BIP39 passphrase; they also restore "
          "the node (`p2pmarket restore`)", file=sys.stderr)
    return 0


def add_verbs(verbs: Any, add_datadir: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `wallet ACTION` on the `p2pmarket` sub-command parser."""
    wallet = verbs.add_parser("wallet", help="the node wallet: balance, address, send, "
                                             "history, backup")
    actions = wallet.add_subparsers(dest="wallet_command", metavar="ACTION", required=True)

    def verb(name: str, help: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help)
        add_datadir(p)
        if name != "backup":
            p.add_argument("--json", action="store_true", help="print the API's JSON answer")
        p.set_defaults(func=func)
        return p

    b = verb("balance", "confirmed and pending sats, as of the node's last sync", cmd_balance)
    b.add_argument("--refresh", action="store_true", help="ask the node to sync first")
    verb("address", "a fresh address to receive funds", cmd_address)
    s = verb("send", "pay from the wallet (shows amount, fee and total first)", cmd_send)
    s.add_argument("address", metavar="ADDRESS")
    s.add_argument("amount", metavar="AMOUNT", help="sats (150000), BTC (0.0015btc) or all")
    s.add_argument("--fee-rate", type=int, metavar="R", help="sat/vB (default: the chain's "
                                                              "estimate)")
    s.add_argument("--yes", action="store_true", help="send without asking")
    s.add_argument("--key", metavar="KEY", help="idempotency key: repeat a send whose answer "
                                                "was lost without paying twice")
    h = verb("history", "the wallet's transactions, newest first", cmd_history)
    h.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    verb("backup", "print the 24 recovery words (after the keystore passphrase)", cmd_backup)
