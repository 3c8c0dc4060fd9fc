"""One thread that runs the short store calls of many requests back to back.

A change wakes every door of a site at once, and each then makes the same few short store
calls (check a call signature and spend its nonce, record a report). One worker-thread hop
per call costs more than the call: a queue put that wakes a thread, the thread's fight for
the GIL, a self-pipe write that wakes the event loop. The lane takes every call queued while
it was busy as one batch and hands all their results back to the loop with one wake-up, so a
burst of 2,000 requests costs a few dozen hops instead of 2,000. SQLite writes serialise on
its write lock anyway; reads wait behind the batch in front of them. The event loop never
runs store code: a slow disk stalls the lane, not the loop.

With ``batch`` (the SQLite store's `atomic`), a whole batch is one transaction and each
call's writes a savepoint of it: a change's 2,000 nonce spends and reports cost one commit
(one WAL sync) instead of 2,000, and a call that fails rolls back only its own writes.
No answer leaves the lane before its batch committed; a failed commit fails every call of
the batch. (Not used on PostgreSQL: there one batch transaction would hold the row locks
of many requests, across replicas, until it commits.)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

T = TypeVar("T")
_Item = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", contextvars.Context]


class StoreLane:
    def __init__(self, name: str = "doorkeeper-lane",
                 batch: Callable[[], AbstractContextManager[Any]] | None = None) -> None:
        self._batch = batch
        self.commits = 0  # batches committed as one transaction (for tests)
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the lane (with this task's context variables); its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the store lane is closed")
            self._loop = loop
            self._pending.append((fn, args, future, contextvars.copy_context()))
            if len(self._pending) == 1:
                self._cond.notify()
        return await future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
                loop = self._loop
            done = self._run_batch(batch)
            assert loop is not None
            try:
                loop.call_soon_threadsafe(_settle, done)
            except RuntimeError:  # the loop closed under us: nobody awaits these any more
                return


    def _run_batch(self, batch: list[_Item]) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            with self._batch() if self._batch is not None else contextlib.nullcontext():
                for fn, args, future, context in batch:
                    try:
                        done.append((future, context.run(fn, *args), None))
                    except Exception as exc:  # handed to the awaiting request, which maps it
                        done.append((future, None, exc))
        except Exception as exc:  # the batch did not commit: nothing of it holds
            return [(future, None, exc) for _fn, _args, future, _context in batch]
        if self._batch is not None:
            self.commits += 1
        return done


def _settle(done: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in done:
        if future.cancelled():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
