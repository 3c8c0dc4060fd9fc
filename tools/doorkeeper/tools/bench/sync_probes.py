"""What `doorkeeper bench sync` measures with: peak RSS, the bytes a Fetch delivered,
/proc figures, core pinning, thread CPU time; and `BenchError`, raised by every phase.

Linux-first: pinning uses `sched_setaffinity`, memory figures come from /proc; where
/proc/self/clear_refs is not writable, peak RSS is sampled with psutil instead.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CLEAR_REFS = Path("/proc/self/clear_refs")


class BenchError(Exception):
    """A phase did not do what it must (wrong outcome, wrong bundle kind, no report)."""


def status_kb(field: str, pid: int | str = "self") -> int:
    """One ``kB`` figure (VmRSS, VmHWM, ...) of /proc/<pid>/status; BenchError when absent."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise BenchError(f"/proc/{pid}/status has no {field}")
    return int(match.group(1))


def cpu_us(fn: Callable[[], object], n: int) -> float:
    """CPU time of this thread per call of ``fn``, in microseconds, over ``n`` calls."""
    start = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - start) / n * 1e6


class PeakRss:
    """Peak resident memory of this process from `start()` to `stop()`, in bytes."""

    def __init__(self, clear_refs: Path = CLEAR_REFS) -> None:
        self.clear_refs = clear_refs
        self.method = ""
        self._peak = 0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> int:
        """Reset the high-water mark; returns RSS right now (the baseline)."""
        try:
            with open(self.clear_refs, "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.method = "VmHWM reset via /proc/self/clear_refs"
        except OSError:
            import psutil

            proc = psutil.Process()
            self.method = "psutil RSS sampled every 20 ms"
            self._peak = proc.memory_info().rss

            def sample() -> None:
                while not self._stop.wait(0.02):
                    self._peak = max(self._peak, proc.memory_info().rss)

            self._sampler = threading.Thread(target=sample, daemon=True)
            self._sampler.start()
        return status_kb("VmRSS") * 1024

    def stop(self) -> int:
        if self._sampler is None:
            return status_kb("VmHWM") * 1024
        self._stop.set()
        self._sampler.join()
        return max(self._peak, status_kb("VmRSS") * 1024)


class StreamTap:
    """Wraps an agent's `HubClient.stream` to see what a Fetch delivered, untouched."""

    def __init__(self, client: Any) -> None:
        self._real = client.stream
        client.stream = self._stream
        self.reset()

    def reset(self) -> None:
        self.wire_bytes = 0
        self.payload_bytes = 0
        self.chunks = 0
        self.kinds: list[int] = []
        self.first_part_at = 0.0

    def _stream(self, method: str, request: Any, timeout: float) -> Iterator[Any]:
        from doorkeeper.v1 import doorkeeper_pb2 as pb

        for part in self._real(method, request, timeout):
            if not self.first_part_at:
                self.first_part_at = time.perf_counter()
            self.wire_bytes += part.ByteSize()
            which = part.WhichOneof("part")
            if which == "header":
                self.kinds.append(pb.BundleHeader.FromString(part.header.header).kind)
            elif which == "chunk":
                self.chunks += 1
                self.payload_bytes += len(part.chunk.data)
            yield part
