"""Hub ingest: dedupe, ordering, chain, signatures, fleet status, no plaintext on disk.

Each refusal test checks that the stored logs and watermark did not move. Every test runs
on each `LogStore` backend (SQLite and PostgreSQL): this is their shared contract suite,
with the store-level compare-and-set in tests/test_log_store.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.public import PrivateKey

from doorkeeper.hub.logs import LogIngest
from doorkeeper.hub.logstore import LogStore, SqliteLogStore
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import entrylog
from doorkeeper.wire.entrylog import GENESIS, BadLogBatch, Entry, OwnerKey, sign_batch
from doorkeeper.wire.keys import KeyPair

DEV = "dev-1"
SITE = "site-1"


class World:
    def __init__(self, store: LogStore) -> None:
        self.owner_private = PrivateKey.generate()
        self.owner = OwnerKey.from_public(bytes(self.owner_private.public_key))
        self.dev = KeyPair.generate()
        self.store = store
        self.now = 1_800_000_000.0
        self.ingest = LogIngest(self.store, clock=lambda: self.now)
        self.records: list[bytes] = []
        head = GENESIS
        for seq in range(1, 31):
            raw = entrylog.seal_entry(
                Entry("front", "denied", "face", f"person-{seq:04d}", similarity=0.4321,
                      reason="not on whitelist"), DEV, seq, head, self.owner)
            head = entrylog.chain_value(raw)
            self.records.append(raw)

    def batch(self, lo: int, hi: int, key: KeyPair | None = None, sent_at_ms: int = 0,
              records: list[bytes] | None = None, site: str = SITE) -> bytes:
        recs = records if records is not None else self.records[lo - 1:hi]
        return sign_batch((key or self.dev).sign_key, site_id=site, device_id=DEV, records=recs,
                          sent_at_ms=sent_at_ms or int(self.now * 1000)).SerializeToString()

    def send(self, raw: bytes) -> pb.LogAck:
        return self.ingest.ingest(SITE, DEV, self.dev.sign_public, raw)

    def snapshot(self) -> tuple[object, ...]:
        stored = [(b.first_seq, b.last_seq, b.signed_batch) for b in self.store.batches(SITE)]
        state = self.store.state(DEV)
        return (tuple(stored), state.watermark if state else 0, state.head if state else GENESIS)


@pytest.fixture(params=["sqlite", "postgresql"])
def log_store(request, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        store: LogStore = SqliteLogStore(tmp_path / "hub.db")
        yield store
        store.close()
        return
    from doorkeeper.hub.pg_store import PgHubStore, PgLogStore

    pg_url = request.getfixturevalue("pg_url")
    hub_store = PgHubStore(pg_url)
    yield PgLogStore(hub_store.pool)
    hub_store.close()


@pytest.fixture
def w(log_store: LogStore) -> World:
    return World(log_store)


def test_in_order_batches_are_stored_and_acknowledged(w):
    assert w.send(w.batch(1, 10)).watermark == 10
    ack = w.send(w.batch(11, 30))
    assert (ack.watermark, ack.duplicates) == (30, 0)
    status = w.store.device_status(DEV)
    assert status is not None and status.watermark == 30 and status.stored_batches == 2


def test_duplicate_batch_is_stored_once(w):
    w.send(w.batch(1, 10))
    before = w.snapshot()
    ack = w.send(w.batch(1, 10))
    assert (ack.watermark, ack.duplicates) == (10, 10)
    assert w.snapshot() == before
    assert w.store.device_status(DEV).duplicates == 10


def test_overlapping_partial_batch_adds_only_the_new_records(w):
    w.send(w.batch(1, 10))
    ack = w.send(w.batch(5, 15))
    assert (ack.watermark, ack.duplicates) == (15, 6)
    stored = list(w.store.batches(SITE))
    assert [(b.first_seq, b.last_seq) for b in stored] == [(1, 10), (11, 15)]


def test_reordered_batch_is_refused_then_accepted_in_order(w):
    w.send(w.batch(1, 10))
    before = w.snapshot()
    with pytest.raises(BadLogBatch, match="gap before batch"):
        w.send(w.batch(21, 30))
    assert w.snapshot() == before
    status = w.store.device_status(DEV)
    assert status.refused == 1 and "gap before batch" in status.last_error
    w.send(w.batch(11, 20))
    assert w.send(w.batch(21, 30)).watermark == 30
    assert w.store.device_status(DEV).last_error == ""


def test_batch_signed_by_another_device_is_refused(w):
    w.send(w.batch(1, 10))
    before = w.snapshot()
    with pytest.raises(BadLogBatch, match="signature"):
        w.send(w.batch(11, 20, key=KeyPair.generate()))
    assert w.snapshot() == before
    assert w.store.device_status(DEV).refused == 1


def test_batch_for_another_site_is_refused(w):
    before = w.snapshot()
    with pytest.raises(BadLogBatch, match="site"):
        w.send(w.batch(1, 10, site="other-site"))
    assert w.snapshot() == before


def test_tampered_batch_bytes_are_refused(w):
    raw = bytearray(w.batch(1, 10))
    raw[len(raw) // 2] ^= 0x01
    before = w.snapshot()
    with pytest.raises(BadLogBatch):
        w.send(bytes(raw))
    assert w.snapshot() == before


def test_broken_chain_is_refused(w):
    w.send(w.batch(1, 10))
    before = w.snapshot()
    bad = pb.SealedLogRecord.FromString(w.records[10])
    bad.prev_hash = bytes(32)
    with pytest.raises(BadLogBatch, match="broken chain at seq 11"):
        w.send(w.batch(11, 11, records=[bad.SerializeToString()]))
    assert w.snapshot() == before


def test_oversize_and_malformed_input_is_refused(w):
    before = w.snapshot()
    with pytest.raises(BadLogBatch, match="exceeds"):
        w.send(b"\x00" * (4 * 1024 * 1024))
    with pytest.raises(BadLogBatch):
        w.send(b"\xff\xff\xff garbage")
    assert w.snapshot() == before


def test_gap_markers_and_clock_skew_reach_fleet_status(w):
    links = [entrylog.chain_value(r) for r in w.records]
    marker = entrylog.gap_marker(seq=5, from_seq=1, prev_hash=GENESIS, dropped=5,
                                 reason="record cap", link_hash=links[4])
    lost = entrylog.gap_marker(seq=11, prev_hash=links[9], unwritten=3, reason="disk full")
    after = pb.SealedLogRecord.FromString(w.records[10])
    # Seq 12 must link to the standalone marker: rebuild it on the marker.
    rebuilt = entrylog.seal_entry(Entry("front", "granted", "face", "p"), DEV, 12,
                                  entrylog.chain_value(lost), w.owner)
    assert after.seq == 11
    ack = w.send(w.batch(0, 0, records=[marker, *w.records[5:10], lost, rebuilt],
                         sent_at_ms=int((w.now + 3600) * 1000)))
    assert ack.watermark == 12
    status = w.store.device_status(DEV)
    assert (status.gaps, status.dropped, status.unwritten) == (2, 5, 3)
    assert status.clock_skew_s == 3600
    assert [(g.from_seq, g.to_seq, g.reason) for g in w.store.gaps(DEV)] == [
        (1, 5, "record cap"), (11, 11, "disk full")]


def test_dropped_range_straddling_the_watermark_is_accepted(w):
    """The hub stored 1..10 but the ack was lost; the device then dropped 1..15."""
    w.send(w.batch(1, 10))
    links = [entrylog.chain_value(r) for r in w.records]
    marker = entrylog.gap_marker(seq=15, from_seq=1, prev_hash=GENESIS, dropped=15,
                                 reason="disk floor", link_hash=links[14])
    ack = w.send(w.batch(0, 0, records=[marker, *w.records[15:20]]))
    assert ack.watermark == 20
    assert [(g.from_seq, g.to_seq) for g in w.store.gaps(DEV)] == [(11, 15)]


def test_pull_streams_batches_after_a_seq(w):
    w.store.PAGE = 2  # exercise keyset pagination
    for lo in range(1, 31, 5):
        w.send(w.batch(lo, lo + 4))
    assert [b.first_seq for b in w.ingest.pull(SITE)] == [1, 6, 11, 16, 21, 26]
    assert [b.first_seq for b in w.ingest.pull(SITE, DEV, after_seq=12)] == [11, 16, 21, 26]
    assert list(w.ingest.pull("other-site")) == []


def test_device_logs_cannot_move_to_another_site(w):
    w.send(w.batch(1, 10))
    before = w.snapshot()
    raw = sign_batch(w.dev.sign_key, site_id="site-2", device_id=DEV, records=w.records[10:12],
                     sent_at_ms=1).SerializeToString()
    with pytest.raises(BadLogBatch, match="another site"):
        w.ingest.ingest("site-2", DEV, w.dev.sign_public, raw)
    assert w.snapshot() == before


def test_hub_database_holds_no_plaintext(w, tmp_path):
    w.send(w.batch(1, 30))
    if isinstance(w.store, SqliteLogStore):
        blob = b"".join(p.read_bytes() for p in tmp_path.glob("hub.db*"))
    else:  # every byte of every log row as PostgreSQL holds it
        blob = b""
        with w.store.pool.connection() as conn, conn.cursor() as cur:
            for table in ("log_batches", "log_devices", "log_gaps"):
                with cur.copy(f"COPY {table} TO STDOUT (FORMAT binary)") as copy:
                    blob += b"".join(bytes(data) for data in copy)
    assert blob  # db and WAL exist
    for needle in (b"person-00", b"denied", b"not on whitelist", b"0.4321",
                   pb.LogEntry(similarity=0.4321).SerializeToString()[1:]):
        assert needle not in blob, needle


def test_pull_responses_carry_device_key_then_size_bounded_batches(w):
    for lo in range(1, 31, 10):
        w.send(w.batch(lo, lo + 9))
    size = max(b.byte_size for b in w.store.batches(SITE))
    responses = list(w.ingest.pull_responses(SITE, {DEV: w.dev.sign_public},
                                             max_response_bytes=size + 1))
    assert [len(r.batches) for r in responses] == [1, 1, 1]
    assert [k.sign_public_key for k in responses[0].device_keys] == [w.dev.sign_public]
    assert not responses[1].device_keys
