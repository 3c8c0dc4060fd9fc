"""The simulated door (the default): prints and logs each state change and keeps a state file.

The state file ``<state_dir>/door-<name>.json`` lets another process (the demo, tests, an
operator) see the door. It is replaced atomically (temp file, fsync, rename, fsync of the
folder), so a reader never sees half a file.

Fail secure across crashes: the file records the writer's pid and process start time, the boot
id and both a wall-clock and a monotonic deadline. :func:`read_door_state` reports LOCKED for
an unlocked record whose writer is gone (crashed, killed, zombie), whose deadline has passed by
either clock, that was written before a reboot, or that cannot be parsed. And a new
:class:`SimDoor` always writes LOCKED first.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from .base import (
    DEFAULT_MAX_UNLOCK_SECONDS,
    DoorError,
    DoorState,
    TimedDoor,
    check_door_name,
)

log = logging.getLogger("doorkeeper.agent.doors")

STATE_FORMAT = 1
MAX_STATE_FILE_BYTES = 4096


def boot_id() -> str | None:
    """The kernel's per-boot random id (Linux), or None where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def state_path(state_dir: str | os.PathLike[str], name: str) -> Path:
    """Where the state file of door ``name`` lives (the name is validated first)."""
    return Path(state_dir) / f"door-{check_door_name(name)}.json"


def _process_start_time(pid: int) -> float | None:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_door_state(state_dir: str | os.PathLike[str], name: str) -> DoorState:
    """The state of a sim door as any process may rely on it: fail secure.

    Returns LOCKED unless the file says unlocked AND its writer process is still the same live
    process AND the deadline has not passed by the wall clock nor (same boot) the monotonic
    clock. A missing, oversized or malformed file reads as LOCKED.
    """
    path = state_path(state_dir, name)
    locked = DoorState(name=name, locked=True, since=0.0)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_STATE_FILE_BYTES + 1)
    except FileNotFoundError:
        return locked
    except OSError as exc:
        log.warning("door %s: cannot read state file: %s; reading as LOCKED", name, exc)
        return locked
    try:
        if len(raw) > MAX_STATE_FILE_BYTES:
            raise ValueError("state file too large")
        record: dict[str, Any] = json.loads(raw)
        if record.get("format") != STATE_FORMAT or record.get("door") != name:
            raise ValueError("wrong format or door")
        since = float(record["since_wall"])
        if record["locked"] is True:
            return DoorState(name=name, locked=True, since=since)
        if record["locked"] is not False:
            raise ValueError("locked is not a boolean")
        until_wall = float(record["unlock_until_wall"])
        until_mono = float(record["unlock_until_mono"])
        pid = int(record["pid"])
        started = float(record["pid_start"])
        written_boot = record.get("boot_id")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("door %s: malformed state file (%s); reading as LOCKED", name, exc)
        return locked
    ended = DoorState(name=name, locked=True, since=until_wall)
    if time.time() >= until_wall:
        return ended
    current_boot = boot_id()
    if written_boot is None or current_boot is None or written_boot != current_boot:
        return ended  # a reboot ended that process; monotonic times are not comparable
    if time.monotonic() >= until_mono:
        return ended  # the wall clock may have jumped back; the monotonic one did not
    live_start = _process_start_time(pid)
    if live_start is None or abs(live_start - started) > 1.0:
        return ended  # the writer died (or its pid now belongs to someone else)
    return DoorState(name=name, locked=False, since=since, unlock_until=until_wall)


class SimDoor(TimedDoor):
    """A door that exists only as log lines, stdout lines and a state file.

    Prints ``door <name>: UNLOCKED for 3.0s`` / ``door <name>: LOCKED`` on each change when
    ``echo`` is true (the default), and logs the same line.
    """

    kind = "sim"

    def __init__(self, name: str, state_dir: str | os.PathLike[str], *,
                 max_unlock_seconds: float = DEFAULT_MAX_UNLOCK_SECONDS,
                 echo: bool = True) -> None:
        super().__init__(name, max_unlock_seconds=max_unlock_seconds)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_path(self.state_dir, self.name)
        self.echo = echo
        self._pid = os.getpid()
        self._pid_start = _process_start_time(self._pid) or 0.0
        self._boot_id = boot_id()
        self._start()

    def _actuate(self, locked: bool, seconds: float | None) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        record: dict[str, Any] = {
            "format": STATE_FORMAT,
            "door": self.name,
            "locked": locked,
            "since_wall": now_wall,
            "pid": self._pid,
            "pid_start": self._pid_start,
            "boot_id": self._boot_id,
        }
        if not locked:
            assert seconds is not None
            record["unlock_until_wall"] = now_wall + seconds
            record["unlock_until_mono"] = now_mono + seconds
        try:
            _write_atomic(self.path, json.dumps(record, sort_keys=True).encode())
        except OSError as exc:
            raise DoorError(f"cannot write state file: {exc.strerror}") from exc

    def _announce(self, state: DoorState) -> None:
        super()._announce(state)
        if self.echo:
            if state.locked:
                print(f"door {self.name}: LOCKED", flush=True)
            else:
                seconds = (state.unlock_until or state.since) - state.since
                print(f"door {self.name}: UNLOCKED for {seconds:.1f}s", flush=True)
