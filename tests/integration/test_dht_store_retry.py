"""A STORE whose datagram is lost is sent once more: the replica count does not depend on one
UDP packet; a node that never answers is counted as a timeout after that one retry."""

from __future__ import annotations

import msgpack
import pytest

from dht.protocol import MarketProtocol
from dht.server import DhtNode
from dht.testing import dht_network
from p2pmarket.identity import Identity
from p2pmarket.wire.dhtkeys import record_key
from p2pmarket.wire.records import sign_record
from tests.support.records import make_listing

pytestmark = pytest.mark.timeout(60)


def drop_stores(node: DhtNode, count: int) -> list[int]:
    """Make `node` ignore the next `count` STORE requests it receives; returns a counter."""
    proto = node.protocol
    assert isinstance(proto, MarketProtocol)
    received = proto.datagram_received
    dropped = [0]

    def datagram_received(data: bytes, addr: tuple[str, int]) -> None:
        if dropped[0] < count and data[:1] == b"\x00":
            try:
                name = msgpack.unpackb(data[21:], raw=False)[0]
            except Exception:  # not ours to judge here
                name = None
            if name == "store":
                dropped[0] += 1
                return
        received(data, addr)

    proto.datagram_received = datagram_received  # type: ignore[method-assign]
    return dropped


async def test_a_lost_store_is_sent_again() -> None:
    async with dht_network(8) as net:
        record = sign_record(Identity.generate(), make_listing(), seq=1)
        lossy = [drop_stores(node, 1) for node in net[2:5]]
        report = await net[1].put(record)
        assert [d[0] for d in lossy] == [1, 1, 1]  # each lost the first copy
        assert report.refused == {} and report.accepted == 7
        for node in net[2:5]:
            assert node.records.has(record_key(record))


async def test_a_silent_node_is_a_timeout_after_one_retry() -> None:
    async with dht_network(6) as net:
        record = sign_record(Identity.generate(), make_listing(), seq=1)
        silent = drop_stores(net[3], 100)
        report = await net[1].put(record)
        assert silent[0] == 2  # the first copy and one retry
        assert report.refused == {"timeout": 1} and report.accepted == 4  # 6 nodes: 4 others
