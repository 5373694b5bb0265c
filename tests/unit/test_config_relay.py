"""The `relay_via` setting: multiaddrs of relays, from config.toml, environment or flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pmarket.config import Config, ConfigError, load_config

RELAY = "/ip4/203.0.113.5/tcp/4001/p2p/12D3KooWLKarySiXUahzrYuAUjnmkD2faVdbDjYQFJjBcx2Ce4wz"


def test_relay_via_from_env_and_flags(tmp_path: Path) -> None:
    config, _ = load_config(tmp_path, env={"P2PMARKET_RELAY_VIA": f"{RELAY}, {RELAY}"})
    assert config.relay_via == (RELAY, RELAY)
    config, _ = load_config(tmp_path, cli={"relay_via": [RELAY]}, env={})
    assert config.relay_via == (RELAY,)
    assert Config().relay_via == ()


@pytest.mark.parametrize("bad", ["203.0.113.5:4001", "/ip4/203.0.113.5/tcp/4001",
                                 f"{RELAY}/p2p-circuit"])
def test_relay_via_must_name_a_relay(bad: str) -> None:
    with pytest.raises(ConfigError, match="relay_via"):
        Config(relay_via=(bad,))
