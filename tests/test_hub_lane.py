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
