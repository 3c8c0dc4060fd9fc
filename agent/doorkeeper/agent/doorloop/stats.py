"""What a door loop counts: the live counters, the latency window, and the LoopStats snapshot.

The counters are written by the decision path (and ``present_card``/``present_pin`` from any
thread) under one lock; :class:`LoopStats` is the immutable copy handed to metrics and logs.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from dataclasses import dataclass, field

LATENCY_WINDOW = 2048  # latest per-frame latencies kept for the percentiles


@dataclass(frozen=True)
class LoopStats:
    """Counters for metrics. ``frames``: good frames read from the camera by this loop;
    ``bad_frames``: the camera's skipped-frame counts by reason; ``skipped``: frames without
    a usable face, by ``check_frame`` reason; ``decisions``: by result; ``reasons``: by
    reason code; latencies are frame grab (or credential presentation) to decision, in ms,
    over the latest ``LATENCY_WINDOW`` frames (None before the first)."""

    frames: int
    bad_frames: dict[str, int]
    skipped: dict[str, int]
    decisions: dict[str, int]
    reasons: dict[str, int]
    frame_errors: int
    actuations: int
    actuation_failures: int
    actuations_dropped: int
    records_failed: int
    records_dropped: int
    p50_ms: float | None
    p99_ms: float | None
    latency_samples: int
    whitelist_version: int


@dataclass
class LoopCounters:
    """The loop's mutable counts; read or write them only while holding ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    frames: int = 0
    frame_errors: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


class LatencyTracker:
    """Percentiles over a ring of the latest samples; thread-safe, O(1) to add."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, ms: float) -> None:
        with self._lock:
            self._samples.append(ms)
            self.count += 1

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (``q`` in (0, 100]) of the window, or None when empty."""
        with self._lock:
            ordered = sorted(self._samples)
        if not ordered:
            return None
        rank = max(1, math.ceil(q / 100.0 * len(ordered)))
        return ordered[rank - 1]
