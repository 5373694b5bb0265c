"""`p2pmarket devchain` hands its flags to the devchain: `--policy` switches Bitcoin Core's relay
policy on, and without it the chain stays permissive. The server itself is replaced here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import escrow.devchain.server as server
from escrow.devchain.policy import RelayPolicy
from p2pmarket.cli.main import main


@pytest.mark.parametrize(("flags", "policy"), [([], None), (["--policy"], RelayPolicy())])
def test_devchain_policy_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], policy: RelayPolicy | None
) -> None:
    seen: dict[str, Any] = {}

    async def fake_serve(datadir: Path, host: str, port: int, block_interval: float | None,
                         **kw: Any) -> None:
        seen.update(datadir=datadir, host=host, **kw)

    monkeypatch.setattr(server, "serve_devchain", fake_serve)
    assert main(["devchain", "--datadir", str(tmp_path), "--port", "0", *flags]) == 0
    assert seen["datadir"] == tmp_path and seen["host"] == "127.0.0.1"
    assert seen["policy"] == policy
