"""Pure DHT pieces: bootstrap lists, neighbours file, rate limits, RTT timeouts, slot storage."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dht import storage as st
from dht.bootstrap import (
    NEIGHBOURS_FILE,
    BootstrapError,
    load_neighbours,
    parse_bootstrap,
    save_neighbours,
)
from dht.ratelimit import RateLimiter
from dht.rtt import RttEstimator
from dht.storage import PutResult, RecordStore
from dht.validate import KeyMismatch, validate_for_key
from p2pmarket.identity import Identity
from p2pmarket.storage import Database
from p2pmarket.wire import bodies as b
from p2pmarket.wire.dhtkeys import index_key, record_key, record_slot
from p2pmarket.wire.records import sign_record
from tests.support.records import make_listing


def test_parse_bootstrap_file() -> None:
    text = "# comment\n\nseed.example.org:8468  # trailing\n127.0.0.1:9000\n[::1]:7000\n"
    assert parse_bootstrap(text) == [("seed.example.org", 8468), ("127.0.0.1", 9000),
                                     ("::1", 7000)]


@pytest.mark.parametrize("line", ["nohost", "host:", "host:0", "host:70000", ":80", "h:x"])
def test_bad_bootstrap_line_names_the_line(line: str) -> None:
    with pytest.raises(BootstrapError, match="line 2"):
        parse_bootstrap(f"ok.example:1\n{line}\n", "bootstrap_nodes.txt")


def test_shipped_bootstrap_file_parses() -> None:
    text = (Path(__file__).parents[2] / "bootstrap_nodes.txt").read_text()
    parse_bootstrap(text)


def test_neighbours_round_trip_and_damage(tmp_path: Path) -> None:
    save_neighbours(tmp_path, [("127.0.0.1", 1000), ("10.0.0.2", 2000)])
    assert load_neighbours(tmp_path) == [("127.0.0.1", 1000), ("10.0.0.2", 2000)]
    (tmp_path / NEIGHBOURS_FILE).write_bytes(os.urandom(50))
    assert load_neighbours(tmp_path) == []
    assert load_neighbours(tmp_path / "missing") == []


def test_rate_limiter_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=5, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("b")
    now[0] += 0.1
    assert limiter.allow("a") and not limiter.allow("a")


def test_rtt_timeouts_stay_in_bounds() -> None:
    rtt = RttEstimator(floor=0.25, ceiling=2.0)
    assert rtt.hard_timeout() == 1.0
    for _ in range(20):
        rtt.observe(0.001)
    assert rtt.hard_timeout() == 0.25 and rtt.soft_timeout() == pytest.approx(0.03, abs=0.01)
    for _ in range(50):
        rtt.observe(5.0)
    assert rtt.hard_timeout() == 2.0 and rtt.soft_timeout() <= 2.0


def test_validate_binds_key() -> None:
    me = Identity.generate()
    rec = sign_record(me, make_listing(), seq=1)
    assert validate_for_key(record_key(rec), rec.raw) == rec
    with pytest.raises(KeyMismatch):
        validate_for_key(index_key("kw", "bike"), rec.raw)


def test_index_terms_are_normalised() -> None:
    assert index_key("kw", "CAFÉ") == index_key("kw", "café") == index_key("kw", " Café ")
    assert index_key("kw", "bike") != index_key("cat", "bike")


@pytest.fixture
def store() -> RecordStore:
    return RecordStore(Database.open(":memory:"))


def test_slot_semantics(store: RecordStore) -> None:
    me = Identity.generate()
    v1 = sign_record(me, make_listing(title="one"), seq=1)
    v2 = sign_record(me, make_listing(title="two"), seq=2)
    other_v2 = sign_record(me, make_listing(title="other"), seq=2)
    key = record_key(v1)
    assert store.put(key, v1) is PutResult.STORED
    assert store.put(key, v2) is PutResult.STORED
    assert store.put(key, v1) is PutResult.STALE
    assert store.put(key, v2) is PutResult.REFRESHED
    assert store.put(key, other_v2) is PutResult.CONFLICT
    assert list(store.values(key)) == [v2.raw]


def test_expiry_and_cull(store: RecordStore) -> None:
    me = Identity.generate()
    now = int(time.time())
    rec = sign_record(me, make_listing(), seq=1, created=now, ttl=60)
    key = record_key(rec)
    store.put(key, rec, now=now)
    assert store.has(key, now=now + 59) and not store.has(key, now=now + 60)
    assert store.cull(now=now + 61) == 1 and store.count() == 0


def _entry(i: int) -> b.IndexEntry:
    return b.IndexEntry(scope="kw", term="bike", listing_id=f"lst-{i:05d}", listing_seq=1,
                        title="bike", price=b.Price(1, "EUR"), category="sports/bikes")


def test_caps_per_publisher_and_key(store: RecordStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "MAX_SLOTS_PER_PUBLISHER_KEY", 3)
    monkeypatch.setattr(st, "MAX_SLOTS_PER_KEY", 5)
    key = index_key("kw", "bike")
    spammer = Identity.generate()
    results = [store.put(key, sign_record(spammer, _entry(i), seq=1)) for i in range(4)]
    assert results == [PutResult.STORED] * 3 + [PutResult.FULL]
    others = [Identity.generate() for _ in range(3)]
    results = [store.put(key, sign_record(o, _entry(0), seq=1)) for o in others]
    assert results == [PutResult.STORED] * 2 + [PutResult.FULL]


def test_pages_fit_and_cover_everything(store: RecordStore) -> None:
    key = index_key("kw", "bike")
    recs = [sign_record(Identity.generate(), _entry(i), seq=1) for i in range(80)]
    for rec in recs:
        store.put(key, rec)
    seen: list[bytes] = []
    offset: int | None = 0
    while offset is not None:
        page = store.page(key, offset)
        assert sum(map(len, page.values)) <= st.PAGE_BYTES
        seen += page.values
        offset = page.next
    assert sorted(seen) == sorted(r.raw for r in recs)
    assert len({record_slot(r) for r in recs}) == 80
