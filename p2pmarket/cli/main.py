"""The `p2pmarket` command: `init`, `id` and `run` a node's data dir; the verbs that use the
running node's API (`status`, `search`, `listing`, `offer`, `orders`) live in `api_verbs`.

Only the core is imported here at module level; node/, dht/, escrow/ and tui/ are imported
inside the verb that needs them, so `--help`, `init` and `id` work without the heavy stack.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from p2pmarket import __version__
from p2pmarket.backup import BackupError
from p2pmarket.cli.api_verbs import add_verbs as add_api_verbs
from p2pmarket.cli.common import (
    CliError,
    install_stderr_logging,
    is_initialised,
    kdf_params,
    keystore_path,
    new_passphrase,
    read_peer_id,
    remove_handler,
    require_initialised,
    setup_node_logging,
    unlock_keystore,
    write_peer_id,
)
from p2pmarket.cli.keys import add_verbs as add_key_verbs
from p2pmarket.cli.keys import check_can_show, words_for_init
from p2pmarket.cli.wallet import add_verbs as add_wallet_verbs
from p2pmarket.config import Config, ConfigError, load_config, write_default_config
from p2pmarket.datadir import (
    CONFIG_FILE,
    DB_FILE,
    HOME_ENV,
    DataDirLock,
    DataDirLocked,
    ensure_datadir,
    resolve_datadir,
)
from p2pmarket.keystore import Keystore, KeystoreError, WrongPassphrase, create_keystore
from p2pmarket.storage import Database, StorageError

log = logging.getLogger("p2pmarket.cli.main")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's code for bad usage; also a wrong passphrase
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace, logging.Handler], int]
RunNode = Callable[[Path, Config, Keystore], int]


def _err(message: str) -> None:
    print(f"p2pmarket: error: {message}", file=sys.stderr)


# -- verbs ------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, _stderr: logging.Handler) -> int:
    datadir = resolve_datadir(args.datadir)
    if is_initialised(datadir):
        # checked before the lock and the prompt so a repeated init touches nothing at all
        raise CliError(f"data dir {datadir} is already initialised; not touching it")
    check_can_show(args.no_show_mnemonic)  # before the passphrase prompt: fail early
    passphrase = new_passphrase(insecure=args.insecure_no_passphrase)
    words = words_for_init(args.no_show_mnemonic)  # shown and confirmed before any write
    ensure_datadir(datadir)
    with DataDirLock(datadir):
        if is_initialised(datadir):
            raise CliError(f"data dir {datadir} is already initialised; not touching it")
        # config and db first: if the keystore cannot be written, a second init still works,
        # and a keystore is never left without the files `run` needs next to it
        config_path = datadir / CONFIG_FILE
        if config_path.exists():
            print(f"p2pmarket: keeping the existing {config_path}", file=sys.stderr)
        else:
            write_default_config(config_path)
        Database.open(datadir / DB_FILE).close()
        keystore = create_keystore(keystore_path(datadir), passphrase, kdf_params=kdf_params(),
                                   mnemonic=words)
        peer_id = keystore.identity.peer_id
        try:
            write_peer_id(datadir, peer_id)
        except OSError as exc:  # a cache of the public id; `id` falls back to the keystore
            log.warning("could not write the peer id file: %s", exc)
    print(peer_id, flush=True)
    print(f"p2pmarket: initialised {datadir}", file=sys.stderr)
    if args.no_show_mnemonic:
        print("p2pmarket: the 24 recovery words were not shown: keep a backup "
              f"(`p2pmarket backup --words --datadir {datadir}` or `--out FILE`)",
              file=sys.stderr)
    print(f"p2pmarket: start the node with: p2pmarket run --datadir {datadir}", file=sys.stderr)
    return EXIT_OK


def cmd_id(args: argparse.Namespace, _stderr: logging.Handler) -> int:
    datadir = resolve_datadir(args.datadir)
    require_initialised(datadir)
    peer_id = read_peer_id(datadir)
    if peer_id is None:
        peer_id = unlock_keystore(datadir).identity.peer_id
    print(peer_id)
    return EXIT_OK


_RUN_FLAGS = ("dht_host", "dht_port", "p2p_host", "p2p_port", "api_port", "bootstrap", "relay_via",
              "keep_images_mb", "log_level")


def cmd_run(args: argparse.Namespace, stderr: logging.Handler) -> int:
    datadir = resolve_datadir(args.datadir)
    require_initialised(datadir)
    flags = {name: getattr(args, name) for name in _RUN_FLAGS}
    # load_config logs its warnings itself; the CLI's stderr handler shows them
    config, warnings = load_config(datadir, cli={k: v for k, v in flags.items() if v is not None})
    with DataDirLock(datadir):
        keystore = unlock_keystore(datadir)
        file_handler = setup_node_logging(datadir, config.log_level, stderr, warnings)
        try:
            if keystore.insecure:
                log.warning("this node's keystore has no passphrase (created for development)")
            log.info("starting node %s from %s", keystore.identity.peer_id, datadir)
            return _load_run_node()(datadir, config, keystore)
        finally:
            remove_handler(file_handler)


def _load_run_node() -> RunNode:
    # importlib rather than an import statement: the node stack loads only for `run`, and
    # mypy's strict check of the core does not descend into node/
    try:
        module = importlib.import_module("node.runner")
    except ModuleNotFoundError as exc:
        if exc.name not in ("node", "node.runner"):
            raise
        raise CliError("this installation has no node runtime (node.runner)") from None
    return cast(RunNode, module.run_node)


def cmd_devchain(args: argparse.Namespace, _stderr: logging.Handler) -> int:
    """A loopback regtest chain (Esplora API, faucet, mining) for development and tests."""
    datadir = Path(args.datadir) if args.datadir else resolve_datadir(None) / "devchain"
    if args.block_interval is not None and args.block_interval <= 0:
        raise CliError("--block-interval must be a positive number of seconds")
    # bdk and pbk load only for this verb
    module = importlib.import_module("escrow.devchain.server")

    def ready(chain: object) -> None:
        url = getattr(chain, "url", "")
        print(url, flush=True)
        print(f"p2pmarket: devchain ready (data in {datadir}); faucet: POST {url}/devchain/faucet "
              '{"address", "sats"}; mine: POST ' + f"{url}/devchain/mine", file=sys.stderr)

    policy = None
    if args.policy:  # Bitcoin Core's relay defaults: 1 sat/vB, dust, RBF, 14-day expiry
        policy = importlib.import_module("escrow.devchain.policy").RelayPolicy()
    asyncio.run(module.serve_devchain(datadir, "127.0.0.1", args.port, args.block_interval,
                                      on_ready=ready, policy=policy))
    return EXIT_OK


def cmd_bootstrap(args: argparse.Namespace, stderr: logging.Handler) -> int:
    """A lightweight DHT entry point for hobbyists: no wallet, health and metrics on loopback."""
    datadir = resolve_datadir(args.datadir)
    require_initialised(datadir)
    flags = {"dht_host": args.dht_host, "dht_port": args.dht_port, "p2p_port": args.p2p_port,
             "bootstrap": tuple(args.bootstrap) if args.bootstrap else None,
             "keep_images_mb": args.keep_images_mb, "log_level": args.log_level}
    config, warnings = load_config(datadir, cli={k: v for k, v in flags.items() if v is not None})
    if config.keep_images_mb and args.p2p_port is None:
        raise CliError("--keep-images needs --p2p-port (images travel over libp2p)")
    with DataDirLock(datadir):
        keystore = unlock_keystore(datadir)
        file_handler = setup_node_logging(datadir, config.log_level, stderr, warnings)
        try:
            module = importlib.import_module("node.bootstrap")
            code: int = module.run_bootstrap(datadir, config, keystore, args.metrics_port,
                                             relay=args.p2p_port is not None)
            return code
        finally:
            remove_handler(file_handler)


def _has_verb(name: str) -> bool:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return name in sub.choices


def cmd_devnet(args: argparse.Namespace, _stderr: logging.Handler) -> int:
    """A whole local market on loopback (devchain, bootstrap, seller, buyer, arbiter)."""
    if args.nodes < 0:
        raise CliError("--nodes must be 0 or more")
    root = Path(args.dir).expanduser().absolute() if args.dir else resolve_datadir(None) / "devnet"
    tui = not args.no_tui
    if tui and not _has_verb("tui"):
        print("p2pmarket: this installation has no `tui` verb; running without the TUI",
              file=sys.stderr)
        tui = False
    elif tui and not sys.stdin.isatty():
        print("p2pmarket: stdin is not a terminal; running without the TUI", file=sys.stderr)
        tui = False
    root.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module("p2pmarket.cli.devnet")  # node/, dht/ load only for this verb

    def say(line: str) -> None:
        print(f"p2pmarket: {line}", file=sys.stderr, flush=True)

    def out(line: str) -> None:
        print(line, flush=True)

    code: int = asyncio.run(module.run_devnet(root, extra_sellers=args.nodes, tui=tui, say=say,
                                              out=out))
    return code


def cmd_tui(args: argparse.Namespace, _stderr: logging.Handler) -> int:
    from tui.main import run_cli  # textual loads only for this verb

    return run_cli(args)


# -- parser -----------------------------------------------------------------------------------


def _add_datadir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--datadir",
        metavar="D",
        help=f"data dir (default: ${HOME_ENV}, else the platform's user data dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pmarket",
        description="A peer-to-peer marketplace node.",
        epilog="Passphrase: prompted in a terminal, or taken from $P2PMARKET_PASSPHRASE.",
    )
    parser.add_argument("--version", action="version", version=f"p2pmarket {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    init = verbs.add_parser("init", help="create a data dir: keystore, config.toml, node.db")
    _add_datadir(init)
    init.add_argument(
        "--insecure-no-passphrase",
        action="store_true",
        help="store the keys without a passphrase (development only)",
    )
    init.add_argument(
        "--no-show-mnemonic",
        action="store_true",
        help="do not show the 24 recovery words (scripts; then keep a backup: "
             "`p2pmarket backup --words` or `--out FILE`)",
    )
    init.set_defaults(func=cmd_init)

    ident = verbs.add_parser("id", help="print this node's peer id")
    _add_datadir(ident)
    ident.set_defaults(func=cmd_id)

    run = verbs.add_parser("run", help="run the node until SIGINT/SIGTERM")
    _add_datadir(run)
    run.add_argument("--dht-host", metavar="H", help="DHT (UDP) listen address")
    run.add_argument("--dht-port", metavar="P", type=int, help="DHT (UDP) port")
    run.add_argument("--p2p-host", metavar="H", help="libp2p (TCP) listen address")
    run.add_argument("--p2p-port", metavar="Q", type=int, help="libp2p (TCP) port")
    run.add_argument("--api-port", metavar="R", type=int, help="local HTTP API port")
    run.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        action="append",
        help="bootstrap peer; repeat for more (replaces the config's list)",
    )
    run.add_argument(
        "--relay-via",
        metavar="MULTIADDR",
        action="append",
        help="this node cannot accept connections: stay reachable through this circuit relay "
             "(/ip4/IP/tcp/PORT/p2p/RELAY_ID, e.g. a bootstrap node's); repeatable",
    )
    run.add_argument("--keep-images", dest="keep_images_mb", metavar="MB", type=int,
                     help="keep other sellers' listing images, up to MB of disk (default 0)")
    run.add_argument("--log-level", metavar="L", help="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    run.set_defaults(func=cmd_run)
    devchain = verbs.add_parser("devchain", help="run a loopback regtest chain (Esplora API)")
    devchain.add_argument("--datadir", metavar="D",
                          help="where devchain.db lives (default: <user data dir>/devchain)")
    devchain.add_argument("--port", metavar="P", type=int, default=3002,
                          help="HTTP port on 127.0.0.1 (default 3002; 0 picks a free one)")
    devchain.add_argument("--block-interval", metavar="S", type=float,
                          help="also mine a block every S seconds (default: only on demand)")
    devchain.add_argument("--policy", action="store_true",
                          help="relay like Bitcoin Core: min relay fee, dust, replace-by-fee, "
                               "mempool expiry (default: accept any valid transaction)")
    devchain.set_defaults(func=cmd_devchain)
    boot = verbs.add_parser("bootstrap", help="run a bootstrap node (DHT entry point, "
                                              "/healthz and /metrics on loopback)")
    _add_datadir(boot)
    boot.add_argument("--dht-host", metavar="H", help="DHT UDP address (default 0.0.0.0)")
    boot.add_argument("--dht-port", metavar="P", type=int, help="DHT UDP port (default 8468)")
    boot.add_argument("--p2p-port", metavar="Q", type=int,
                      help="serve the circuit relay (for peers behind NAT) on this TCP port")
    boot.add_argument("--keep-images", dest="keep_images_mb", metavar="MB", type=int,
                      help="also keep sellers' listing images (needs --p2p-port), up to MB "
                           "of disk")
    boot.add_argument("--metrics-port", metavar="M", type=int, default=9468,
                      help="/healthz and /metrics on 127.0.0.1:M (default 9468)")
    boot.add_argument("--bootstrap", metavar="HOST:PORT", action="append",
                      help="other bootstrap nodes to join (repeatable)")
    boot.add_argument("--log-level", metavar="L", help="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    boot.set_defaults(func=cmd_bootstrap)
    devnet = verbs.add_parser("devnet", help="run a whole local market on loopback (devchain, "
                                             "bootstrap, seller, buyer, arbiter) and its TUI")
    devnet.add_argument("--dir", metavar="D",
                        help="where the devnet lives (default: <user data dir>/devnet); "
                             "rerunning with the same dir resumes it")
    devnet.add_argument("--nodes", metavar="N", type=int, default=0,
                        help="extra seller nodes (default 0)")
    devnet.add_argument("--no-tui", action="store_true",
                        help="do not open the TUI; run until Ctrl-C")
    devnet.set_defaults(func=cmd_devnet)
    add_key_verbs(verbs, _add_datadir)  # backup, restore, passphrase
    # status, search, listing, offer, orders: through the running node's HTTP API
    add_api_verbs(verbs, _add_datadir)
    add_wallet_verbs(verbs, _add_datadir)  # wallet balance|address|send|history|backup
    tui = verbs.add_parser("tui", help="terminal UI of a running node (through its HTTP API)")
    _add_datadir(tui)
    tui.add_argument("--api", metavar="URL", help="the node's API URL instead of a data dir")
    tui.add_argument("--cookie", metavar="FILE", help="the node's api.cookie (with --api)")
    tui.set_defaults(func=cmd_tui)
    return parser


# -- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler = install_stderr_logging()
    func = cast(Command, args.func)
    try:
        return func(args, handler)
    except WrongPassphrase as exc:
        _err(str(exc))
        return EXIT_USAGE
    except (CliError, KeystoreError, ConfigError, StorageError, DataDirLocked,
            BackupError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _err(f"{exc.strerror or exc}{where}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        remove_handler(handler)


if __name__ == "__main__":
    raise SystemExit(main())
