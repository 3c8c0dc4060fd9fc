"""One door's loop settings (:class:`DoorLoopConfig`), checked when built.

Imported through :mod:`doorkeeper.agent.doorloop.loop`, like every part of the loop. A value out
of range raises ValueError naming ``doorloop.<field>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from doorkeeper.agent.doors.base import check_door_name
from doorkeeper.agent.face.gallery import DEFAULT_MARGIN, DEFAULT_THRESHOLD


@dataclass(frozen=True)
class DoorLoopConfig:
    """One door's loop settings; invalid values raise ValueError naming ``doorloop.<field>``.

    ``max_frames`` 0 means unlimited; otherwise ``run`` returns after that many frames were
    read from the camera (frames, not decisions). ``episode_gap_s`` None: only a frame
    without a face ends an episode. ``redecide_after_s`` None: a face is decided once per
    episode; a number: again after that many seconds in view. ``log_person_ids`` False puts
    ``-`` instead of person ids in log and stdout lines (the entry log still has them).
    """

    door: str
    confirm_frames: int = 2
    unlock_seconds: float = 3.0
    shadow: bool = False
    threshold: float = DEFAULT_THRESHOLD
    margin: float = DEFAULT_MARGIN
    max_frames: int = 0
    poll_interval_s: float = 0.02
    read_timeout_s: float = 0.2
    episode_gap_s: float | None = 2.0
    redecide_after_s: float | None = 10.0
    echo: bool = True
    log_person_ids: bool = True
    # After this many unknown PINs (or cards) within a minute, refuse that credential type
    # for keypad_lockout_s without looking anything up.
    keypad_max_failures: int = 5
    keypad_lockout_s: float = 60.0

    def __post_init__(self) -> None:
        try:
            check_door_name(self.door)
        except ValueError as exc:
            raise ValueError(f"doorloop.door: {exc}") from None

        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"doorloop.{name}: {why}, got {getattr(self, name)!r}")

        def number(value: object) -> bool:
            return (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value))

        if not isinstance(self.confirm_frames, int) or not 1 <= self.confirm_frames <= 100:
            raise bad("confirm_frames", "must be an int in [1, 100]")
        if not number(self.unlock_seconds) or not 0 < self.unlock_seconds <= 3600:
            raise bad("unlock_seconds", "must be seconds in (0, 3600]")
        if not number(self.threshold) or not -1.0 <= self.threshold <= 1.0:
            raise bad("threshold", "must be a cosine in [-1, 1]")
        if not number(self.margin) or not 0.0 <= self.margin <= 2.0:
            raise bad("margin", "must be in [0, 2]")
        if not isinstance(self.max_frames, int) or self.max_frames < 0:
            raise bad("max_frames", "must be an int >= 0 (0 = unlimited)")
        for name in ("poll_interval_s", "read_timeout_s"):
            value = getattr(self, name)
            if not number(value) or not 0 < value <= 60:
                raise bad(name, "must be seconds in (0, 60]")
        for name in ("episode_gap_s", "redecide_after_s"):
            value = getattr(self, name)
            if value is not None and (not number(value) or value <= 0):
                raise bad(name, "must be positive seconds or None")
        if not isinstance(self.keypad_max_failures, int) or not 1 <= self.keypad_max_failures <= 1000:
            raise bad("keypad_max_failures", "must be an int in [1, 1000]")
        if not number(self.keypad_lockout_s) or not 0 < self.keypad_lockout_s <= 86400:
            raise bad("keypad_lockout_s", "must be seconds in (0, 86400]")
        for name in ("shadow", "echo", "log_person_ids"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be a bool")
