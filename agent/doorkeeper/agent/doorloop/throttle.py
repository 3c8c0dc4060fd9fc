"""Keypad and card-reader attempt throttling: offline guessing of short PINs must be slow.

A door that checks PINs locally has no hub to notice a guessing run, so after
`max_failures` unknown credentials within `window_s` it refuses every attempt of that kind
for `lockout_s` without looking anything up (reason `rate_limited`, recorded like any other
decision). Malformed input does not count (reader noise is not guessing); a grant resets.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class AttemptThrottle:
    def __init__(self, max_failures: int = 5, window_s: float = 60.0, lockout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_failures < 1 or window_s <= 0 or lockout_s <= 0:
            raise ValueError("throttle needs max_failures >= 1 and positive window and lockout")
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.clock = clock
        self._failures: deque[float] = deque()
        self._locked_until = 0.0
        self._lock = threading.Lock()
        self.lockouts = 0

    def locked(self) -> bool:
        with self._lock:
            return self.clock() < self._locked_until

    def record(self, *, failed: bool) -> None:
        """Count one decided attempt: a failure (unknown credential) or a grant (resets)."""
        now = self.clock()
        with self._lock:
            if not failed:
                self._failures.clear()
                return
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.window_s:
                self._failures.popleft()
            if len(self._failures) >= self.max_failures:
                self._locked_until = now + self.lockout_s
                self._failures.clear()
                self.lockouts += 1
