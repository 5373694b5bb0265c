"""The scripts in examples/ run against two real nodes (their data dirs' API cookies)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from dht.testing import dht_network
from p2pmarket.client import Client
from tests.support.api import api_node, memory_hosts

pytestmark = pytest.mark.timeout(120)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_trade_and_search_examples(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    trade, search = load("trade"), load("search_listings")
    hosts = memory_hosts()
    async with dht_network(6) as backbone, \
            api_node(backbone, tmp_path / "seller", host=hosts) as seller, \
            api_node(backbone, tmp_path / "buyer", host=hosts) as buyer:
        said: list[str] = []
        async with Client.from_datadir(seller.datadir) as s, \
                Client.from_datadir(buyer.datadir) as b:
            order_id = await trade.trade(s, b, say=said.append)
            assert (await s.get_order(order_id)).state == "completed"
            await s.create_listing({  # the traded one is sold out now
                "title": "Blue teapot", "price": {"amount": 2_000, "currency": "EUR"},
                "category": "home/kitchen", "condition": "good",
                "location": {"country": "DE", "geohash": "u33dbf"}})
        assert said[-1].startswith("buyer reviewed the seller: 1 review(s), rating 5.0")
        await search.main(argparse.Namespace(datadir=str(buyer.datadir), words=["teapot"],
                                             category=None, max="100", watch=0))
        printed = capsys.readouterr().out
        assert "Blue teapot" in printed and seller.peer_id in printed
        assert "Example teapot" not in printed
