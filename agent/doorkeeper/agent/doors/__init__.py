"""Door drivers: one small interface (:class:`Door`), one plugin per ``type``.

``open_door(config, state_dir=...)`` builds a driver from one door's config mapping:

===========  ==================================================================================
type         options (besides ``name``, required, and ``max_unlock_seconds``, default 60)
===========  ==================================================================================
``sim``      ``state_dir`` (default: the ``state_dir`` argument), ``echo`` (bool, default true)
``gpio``     ``chip`` (e.g. ``/dev/gpiochip0``), ``line`` (offset or line name),
             ``active_low`` (bool, default false), ``consumer`` (default ``doorkeeper``)
``command``  ``unlock``, ``lock`` (argv lists, no shell), ``timeout`` (s, default 5)
``http``     ``unlock_url``, ``lock_url``, ``method`` (POST/GET/PUT, default POST),
             ``timeout`` (s, default 3), ``headers`` (str->str), ``unlock_body``, ``lock_body``
===========  ==================================================================================

``type`` defaults to ``sim``. Unknown options, wrong types and bad values raise
:class:`DoorConfigError` naming ``doors.<name>.<option>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .base import (
    DEFAULT_MAX_UNLOCK_SECONDS,
    Door,
    DoorConfigError,
    DoorError,
    DoorState,
    Options,
    TimedDoor,
    check_door_name,
)

__all__ = [
    "DOOR_TYPES",
    "Door",
    "DoorConfigError",
    "DoorError",
    "DoorState",
    "TimedDoor",
    "open_door",
    "read_door_state",
]

DOOR_TYPES = ("sim", "gpio", "command", "http")


def read_door_state(state_dir: str | os.PathLike[str], name: str) -> DoorState:
    """Fail-secure reader of a sim door's state file (see :mod:`.sim`)."""
    from .sim import read_door_state as _read

    return _read(state_dir, name)


def open_door(config: Mapping[str, Any], *,
              state_dir: str | os.PathLike[str] | None = None) -> Door:
    """Validate ``config`` and start the driver it names; the door is LOCKED on return.

    ``state_dir`` is where sim doors keep their state file unless the config sets one.
    Raises DoorConfigError for invalid config (including a missing optional dependency) and
    DoorError when the hardware cannot be acquired.
    """
    if not isinstance(config, Mapping):
        raise DoorConfigError("doors: each door must be a mapping of options")
    name = check_door_name(config.get("name"))
    opts = Options(name, config)
    kind = opts.get("type", str, "sim")
    if kind not in DOOR_TYPES:
        raise opts.error("type", f"must be one of {', '.join(DOOR_TYPES)}, got {kind!r}")
    max_unlock = opts.seconds("max_unlock_seconds", DEFAULT_MAX_UNLOCK_SECONDS)

    if kind == "sim":
        from .sim import SimDoor

        directory = opts.get("state_dir", str, None)
        if directory is None:
            if state_dir is None:
                raise opts.error("state_dir", "is required (no agent data directory given)")
            directory = os.fspath(state_dir)
        echo = opts.get("echo", bool, True)
        opts.finish()
        return SimDoor(name, directory, max_unlock_seconds=max_unlock, echo=echo)

    if kind == "gpio":
        from .gpio import GpioDoor

        chip = opts.get("chip", str)
        line = opts.get("line", (int, str))
        if isinstance(line, int) and not 0 <= line < 4096:
            raise opts.error("line", "offset must be in [0, 4096)")
        if isinstance(line, str) and not 0 < len(line) <= 64:
            raise opts.error("line", "name must be 1-64 characters")
        active_low = opts.get("active_low", bool, False)
        consumer = opts.get("consumer", str, "doorkeeper")
        opts.finish()
        return GpioDoor(name, chip=chip, line=line, active_low=active_low, consumer=consumer,
                        max_unlock_seconds=max_unlock)

    if kind == "command":
        from .relay import CommandDoor

        unlock = opts.get("unlock", (list, tuple))
        lock = opts.get("lock", (list, tuple))
        timeout = opts.seconds("timeout", 5.0, maximum=120.0)
        opts.finish()
        return CommandDoor(name, unlock=unlock, lock=lock, timeout=timeout,
                           max_unlock_seconds=max_unlock)

    from .relay import HttpDoor

    unlock_url = opts.get("unlock_url", str)
    lock_url = opts.get("lock_url", str)
    method = opts.get("method", str, "POST")
    timeout = opts.seconds("timeout", 3.0, maximum=60.0)
    headers = opts.get("headers", Mapping, {})
    unlock_body = opts.get("unlock_body", str, None)
    lock_body = opts.get("lock_body", str, None)
    opts.finish()
    return HttpDoor(name, unlock_url=unlock_url, lock_url=lock_url, method=method,
                    timeout=timeout, headers=headers, unlock_body=unlock_body,
                    lock_body=lock_body, max_unlock_seconds=max_unlock)
