from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest

from p2pmarket.config import Config, ConfigError, load_config, write_default_config
from p2pmarket.datadir import CONFIG_FILE


def write(datadir: Path, text: str) -> None:
    (datadir / CONFIG_FILE).write_text(text, encoding="utf-8")


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    config, warnings = load_config(tmp_path, env={})
    assert config == Config()
    assert warnings == []
    assert config.api_host == "127.0.0.1"
    assert (config.dht_port, config.p2p_port, config.api_port) == (8468, 4001, 8470)
    assert config.network == "regtest"


def test_precedence_cli_env_file_default(tmp_path: Path) -> None:
    write(tmp_path, "dht_port = 1000\np2p_port = 1001\napi_port = 1002\n")
    env = {"P2PMARKET_P2P_PORT": "2001", "P2PMARKET_API_PORT": "2002"}
    cli: dict[str, object] = {"api_port": 3002, "p2p_port": None, "log_level": None}
    config, _ = load_config(tmp_path, cli=cli, env=env)
    assert config.dht_port == 1000  # file
    assert config.p2p_port == 2001  # env beats file; a None CLI value is "not given"
    assert config.api_port == 3002  # cli beats env
    assert config.p2p_host == "0.0.0.0"  # default


def test_bootstrap_from_each_source(tmp_path: Path) -> None:
    write(tmp_path, 'bootstrap = ["a.example:4001"]\n')
    assert load_config(tmp_path, env={})[0].bootstrap == ("a.example:4001",)
    env = {"P2PMARKET_BOOTSTRAP": "b.example:1, [::1]:2 ,"}
    config, _ = load_config(tmp_path, env=env)
    assert config.bootstrap == ("b.example:1", "[::1]:2")
    assert config.bootstrap_addrs() == [("b.example", 1), ("::1", 2)]
    config, _ = load_config(tmp_path, env=env, cli={"bootstrap": ["c:3"]})
    assert config.bootstrap == ("c:3",)


def test_unknown_key_warns(tmp_path: Path) -> None:
    write(tmp_path, 'foo = 1\nnetwork = "signet"\n')
    config, warnings = load_config(tmp_path, env={})
    assert warnings == ["config.toml: unknown key 'foo' ignored"]
    assert config.network == "signet"


@pytest.mark.parametrize(
    ("text", "env", "cli", "key", "source"),
    [
        ('dht_port = "x"\n', {}, {}, "dht_port", CONFIG_FILE),
        ("dht_port = 70000\n", {}, {}, "dht_port", CONFIG_FILE),
        ("", {"P2PMARKET_DHT_PORT": "abc"}, {}, "dht_port", "P2PMARKET_DHT_PORT"),
        ("", {"P2PMARKET_NETWORK": "moon"}, {}, "network", "P2PMARKET_NETWORK"),
        ("", {}, {"api_port": -1}, "api_port", "command line"),
        ("", {}, {"bootstrap": ["nohost"]}, "bootstrap", "command line"),
        ('esplora_url = "ftp://x"\n', {}, {}, "esplora_url", CONFIG_FILE),
        ('log_level = "LOUD"\n', {}, {}, "log_level", CONFIG_FILE),
    ],
)
def test_bad_value_names_key_and_source(
    tmp_path: Path,
    text: str,
    env: dict[str, str],
    cli: dict[str, object],
    key: str,
    source: str,
) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env=env, cli=cli)
    assert info.value.key == key
    assert key in str(info.value)
    assert source in str(info.value)


def test_api_host_must_be_loopback(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert load_config(tmp_path, env={}, cli={"api_host": host})[0].api_host == host
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        with pytest.raises(ConfigError, match="loopback"):
            load_config(tmp_path, env={"P2PMARKET_API_HOST": host})
    with pytest.raises(ConfigError, match="api_host"):
        Config(api_host="0.0.0.0")


def test_invalid_toml(tmp_path: Path) -> None:
    write(tmp_path, "dht_port = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path, env={})


def test_unknown_cli_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(tmp_path, env={}, cli={"dht_prot": 1})


def test_log_level_case_insensitive(tmp_path: Path) -> None:
    assert load_config(tmp_path, env={"P2PMARKET_LOG_LEVEL": "debug"})[0].log_level == "DEBUG"


def test_write_default_config_round_trip(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE
    write_default_config(path)
    text = path.read_text(encoding="utf-8")
    parsed = tomllib.loads(text)
    assert msgspec.convert(parsed, Config) == Config()
    assert load_config(tmp_path, env={}) == (Config(), [])
    lines = text.splitlines()
    for key in parsed:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
        assert lines[index - 1].startswith("# ")
    with pytest.raises(ConfigError, match="already exists"):
        write_default_config(path, dht_port=1)
    assert path.read_text(encoding="utf-8") == text


def test_write_default_config_overrides(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE
    write_default_config(path, dht_port=9000, bootstrap=('h"x:1',), network="signet")
    config, _ = load_config(tmp_path, env={})
    assert (config.dht_port, config.bootstrap, config.network) == (9000, ('h"x:1',), "signet")
    with pytest.raises(ConfigError):
        write_default_config(tmp_path / "other.toml", api_host="10.0.0.1")
    assert not (tmp_path / "other.toml").exists()
