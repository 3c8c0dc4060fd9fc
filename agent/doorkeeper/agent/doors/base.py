"""The door driver interface and the relock timer every driver shares.

Contract (see :class:`Door`):

* A driver drives the lock to LOCKED when it starts, before anything else (fail secure).
* ``unlock(seconds)`` opens the door for ``seconds`` (0 < seconds <= ``max_unlock_seconds``);
  calling it again while open re-arms the timer to the new deadline. If the actuator fails the
  door is considered locked, the error is logged and counted, and :class:`DoorError` is raised
  so the loop can record "actuation failed".
* The door relocks itself when the deadline passes; ``lock()`` relocks at once and cancels the
  timer. A failed lock is logged, counted, shown in ``DoorState.fault`` and retried until it
  works or the driver is closed.
* ``close()`` locks and releases the hardware; afterwards ``unlock`` raises DoorError.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("doorkeeper.agent.doors")

DOOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_MAX_UNLOCK_SECONDS = 60.0
LOCK_RETRY_SECONDS = 2.0


class DoorError(Exception):
    """The actuator did not do what was asked (command failed, relay unreachable, ...)."""


class DoorConfigError(ValueError):
    """A door configuration is invalid; the message names the option (``doors.<name>.<key>``)."""


@dataclass(frozen=True)
class DoorState:
    """What a door is doing. Times are wall-clock seconds (``time.time()``), for display.

    ``unlock_until`` is the relock deadline while unlocked, else None. ``fault`` is the last
    actuation error that is still relevant (e.g. a lock that has not succeeded yet), else None.
    """

    name: str
    locked: bool
    since: float
    unlock_until: float | None = None
    fault: str | None = None


@runtime_checkable
class Door(Protocol):
    """What the verification loop drives; see the module docstring for the contract."""

    name: str

    def unlock(self, seconds: float) -> DoorState: ...

    def lock(self) -> DoorState: ...

    def state(self) -> DoorState: ...

    def close(self) -> None: ...


def check_door_name(name: object) -> str:
    """A door name is used in file names and logs: 1-64 of ``[A-Za-z0-9_.-]``, no leading dot."""
    if not isinstance(name, str) or not DOOR_NAME.fullmatch(name):
        raise DoorConfigError(
            f"doors.name: {name!r} is not a valid door name (1-64 of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit)")
    return name


class Options:
    """Strict reader for one door's option mapping: every error names ``doors.<name>.<key>``,
    and :meth:`finish` refuses keys nobody asked for (typos must not pass silently)."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.prefix = f"doors.{name}"
        self.config = config
        self.used: set[str] = {"type", "name"}

    def error(self, key: str, message: str) -> DoorConfigError:
        return DoorConfigError(f"{self.prefix}.{key}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        """The value of ``key`` checked to be of ``kind``; required when no default is given."""
        self.used.add(key)
        if key not in self.config:
            if default is ...:
                raise self.error(key, "is required")
            return default
        value = self.config[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int subclass: never accept True as a number
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"must be {_kind_names(kinds)}, got {value!r}")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.error(key, f"must be {_kind_names(kinds)}, got {type(value).__name__}")
        return value

    def seconds(self, key: str, default: float, *, maximum: float = 3600.0) -> float:
        value = self.get(key, float, default)
        if not math.isfinite(value) or not (0 < value <= maximum):
            raise self.error(key, f"must be a number of seconds in (0, {maximum:g}]")
        return float(value)

    def finish(self) -> None:
        unknown = sorted(set(self.config) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown option")


def _kind_names(kinds: tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kinds)


class TimedDoor(ABC):
    """Relock timer, counters and state bookkeeping; subclasses implement :meth:`_actuate`.

    Subclasses call :meth:`_start` at the end of ``__init__`` to drive the lock to LOCKED.
    """

    kind = "door"

    def __init__(self, name: str, *, max_unlock_seconds: float = DEFAULT_MAX_UNLOCK_SECONDS,
                 lock_retry_seconds: float = LOCK_RETRY_SECONDS) -> None:
        self.name = check_door_name(name)
        self.max_unlock_seconds = max_unlock_seconds
        self.lock_retry_seconds = lock_retry_seconds
        self.unlocks = 0
        self.relocks = 0
        self.errors = 0
        self._mutex = threading.RLock()
        self._timer: threading.Timer | None = None
        self._generation = 0
        self._closed = False
        # Not yet driven: _start() must lock before the state reads as a clean LOCKED.
        self._state = DoorState(name=self.name, locked=True, since=time.time(),
                                fault="not driven yet")

    @abstractmethod
    def _actuate(self, locked: bool, seconds: float | None) -> None:
        """Drive the hardware to locked / unlocked (for ``seconds``); raise DoorError on failure.

        Called with the driver's mutex held, so actuations never interleave.
        """

    def _announce(self, state: DoorState) -> None:
        """Hook called after every state change (the sim door prints it)."""
        if state.locked:
            log.info("door %s: LOCKED", self.name)
        else:
            log.info("door %s: UNLOCKED for %.1fs", self.name,
                     (state.unlock_until or state.since) - state.since)

    def _start(self) -> None:
        """Fail secure on start: whatever a previous run left, the door begins LOCKED."""
        with self._mutex:
            self._do_lock(announce=True)

    # -- public API --

    def unlock(self, seconds: float) -> DoorState:
        """Unlock for ``seconds`` and arm (or re-arm) the relock timer; returns the new state.

        Raises ValueError for a duration outside (0, max_unlock_seconds], DoorError when the
        actuator failed (the door is then considered locked) or the driver is closed.
        """
        if (not isinstance(seconds, int | float) or isinstance(seconds, bool)
                or not math.isfinite(seconds)
                or not (0 < seconds <= self.max_unlock_seconds)):
            raise ValueError(f"door {self.name}: unlock seconds must be in "
                             f"(0, {self.max_unlock_seconds:g}], got {seconds!r}")
        seconds = float(seconds)
        with self._mutex:
            if self._closed:
                raise DoorError(f"door {self.name}: closed")
            self._cancel_timer()
            try:
                self._actuate(False, seconds)
            except DoorError as exc:
                self.errors += 1
                log.error("door %s: unlock failed: %s; door considered locked", self.name, exc)
                self._do_lock(announce=False)
                raise
            now = time.time()
            self.unlocks += 1
            self._state = DoorState(name=self.name, locked=False, since=now,
                                    unlock_until=now + seconds)
            self._arm(seconds, self._expire)
            self._announce(self._state)
            return self._state

    def lock(self) -> DoorState:
        """Lock now and cancel any relock timer; returns the new state (``fault`` on failure)."""
        with self._mutex:
            self._cancel_timer()
            self._do_lock(announce=True)
            return self._state

    def state(self) -> DoorState:
        """The current state as this driver knows it."""
        with self._mutex:
            return self._state

    def close(self) -> None:
        """Lock, stop the timers and release the hardware; idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._cancel_timer()
            self._do_lock(announce=not self._state.locked)
            self._closed = True
            self._release()

    def _release(self) -> None:
        """Release hardware resources (overridden by drivers that hold any)."""
        return

    def __enter__(self) -> TimedDoor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --

    def _arm(self, seconds: float, callback: Any) -> None:
        self._generation += 1
        timer = threading.Timer(seconds, callback, args=(self._generation,))
        timer.name = f"door-{self.name}-timer"
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _cancel_timer(self) -> None:
        self._generation += 1  # a timer already firing sees a stale generation and does nothing
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, generation: int) -> None:
        with self._mutex:
            if generation != self._generation or self._closed:
                return
            self._timer = None
            if not self._state.locked or self._state.fault:
                self.relocks += 1
                self._do_lock(announce=True)

    def _do_lock(self, *, announce: bool) -> None:
        was_locked = self._state.locked and self._state.fault is None
        try:
            self._actuate(True, None)
        except DoorError as exc:
            self.errors += 1
            log.error("door %s: LOCK FAILED: %s; retrying in %.1fs",
                      self.name, exc, self.lock_retry_seconds)
            self._state = DoorState(name=self.name, locked=self._state.locked,
                                    since=self._state.since,
                                    unlock_until=self._state.unlock_until, fault=str(exc))
            if not self._closed:
                self._arm(self.lock_retry_seconds, self._expire)
            return
        if not was_locked or self._state.fault is not None:
            self._state = DoorState(name=self.name, locked=True, since=time.time())
            if announce:
                self._announce(self._state)
