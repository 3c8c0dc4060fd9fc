"""The `LogStore` contract at the store level, for each backend: a batch moves a device's
watermark only from the watermark the caller verified against (compare-and-set), so two
hub replicas ingesting one device's uploads at once store each record once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from doorkeeper.hub.logstore import BatchCommit, LogStore, SqliteLogStore
from doorkeeper.wire.entrylog import GENESIS, Gap


def _commit(expected: int, new: int, first: int | None = None, gaps: tuple[Gap, ...] = ()) -> BatchCommit:
    return BatchCommit(site_id="s1", device_id="d1", expected_watermark=expected, new_watermark=new,
                       new_head=bytes([new]) * 32, first_seq=expected + 1 if first is None else first,
                       received_at_ms=1000 + new, signed_batch=b"batch-%d" % new, backlog=3,
                       clock_skew_s=2, gaps=gaps)


class LogStoreContract:
    """Subclass with a `store` fixture returning a fresh backend."""

    def test_a_batch_moves_the_watermark_only_from_the_expected_one(self, store: LogStore) -> None:
        assert store.state("d1") is None
        assert store.commit_batch(_commit(0, 10))
        assert not store.commit_batch(_commit(0, 12))  # stale: another writer moved it
        state = store.state("d1")
        assert state is not None and (state.watermark, state.head) == (10, bytes([10]) * 32)
        assert [b.last_seq for b in store.batches("s1")] == [10]
        assert store.commit_batch(_commit(10, 20, gaps=(Gap("d1", 15, 16, 2, 0, "cap"),)))
        status = store.device_status("d1")
        assert status is not None
        assert (status.watermark, status.stored_batches, status.gaps, status.dropped) == (20, 2, 1, 2)
        assert [(g.from_seq, g.to_seq, g.reason) for g in store.gaps("d1")] == [(15, 16, "cap")]

    def test_racing_commits_from_one_watermark_store_one_batch(self, store: LogStore) -> None:
        wins: list[bool] = []
        threads = [threading.Thread(target=lambda n=n: wins.append(store.commit_batch(_commit(0, 5 + n))))
                   for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False] * 5 + [True]
        assert len(list(store.batches("s1"))) == 1

    def test_refusals_and_duplicates_are_counted_without_touching_the_chain(self, store: LogStore) -> None:
        store.record_refusal("s1", "d1", "bad signature " + "x" * 400, at_ms=5)
        store.record_duplicate("s1", "d1", records=4, at_ms=6, backlog=7, clock_skew_s=-1)
        state = store.state("d1")
        assert state is not None and (state.watermark, state.head) == (0, GENESIS)
        status = store.device_status("d1")
        assert status is not None
        assert (status.refused, status.duplicates, status.backlog, status.clock_skew_s) == (1, 4, 7, -1)
        assert status.last_error.startswith("bad signature") and len(status.last_error) == 300
        assert [s.device_id for s in store.site_status("s1")] == ["d1"]
        assert store.site_status("s2") == []


class TestSqliteLogStore(LogStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        s = SqliteLogStore(tmp_path / "logs.db")
        yield s
        s.close()


class TestPgLogStore(LogStoreContract):
    @pytest.fixture
    def store(self, pg_url: str):  # type: ignore[no-untyped-def]
        from doorkeeper.hub.pg_store import PgHubStore, PgLogStore

        hub_store = PgHubStore(pg_url)
        yield PgLogStore(hub_store.pool)
        hub_store.close()
