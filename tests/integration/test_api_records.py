"""`GET /records`: the owner sees each of its records in the DHT with its expiry and last
publication; a record no DHT node stored is an error there, not 'published'."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dht.testing import dht_network
from p2pmarket.identity import Identity
from tests.support.api import LISTING, api_node

pytestmark = pytest.mark.timeout(120)


async def test_my_records_with_expiry_publication_and_errors(tmp_path: Path) -> None:
    other = Identity.generate().peer_id
    async with dht_network(6) as backbone, api_node(backbone, tmp_path / "me") as me:
        api = me.client
        listing = await api.create_listing(LISTING)
        await api.put_my_profile({"name": "Ada", "bio": "lamps"})
        report = await api.report_listing(other, "their-lamp-1", "scam", "fake photos")
        assert report.published_at is not None

        records = (await api.list_my_records()).items
        assert [(r.kind, r.id) for r in records] == [
            ("peer", ""), ("profile", ""), ("listing", listing.id),
            ("report", f"{other}/their-lamp-1")]
        for r in records:
            assert r.published_at is not None and r.error is None, r
            assert r.expires > time.time() and len(r.key) == 40 and r.seq > 0
        assert records[2].seq == listing.seq
        first = await api.list_my_records(page_size=3)
        rest = await api.list_my_records(page_size=3, page_token=first.next_page_token)
        assert [r.kind for r in first.items + rest.items] == [r.kind for r in records]

        # nobody left to store anything: a new report is kept, but as an error
        for node in backbone:
            node.stop()
        again = await api.report_listing(other, "their-lamp-2", "spam")
        assert again.published_at is None
        [lost] = [r for r in (await api.list_my_records()).items
                  if r.id == f"{other}/their-lamp-2"]
        assert lost.published_at is None and lost.error and "no DHT node stored it" in lost.error
