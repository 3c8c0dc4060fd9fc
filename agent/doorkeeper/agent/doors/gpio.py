"""A door relay on a GPIO line, through the libgpiod v2 Python bindings (``gpiod``).

The bindings are an optional extra, imported only when a gpio door is configured:
``pip install 'doorkeeper[gpio]'`` (and a kernel with the GPIO character device).

Levels: the line is *active* while the door is unlocked (relay energised) and *inactive* while
locked. ``active_low=True`` inverts the electrical level, for the common relay boards whose
input energises the relay when pulled LOW: then inactive (locked) is a HIGH pin.

Fail secure, and what software can and cannot promise:

* The line is requested as an output whose initial value is inactive (locked), so from the
  moment this process owns it the pin is at the locked level; ``close()`` drives it inactive
  before releasing it. No window exists where a fresh start leaves the pin unlocked.
* When the process dies the kernel releases the line. What the pin does after release depends
  on the GPIO controller driver (many keep the last driven level), so a crash mid-unlock is
  made safe by wiring, not by software: use a fail-secure strike on the relay's normally-open
  contact (de-energised = locked), a pull resistor holding the relay input at its inactive
  level, and where possible a lock controller with its own maximum open time.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .base import DEFAULT_MAX_UNLOCK_SECONDS, DoorConfigError, DoorError, TimedDoor

INSTALL_HINT = "pip install 'doorkeeper[gpio]'"


def import_gpiod() -> tuple[ModuleType, Any, Any]:
    """Return (gpiod, Direction, Value) from the v2 bindings, or raise DoorConfigError saying
    what to install."""
    try:
        gpiod = importlib.import_module("gpiod")
        line = importlib.import_module("gpiod.line")
    except ImportError as exc:
        raise DoorConfigError(
            f"door type 'gpio' needs the libgpiod v2 Python bindings: {INSTALL_HINT}") from exc
    if not hasattr(gpiod, "request_lines") or not hasattr(gpiod, "LineSettings"):
        raise DoorConfigError(
            "door type 'gpio': the installed 'gpiod' module is not libgpiod v2 "
            f"(no request_lines); {INSTALL_HINT}")
    return gpiod, line.Direction, line.Value


class GpioDoor(TimedDoor):
    """Drives one GPIO line: active = unlocked, inactive = locked (see module docstring)."""

    kind = "gpio"

    def __init__(self, name: str, *, chip: str, line: int | str, active_low: bool = False,
                 consumer: str = "doorkeeper",
                 max_unlock_seconds: float = DEFAULT_MAX_UNLOCK_SECONDS) -> None:
        super().__init__(name, max_unlock_seconds=max_unlock_seconds)
        gpiod, direction, value = import_gpiod()
        self._value = value
        self.chip = chip
        self.line = line
        self.active_low = active_low
        settings = gpiod.LineSettings(direction=direction.OUTPUT,
                                      output_value=value.INACTIVE, active_low=active_low)
        try:
            self._request: Any = gpiod.request_lines(chip, consumer=consumer,
                                                     config={line: settings})
        except (OSError, ValueError) as exc:
            raise DoorError(f"door {name}: cannot request GPIO line {line!r} on {chip}: "
                            f"{exc}") from exc
        self._start()

    def _actuate(self, locked: bool, seconds: float | None) -> None:
        if self._request is None:
            raise DoorError("GPIO line released")
        level = self._value.INACTIVE if locked else self._value.ACTIVE
        try:
            self._request.set_value(self.line, level)
        except Exception as exc:  # the bindings raise OSError or their own RequestReleasedError
            raise DoorError(f"set_value failed: {exc}") from exc

    def _release(self) -> None:
        if self._request is not None:
            try:
                self._request.release()
            finally:
                self._request = None
