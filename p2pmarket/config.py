"""Node configuration: defaults, `config.toml`, `P2PMARKET_*` environment variables, CLI flags.

Later sources win field by field: CLI > environment > config.toml > defaults.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from p2pmarket.datadir import CONFIG_FILE

log = logging.getLogger(__name__)

ENV_PREFIX = "P2PMARKET_"
Network = Literal["regtest", "signet", "testnet", "mainnet"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class ConfigError(Exception):
    """A configuration value is wrong; `key` and `source` say which one and where it came from."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        where = " ".join(part for part in (source and f"{source}:", key and f"{key}:") if part)
        super().__init__(f"{where} {message}" if where else message)
        self.key = key
        self.source = source
        self.reason = message


def _split_hostport(entry: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{entry!r} is not host:port")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for loopback IP literals and the usual names for them."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """Validated node settings; constructing one with a bad value raises ConfigError."""

    dht_host: str = "0.0.0.0"
    dht_port: int = 8468
    p2p_host: str = "0.0.0.0"
    p2p_port: int = 4001
    api_host: str = "127.0.0.1"
    api_port: int = 8470
    bootstrap: tuple[str, ...] = ()
    relay_via: tuple[str, ...] = ()
    keep_images_mb: int = 0
    network: Network = "regtest"
    esplora_url: str = ""
    log_level: LogLevel = "INFO"

    def __post_init__(self) -> None:
        for name in ("dht_host", "p2p_host", "api_host"):
            if not getattr(self, name):
                raise ConfigError("must not be empty", key=name)
        for name in ("dht_port", "p2p_port", "api_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"port {getattr(self, name)} is outside 0..65535", key=name)
        if not is_loopback(self.api_host):
            # the API hands out control of the node's keys; it never listens beyond this host
            msg = f"{self.api_host!r} is not a loopback address; the API is local only"
            raise ConfigError(msg, key="api_host")
        for entry in self.bootstrap:
            try:
                _split_hostport(entry)
            except ValueError as exc:
                raise ConfigError(str(exc), key="bootstrap") from None
        for entry in self.relay_via:
            # the full check (a multiaddr naming its relay) happens where libp2p is loaded
            if not entry.startswith("/") or "/p2p/" not in entry or "/p2p-circuit" in entry:
                msg = f"{entry!r} is not a relay's multiaddr (/ip4/<ip>/tcp/<port>/p2p/<id>)"
                raise ConfigError(msg, key="relay_via")
        if not 0 <= self.keep_images_mb <= 16 * 1024 * 1024:
            raise ConfigError("must be 0..16777216 (MB; 0 keeps no images)",
                              key="keep_images_mb")
        if self.esplora_url and not self.esplora_url.startswith(("http://", "https://")):
            raise ConfigError("must be an http:// or https:// URL", key="esplora_url")

    def bootstrap_addrs(self) -> list[tuple[str, int]]:
        """`bootstrap` as (host, port) pairs."""
        return [_split_hostport(entry) for entry in self.bootstrap]


FIELDS: dict[str, msgspec.structs.FieldInfo] = {f.name: f for f in msgspec.structs.fields(Config)}

_DOCS = {
    "dht_host": "Address the Kademlia DHT (UDP) listens on.",
    "dht_port": "UDP port of the DHT.",
    "p2p_host": "Address the libp2p channels (TCP) listen on.",
    "p2p_port": "TCP port of the libp2p channels.",
    "api_host": "Address of the local HTTP API; loopback only (127.0.0.1, ::1 or localhost).",
    "api_port": "TCP port of the local HTTP API.",
    "bootstrap": 'Extra bootstrap peers as "host:port", added to bootstrap_nodes.txt.',
    "relay_via": "Circuit relays (multiaddrs ending in /p2p/<relay id>) to stay reachable"
    " through when this node cannot accept connections (NAT); its peer record then carries only"
    " its relayed addresses.",
    "keep_images_mb": "Disk budget in MB for keeping other sellers' listing images, so buyers"
    " see them while the seller is offline (an image keeper; 0: keep none). Each seller gets"
    " at most 64 MB of it; the least recently used go first when it is full.",
    "network": "Bitcoin network for escrow: regtest, signet, testnet or mainnet.",
    "esplora_url": 'Esplora server for the chain backend, e.g. "https://mempool.space/signet/api";'
    " empty means the network's default.",
    "log_level": "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
}


def _convert(key: str, raw: object, source: str, *, strict: bool) -> object:
    if key == "log_level" and isinstance(raw, str):
        raw = raw.upper()
    try:
        return msgspec.convert(raw, FIELDS[key].type, strict=strict)
    except msgspec.ValidationError as exc:
        shown = repr(raw) if len(repr(raw)) <= 60 else repr(raw)[:57] + "..."
        raise ConfigError(f"{exc} (value {shown})", key=key, source=source) from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=str(path)) from None


def load_config(
    datadir: Path,
    *,
    cli: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Config, list[str]]:
    """The effective config and a list of warnings for the user.

    `cli` maps field names to flag values (None = flag not given; unknown names are an error).
    Environment variables are `P2PMARKET_<FIELD>`; an empty one counts as unset, and
    `P2PMARKET_BOOTSTRAP` and `P2PMARKET_RELAY_VIA` are comma-separated. `env` defaults to
    os.environ.
    """
    environ = os.environ if env is None else env
    path = datadir / CONFIG_FILE
    warnings: list[str] = []
    values: dict[str, object] = {}
    sources: dict[str, str] = {}

    for key, raw in _read_file(path).items():
        if key not in FIELDS:
            warnings.append(f"{CONFIG_FILE}: unknown key {key!r} ignored")
            continue
        values[key] = _convert(key, raw, str(path), strict=True)
        sources[key] = str(path)

    for key in FIELDS:
        name = ENV_PREFIX + key.upper()
        text = environ.get(name, "")
        if not text:
            continue
        source = f"environment variable {name}"
        parsed: object = text
        if key in ("bootstrap", "relay_via"):
            parsed = [part.strip() for part in text.split(",") if part.strip()]
        values[key] = _convert(key, parsed, source, strict=False)
        sources[key] = source

    for key, raw in (cli or {}).items():
        if key not in FIELDS:
            raise ConfigError("unknown setting", key=key, source="command line")
        if raw is None:
            continue
        if key in ("bootstrap", "relay_via") and isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        values[key] = _convert(key, raw, "command line", strict=False)
        sources[key] = "command line"

    try:
        config = Config(**values)  # type: ignore[arg-type]  # each value converted to its type
    except ConfigError as exc:
        source = sources.get(exc.key or "", "default")
        raise ConfigError(exc.reason, key=exc.key, source=source) from None
    if config.network == "mainnet":
        warnings.append("network is mainnet: escrow moves real bitcoin")
    for warning in warnings:
        log.warning("%s", warning)
    return config, warnings


def _toml_value(value: object) -> str:
    if isinstance(value, bool | int):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def write_default_config(path: Path, **overrides: object) -> None:
    """Write a commented config.toml with every key; refuses to overwrite an existing file."""
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ConfigError("unknown setting", key=unknown[0])
    values = {key: _convert(key, raw, "override", strict=False) for key, raw in overrides.items()}
    config = Config(**values)  # type: ignore[arg-type]
    lines = ["# p2pmarket node configuration.", "# Environment variables (P2PMARKET_<KEY>)"]
    lines.append("# and command-line flags override the values here.")
    for key in FIELDS:
        lines += ["", f"# {_DOCS[key]}", f"{key} = {_toml_value(getattr(config, key))}"]
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    except FileExistsError:
        raise ConfigError("already exists; not overwriting", source=str(path)) from None
