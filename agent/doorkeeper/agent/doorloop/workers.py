"""The door loop's background workers: one thread per bounded job queue.

The decision path never waits on the door driver or the entry-log sink: it submits a job and
moves on. Actuation and recording each get a :class:`QueueWorker`; ``submit`` never blocks,
and after ``close`` it raises :class:`LoopClosed`, so nothing is accepted that will not run.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

# The workers' lines are the door loop's lines: keep the logger operators already filter on.
log = logging.getLogger("doorkeeper.agent.doorloop.loop")

QUEUE_LIMIT = 1024

_DRAINED = object()


class LoopClosed(RuntimeError):
    """A credential was presented after the loop was closed (the door is locked for good)."""


class QueueWorker:
    """One thread consuming a bounded queue. ``submit`` never blocks: it returns False when
    the queue is full (the caller counts and logs) and raises LoopClosed after ``close``."""

    def __init__(self, name: str, handle: Callable[[object], None],
                 on_discard: Callable[[object], None] | None = None) -> None:
        """``on_discard`` is called (on the closing thread) for each queued job that
        ``close(drain=False)`` throws away, so its owner can record that it never ran."""
        self._handle = handle
        self._on_discard = on_discard
        self._jobs: queue.Queue[object] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._stop = threading.Event()
        self._gate = threading.Lock()  # orders submit against close; held for a put_nowait
        self._open = True
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: object) -> bool:
        with self._gate:
            if not self._open:
                raise LoopClosed(f"{self._thread.name} closed")
            try:
                self._jobs.put_nowait(job)
            except queue.Full:
                self.dropped += 1
                return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            if job is _DRAINED:
                return
            try:
                self._handle(job)
            except Exception:  # one bad job must not leave later grants unserved
                log.exception("%s: job failed", self._thread.name)

    def close(self, *, drain: bool, timeout: float = 30.0) -> None:
        """Finish queued jobs first (``drain``) or discard them; then stop the thread."""
        with self._gate:
            self._open = False
        if not drain:
            self._stop.set()
            discarded = 0
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                discarded += 1
                if self._on_discard is not None and job is not _DRAINED:
                    try:
                        self._on_discard(job)
                    except Exception:  # the rest must still be discarded and the thread stopped
                        log.exception("%s: on_discard failed", self._thread.name)
            if discarded:
                log.warning("%s: %d queued jobs discarded on stop", self._thread.name, discarded)
        try:
            self._jobs.put(_DRAINED, timeout=timeout)
        except queue.Full:
            self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("%s did not stop within %.0fs", self._thread.name, timeout)
