"""The store lane: short store calls of many requests, batched on one thread."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from doorkeeper.hub.lane import StoreLane

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def _run(coro: Any) -> Any:
    """asyncio.run in a thread of its own: asyncio.run in the main thread would leave it with
    no event loop, and a later test's gRPC server (built outside a loop) needs one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_results_errors_and_context_reach_each_caller_and_bursts_share_batches() -> None:
    lane = StoreLane()
    threads: set[str] = set()
    batches: list[int] = []
    gate = threading.Event()

    def work(i: int) -> tuple[int, str]:
        threads.add(threading.current_thread().name)
        if i == 0:
            gate.wait(5)  # hold the lane so the rest of the burst queues behind it
        if i == 7:
            raise KeyError("seven")
        return i * i, WHO.get()

    async def one(i: int) -> tuple[int, str]:
        WHO.set(f"caller-{i}")
        return await lane.run(work, i)

    async def burst() -> list[object]:
        first = asyncio.ensure_future(one(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(one(i)) for i in range(1, 200)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    import doorkeeper.hub.lane as lane_module  # count batches by wrapping the hand-back

    settle = lane_module._settle

    def counting(done):  # type: ignore[no-untyped-def]
        batches.append(len(done))
        settle(done)

    lane_module._settle = counting  # type: ignore[assignment]
    try:
        results = _run(burst())
    finally:
        lane_module._settle = settle  # type: ignore[assignment]
        lane.close()
    assert isinstance(results[7], KeyError)
    expected = [(i * i, f"caller-{i}") for i in range(200) if i != 7]
    assert [r for i, r in enumerate(results) if i != 7] == expected
    assert threads == {"doorkeeper-lane"}
    assert sum(batches) == 200 and len(batches) <= 3  # 199 queued calls came back together
    with pytest.raises(RuntimeError):
        _run(lane.run(work, 1))  # closed


def test_a_sqlite_batch_commits_once_and_a_failed_call_rolls_back_only_its_own_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With the SQLite store's `atomic` as the batch: a burst of nonce spends is one commit,
    a call that fails inside a write leaves nothing of it (a savepoint), the others hold, and
    a nonce spent twice in one batch is refused the second time."""
    import sqlite3

    from doorkeeper.hub.sqlite_store import SqliteHubStore
    from doorkeeper.hub.store import ChangeSet, NotFound
    from tests.test_hub_store import _site

    store = SqliteHubStore(tmp_path / "hub.db")
    store.create_site(_site())
    statements: list[str] = []
    conn_of = store._conn

    def traced() -> sqlite3.Connection:  # the real connection, with its statements counted
        conn = conn_of()
        conn.set_trace_callback(statements.append)
        return conn

    store._conn = traced  # type: ignore[method-assign]
    lane = StoreLane(batch=store.atomic)
    gate = threading.Event()

    def held(i: int) -> bool:
        gate.wait(5)  # the rest of the burst queues behind this one: one batch
        return store.spend_nonce("door", b"held", 2e9, 1.0)

    async def burst() -> list[object]:
        first = asyncio.ensure_future(lane.run(held, 0))
        await asyncio.sleep(0.05)
        calls = [lane.run(store.spend_nonce, "door", bytes([i]) * 16, 2e9, 1.0) for i in range(100)]
        calls.append(lane.run(store.apply_changes, "s1", ChangeSet(removes=("nobody",)), 5))
        calls.append(lane.run(store.spend_nonce, "door", bytes([3]) * 16, 2e9, 1.0))  # a replay
        rest = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    try:
        results = _run(burst())
    finally:
        lane.close()
    assert results[:101] == [True] * 101
    assert isinstance(results[101], NotFound)
    assert results[102] is False  # spent earlier in the same batch
    assert lane.commits == 2  # the held call's batch, then the burst's
    assert statements.count("COMMIT") == 2 and statements.count("BEGIN IMMEDIATE") == 2
    other = sqlite3.connect(tmp_path / "hub.db")  # what another connection sees: committed
    assert other.execute("SELECT count(*) FROM nonces").fetchone() == (101,)
    assert other.execute("SELECT version FROM sites").fetchone() == (1,)  # the failed change left nothing
    other.close()
    store.close()


def test_a_batch_that_does_not_commit_fails_every_call_of_it() -> None:
    import contextlib

    written: list[int] = []

    @contextlib.contextmanager
    def batch():  # type: ignore[no-untyped-def]
        yield
        if 13 in written:
            raise OSError("disk I/O error")  # as SQLite's COMMIT on a failing disk

    lane = StoreLane(batch=batch)
    try:
        assert _run(lane.run(written.append, 1)) is None
        with pytest.raises(OSError, match="disk I/O error"):
            _run(lane.run(written.append, 13))  # its own result was fine: the commit was not
    finally:
        lane.close()
    assert lane.commits == 1
