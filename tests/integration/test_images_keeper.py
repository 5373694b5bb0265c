"""Pictures that outlive the seller: a bootstrap node keeps a seller's listing image, and a buyer
that never saw it gets it through the API while the seller's node is stopped, even with a
hostile holder in the DHT answering first with wrong bytes.

Real nodes on 127.0.0.1: a DHT backbone, a bootstrap node with a libp2p host and `keep`, a
seller and a buyer with libp2p hosts and their HTTP APIs, and a liar (a libp2p host that
announces itself as a holder of the image and serves other bytes).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from dht.server import DhtNode
from dht.testing import dht_network, make_node, start_node
from node.bootstrap import BootstrapNode, render_metrics
from node.p2p.keepbook import MB, KeepPolicy
from node.p2p.libp2p_host.host import Libp2pHost
from node.p2p.peers import PeerDirectory
from node.p2p.transport import BLOB_PROTOCOL
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire.bodies import Holder
from p2pmarket.wire.records import sign_record
from tests.support.api import LISTING, api_node, libp2p_host
from tests.support.waiting import until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]
IMAGE = b"\x89PNG\r\n\x1a\n" + os.urandom(300_000)


@pytest.fixture
async def keeper(tmp_path: Path) -> AsyncIterator[tuple[list[DhtNode], BootstrapNode]]:
    """A DHT backbone and a bootstrap node keeping images (up to 50 MB) on its libp2p host."""
    async with dht_network(4) as backbone:
        db = Database.open(tmp_path / "boot.db")
        boot = BootstrapNode(Identity.generate(), db, tmp_path / "boot")
        stop = asyncio.Event()
        try:
            await boot.start(dht_host="127.0.0.1", dht_port=0, metrics_port=0,
                             relay=("127.0.0.1", 0), keep=KeepPolicy(budget=50 * MB))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(boot.run(stop, [backbone[0].address]))
                assert boot.keeping is not None
                holders = boot.keeping.holders
                await until(lambda: holders._advertised > 0, timeout=30)  # its keeper advert
                yield backbone, boot
                stop.set()
        finally:
            stop.set()
            db.close()


async def liar_holder(backbone: list[DhtNode], digest: bytes) -> tuple[Libp2pHost, DhtNode]:
    """A node that announces itself as a holder of `digest` and serves other bytes."""
    identity = Identity.generate()
    host = Libp2pHost(identity, "127.0.0.1")
    await host.start()
    dht = await start_node(make_node(identity), [backbone[0].address])
    async def lie(peer_id: str, payload: bytes) -> bytes:
        return msgspec.msgpack.encode(["ok", b"\x89PNG\r\n\x1a\n" + os.urandom(1000)])

    host.set_request_handler(BLOB_PROTOCOL, lie)
    assert await PeerDirectory(identity, host, dht).publish()
    # "fresher" than the keeper's record, so a reader asks it first
    announce = sign_record(identity, Holder(sha256=digest), seq=1,
                           created=int(time.time()) + 300, ttl=3600)
    assert (await dht.put(announce)).ok
    return host, dht


async def test_buyer_sees_the_image_with_the_seller_stopped(
        keeper: tuple[list[DhtNode], BootstrapNode], tmp_path: Path) -> None:
    backbone, boot = keeper
    assert boot.keeping is not None
    async with api_node(backbone, tmp_path / "seller", host=libp2p_host) as seller:
        ref = await seller.client.upload_image(IMAGE, "image/png")
        created = await seller.client.create_listing({**LISTING, "images": [ref]})
        digest = bytes.fromhex(ref.sha256)
        # the seller hands the image to the keeper, which announces itself as a holder
        await until(lambda: digest in boot.keeping.keeper.held(), timeout=60)
        await until(lambda: digest in boot.keeping.holders._announced, timeout=60)
        metrics = render_metrics(boot.dht, 0.0, boot.relay, boot.keeping)
        assert f"p2pmarket_images_kept_bytes {len(IMAGE)}" in metrics
        seller_id = seller.peer_id
    # the seller's node is stopped now; a liar claims the image as well
    liar, liar_dht = await liar_holder(backbone, digest)
    try:
        async with api_node(backbone, tmp_path / "buyer", host=libp2p_host) as buyer:
            found = await buyer.client.get_listing(seller_id, created.id)
            assert found.images[0].sha256 == ref.sha256
            data = await buyer.client.get_image(ref.sha256, peer=seller_id)
            assert data == IMAGE and hashlib.sha256(data).hexdigest() == ref.sha256
            assert buyer.node.blobs.store.get(digest) == IMAGE
            liar_public = liar_dht.identity.public
            assert liar_public in buyer.node.images._bad  # skipped, not believed
    finally:
        await liar.stop()
        liar_dht.stop()
        liar_dht.records.db.close()
