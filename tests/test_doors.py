"""Door drivers: relock timer, fail secure after a crash, strict config, real command and HTTP
relays.

Real parts: state files in tmp_path, a real subprocess that is SIGKILLed mid-unlock, real
argv commands, a real HTTP relay on 127.0.0.1 port 0. The GPIO driver runs against a fake
``gpiod`` module shaped like the libgpiod v2 API (request_lines / LineSettings / set_value /
release) only because no GPIO chip exists on this machine.
"""

from __future__ import annotations

import enum
import errno
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from doorkeeper.agent.doors import (
    DoorConfigError,
    DoorError,
    open_door,
    read_door_state,
)
from doorkeeper.agent.doors.sim import boot_id, state_path

WAIT = 30.0  # generous: the machine is shared; tests wait for events, never measure speed


def _wait_until(predicate, timeout: float = WAIT) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --- sim door ---------------------------------------------------------------------------


def test_sim_door_unlocks_prints_and_relocks_on_its_timer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    door = open_door({"name": "front"}, state_dir=tmp_path)
    try:
        assert door.state().locked and door.state().fault is None
        state = door.unlock(3)
        assert not state.locked and state.unlock_until is not None
        assert not read_door_state(tmp_path, "front").locked  # visible to other processes
        assert _wait_until(lambda: door.state().locked)
        assert read_door_state(tmp_path, "front").locked
        out = capsys.readouterr().out.splitlines()
        assert out == ["door front: LOCKED", "door front: UNLOCKED for 3.0s", "door front: LOCKED"]
        assert door.relocks == 1 and door.unlocks == 1  # type: ignore[attr-defined]
    finally:
        door.close()


def test_unlock_again_while_open_rearms_the_timer(tmp_path: Path) -> None:
    door = open_door({"name": "front", "echo": False}, state_dir=tmp_path)
    try:
        door.unlock(0.1)
        door.unlock(50)
        time.sleep(0.5)  # well past the first deadline: its timer must have been cancelled
        assert not door.state().locked
        assert not read_door_state(tmp_path, "front").locked
    finally:
        door.close()
    assert read_door_state(tmp_path, "front").locked


def test_lock_cancels_the_timer(tmp_path: Path) -> None:
    door = open_door({"name": "side", "echo": False}, state_dir=tmp_path)
    door.unlock(50)
    state = door.lock()
    assert state.locked and state.unlock_until is None
    assert read_door_state(tmp_path, "side").locked
    assert door.relocks == 0  # type: ignore[attr-defined]
    door.close()
    with pytest.raises(DoorError, match="closed"):
        door.unlock(1)


def test_unlock_duration_is_bounded(tmp_path: Path) -> None:
    door = open_door({"name": "front", "echo": False, "max_unlock_seconds": 10},
                     state_dir=tmp_path)
    try:
        for bad in (0, -1, 10.5, float("nan"), float("inf"), True):
            with pytest.raises(ValueError, match="unlock seconds"):
                door.unlock(bad)  # type: ignore[arg-type]
        assert door.state().locked
    finally:
        door.close()


def _write_record(tmp_path: Path, name: str, **overrides: Any) -> None:
    now_wall, now_mono = time.time(), time.monotonic()
    record = {
        "format": 1, "door": name, "locked": False, "since_wall": now_wall,
        "unlock_until_wall": now_wall + 600, "unlock_until_mono": now_mono + 600,
        "pid": os.getpid(), "pid_start": psutil.Process().create_time(), "boot_id": boot_id(),
    }
    record.update(overrides)
    state_path(tmp_path, name).write_text(json.dumps(record))


def test_reader_trusts_a_live_writer_and_nothing_else(tmp_path: Path) -> None:
    _write_record(tmp_path, "d")
    assert not read_door_state(tmp_path, "d").locked  # live writer, deadline ahead

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    cases: dict[str, dict[str, Any]] = {
        "writer pid is dead": {"pid": int(dead.stdout)},
        "pid reused by another process": {"pid_start": 12345.0},
        "wall deadline passed": {"unlock_until_wall": time.time() - 1},
        "monotonic deadline passed": {"unlock_until_mono": time.monotonic() - 1},
        "written before a reboot": {"boot_id": "another-boot"},
        "unknown boot": {"boot_id": None},
        "locked not a bool": {"locked": "no"},
        "other door's record": {"door": "other"},
        "future format": {"format": 2},
        "missing field": {"pid": None},
    }
    for why, overrides in cases.items():
        _write_record(tmp_path, "d", **overrides)
        assert read_door_state(tmp_path, "d").locked, why
    state_path(tmp_path, "d").write_text("{not json")
    assert read_door_state(tmp_path, "d").locked
    state_path(tmp_path, "d").write_text(" " * 10_000)
    assert read_door_state(tmp_path, "d").locked
    state_path(tmp_path, "d").unlink()
    assert read_door_state(tmp_path, "d").locked


def test_a_new_driver_drives_the_door_locked_first(tmp_path: Path) -> None:
    _write_record(tmp_path, "front")  # looks like a live unlock
    assert not read_door_state(tmp_path, "front").locked
    door = open_door({"name": "front", "echo": False}, state_dir=tmp_path)
    try:
        assert door.state().locked
        assert json.loads(state_path(tmp_path, "front").read_text())["locked"] is True
    finally:
        door.close()


CRASH_SCRIPT = """
import sys, time
from doorkeeper.agent.doors import open_door
door = open_door({"name": "front"}, state_dir=sys.argv[1])
door.unlock(30)
print("unlocked-and-waiting", flush=True)
time.sleep(600)
"""


def test_agent_killed_mid_unlock_leaves_the_door_locked(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "unlocked-and-waiting":
                break
        assert lines == ["door front: LOCKED", "door front: UNLOCKED for 30.0s",
                         "unlocked-and-waiting"]
        assert not read_door_state(tmp_path, "front").locked  # really open while it lives
        os.kill(proc.pid, signal.SIGKILL)
        # Even before the parent reaps it (a zombie), the record reads as LOCKED.
        assert _wait_until(lambda: read_door_state(tmp_path, "front").locked)
    finally:
        proc.kill()
        proc.wait(WAIT)
    assert proc.returncode == -signal.SIGKILL
    assert read_door_state(tmp_path, "front").locked
    door = open_door({"name": "front", "echo": False}, state_dir=tmp_path)
    try:
        assert door.state().locked
        assert json.loads(state_path(tmp_path, "front").read_text())["locked"] is True
    finally:
        door.close()


# --- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "front", "colour": "red"}, r"doors\.front\.colour: unknown option"),
        ({"name": "front", "type": "magnet"}, r"doors\.front\.type: must be one of"),
        ({"name": "front", "echo": "yes"}, r"doors\.front\.echo: must be bool"),
        ({"name": "front", "max_unlock_seconds": True}, r"doors\.front\.max_unlock_seconds"),
        ({"name": "front", "max_unlock_seconds": 0}, r"doors\.front\.max_unlock_seconds"),
        ({"name": "../etc/passwd"}, r"doors\.name: .* not a valid door name"),
        ({"name": ""}, r"doors\.name"),
        ({}, r"doors\.name"),
        ({"name": "g", "type": "gpio", "line": 3}, r"doors\.g\.chip: is required"),
        ({"name": "c", "type": "command", "unlock": "/bin/true", "lock": ["true"]},
         r"doors\.c\.unlock: must be list or tuple"),
        ({"name": "c", "type": "command", "unlock": [], "lock": ["true"]},
         r"doors\.c\.unlock: must be a non-empty list"),
        ({"name": "c", "type": "command", "unlock": ["no-such-program-xyz"], "lock": ["true"]},
         r"doors\.c\.unlock\[0\]: program"),
        ({"name": "c", "type": "command", "unlock": ["true"], "lock": ["true"], "timeout": -1},
         r"doors\.c\.timeout"),
        ({"name": "h", "type": "http", "unlock_url": "file:///etc/passwd",
          "lock_url": "http://x/"}, r"doors\.h\.unlock_url"),
        ({"name": "h", "type": "http", "unlock_url": "http://x/", "lock_url": "http://x/",
          "method": "DELETE"}, r"doors\.h\.method"),
        ({"name": "h", "type": "http", "unlock_url": "http://x/", "lock_url": "http://x/",
          "headers": {"X-Token": "a\r\nInjected: 1"}}, r"doors\.h\.headers"),
    ],
)
def test_config_errors_name_the_option(tmp_path: Path, config: dict[str, Any],
                                       message: str) -> None:
    with pytest.raises(DoorConfigError, match=message):
        open_door(config, state_dir=tmp_path)


def test_sim_needs_a_state_dir() -> None:
    with pytest.raises(DoorConfigError, match=r"doors\.front\.state_dir"):
        open_door({"name": "front"})


# --- command relay ----------------------------------------------------------------------

RECORDER = "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')"


def test_command_door_runs_argv_without_a_shell(tmp_path: Path) -> None:
    log = tmp_path / "actions.log"
    hostile = "$(touch pwned); rm -rf /"
    door = open_door({
        "name": "gate", "type": "command",
        "unlock": [sys.executable, "-c", RECORDER, str(log), "unlock", "{seconds}", hostile],
        "lock": [sys.executable, "-c", RECORDER, str(log), "lock"],
    })
    try:
        door.unlock(2.5)
        door.lock()
    finally:
        door.close()
    # start-up lock, unlock, lock, and close() drives the lock once more whatever it believes
    assert log.read_text().splitlines() == ["lock", f"unlock 2.5 {hostile}", "lock", "lock"]
    assert not (Path.cwd() / "pwned").exists()


def test_command_failure_is_counted_and_door_stays_locked(tmp_path: Path) -> None:
    door = open_door({
        "name": "gate", "type": "command",
        "unlock": [sys.executable, "-c", "import sys; sys.stderr.write('relay says no'); "
                   "sys.exit(3)"],
        "lock": ["true"],
    })
    try:
        with pytest.raises(DoorError, match="exited 3: 'relay says no'"):
            door.unlock(5)
        assert door.state().locked and door.state().fault is None
        assert door.errors == 1  # type: ignore[attr-defined]
    finally:
        door.close()


def test_command_timeout_is_a_failure(tmp_path: Path) -> None:
    door = open_door({
        "name": "gate", "type": "command", "timeout": 0.5,
        "unlock": [sys.executable, "-c", "import time; time.sleep(60)"],
        "lock": ["true"],
    })
    try:
        with pytest.raises(DoorError, match="timed out"):
            door.unlock(5)
        assert door.state().locked
    finally:
        door.close()


def test_a_failed_lock_is_reported_and_retried(tmp_path: Path) -> None:
    # The lock command fails twice (after the start-up lock), then works.
    counter = tmp_path / "count"
    counter.write_text("0")
    flaky = ("import sys, pathlib; p = pathlib.Path(sys.argv[1]); n = int(p.read_text()) + 1; "
             "p.write_text(str(n)); sys.exit(0 if n == 1 or n > 3 else 1)")
    door = open_door({
        "name": "gate", "type": "command",
        "unlock": ["true"], "lock": [sys.executable, "-c", flaky, str(counter)],
    })
    door.lock_retry_seconds = 0.05  # type: ignore[attr-defined]
    try:
        door.unlock(5)
        state = door.lock()
        assert not state.locked and state.fault is not None  # honest: the lock did not happen
        assert _wait_until(lambda: door.state().locked and door.state().fault is None)
        assert door.errors >= 2  # type: ignore[attr-defined]
    finally:
        door.close()


# --- HTTP relay -------------------------------------------------------------------------


@dataclass
class _Relay:
    url: str
    requests: list[tuple[str, str, bytes, str | None]]
    status: list[int]
    fail_prefix: str = "/"  # status[0] is returned for paths under this prefix, else 200


@pytest.fixture
def relay() -> Iterator[_Relay]:
    state = _Relay(url="", requests=[], status=[200])

    class Handler(http.server.BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            state.requests.append((self.command, self.path, body, self.headers.get("X-Token")))
            code = state.status[0] if self.path.startswith(state.fail_prefix) else 200
            self.send_response(code)
            if code == 302:
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = do_PUT = _handle

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    yield state
    server.shutdown()
    server.server_close()


def test_http_door_posts_to_a_real_relay(relay: _Relay) -> None:
    door = open_door({
        "name": "lobby", "type": "http",
        "unlock_url": relay.url + "/relay/0?turn=on&timer={seconds}",
        "lock_url": relay.url + "/relay/0?turn=off",
        "headers": {"X-Token": "secret"}, "unlock_body": '{"open": {seconds}}',
    })
    try:
        door.unlock(3)
        assert _wait_until(lambda: door.state().locked)  # relocked by the timer
    finally:
        door.close()
    assert relay.requests[:3] == [
        ("POST", "/relay/0?turn=off", b"", "secret"),
        ("POST", "/relay/0?turn=on&timer=3", b'{"open": 3}', "secret"),
        ("POST", "/relay/0?turn=off", b"", "secret"),
    ]


def test_http_errors_unreachable_relay_and_redirects_fail(relay: _Relay) -> None:
    door = open_door({"name": "lobby", "type": "http", "method": "GET",
                      "unlock_url": relay.url + "/on", "lock_url": relay.url + "/off"})
    relay.fail_prefix = "/on"  # the relay refuses to open but still locks
    try:
        relay.status[0] = 500
        with pytest.raises(DoorError, match="HTTP 500"):
            door.unlock(3)
        relay.status[0] = 302
        with pytest.raises(DoorError, match="HTTP 302"):
            door.unlock(3)
        assert door.state().locked and door.state().fault is None
        assert door.errors == 2  # type: ignore[attr-defined]
    finally:
        door.close()

    with pytest.raises(DoorError, match="lock request failed"):
        # a closed port: the start-up lock itself cannot be delivered
        dead = open_door({"name": "lobby", "type": "http", "timeout": 2,
                          "unlock_url": "http://127.0.0.1:1/on",
                          "lock_url": "http://127.0.0.1:1/off"})
        try:
            dead.unlock(3)
        finally:
            dead.close()


# --- GPIO (fake libgpiod v2: no GPIO chip on this machine) -------------------------------


class _Direction(enum.Enum):
    AS_IS = 1
    INPUT = 2
    OUTPUT = 3


class _Value(enum.Enum):
    INACTIVE = 0
    ACTIVE = 1


class _RequestReleasedError(Exception):
    pass


@dataclass
class _LineSettings:
    direction: _Direction = _Direction.AS_IS
    active_low: bool = False
    output_value: _Value = _Value.INACTIVE


class _FakeChip:
    """Physical pin levels; like many GPIO drivers, a released line keeps its last level."""

    def __init__(self, lines: int = 8) -> None:
        self.level = dict.fromkeys(range(lines), 0)
        self.owner: dict[int, str] = {}
        self.history: list[tuple[int, int]] = []

    def drive(self, offset: int, level: int) -> None:
        self.level[offset] = level
        self.history.append((offset, level))


class _LineRequest:
    def __init__(self, chip: _FakeChip, settings: dict[int, _LineSettings]) -> None:
        self.chip, self.settings, self.released = chip, settings, False

    def set_value(self, line: int, value: _Value) -> None:
        if self.released:
            raise _RequestReleasedError()
        s = self.settings[line]
        self.chip.drive(line, value.value ^ int(s.active_low))

    def release(self) -> None:
        if self.released:
            raise _RequestReleasedError()
        self.released = True
        for line in self.settings:
            del self.chip.owner[line]


def _fake_gpiod(chips: dict[str, _FakeChip]) -> tuple[types.ModuleType, types.ModuleType]:
    gpiod = types.ModuleType("gpiod")
    line_mod = types.ModuleType("gpiod.line")
    line_mod.Direction = _Direction  # type: ignore[attr-defined]
    line_mod.Value = _Value  # type: ignore[attr-defined]

    def request_lines(path: str, consumer: str | None = None,
                      config: dict[Any, _LineSettings] | None = None) -> _LineRequest:
        if path not in chips:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        chip = chips[path]
        settings: dict[int, _LineSettings] = {}
        for key, s in (config or {}).items():
            for offset in key if isinstance(key, tuple) else (key,):
                if offset not in chip.level:
                    raise ValueError(f"invalid line {offset}")
                if offset in chip.owner:
                    raise OSError(errno.EBUSY, "Device or resource busy")
                settings[offset] = s
        for offset, s in settings.items():
            chip.owner[offset] = consumer or "?"
            if s.direction is _Direction.OUTPUT:  # the kernel drives the initial value
                chip.drive(offset, s.output_value.value ^ int(s.active_low))
        return _LineRequest(chip, settings)

    gpiod.request_lines = request_lines  # type: ignore[attr-defined]
    gpiod.LineSettings = _LineSettings  # type: ignore[attr-defined]
    gpiod.line = line_mod  # type: ignore[attr-defined]
    return gpiod, line_mod


@pytest.fixture
def chip(monkeypatch: pytest.MonkeyPatch) -> _FakeChip:
    chip = _FakeChip()
    gpiod, line_mod = _fake_gpiod({"/dev/gpiochip0": chip})
    monkeypatch.setitem(sys.modules, "gpiod", gpiod)
    monkeypatch.setitem(sys.modules, "gpiod.line", line_mod)
    return chip


def test_gpio_missing_bindings_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiod", None)  # import gpiod -> ImportError
    with pytest.raises(DoorConfigError, match=r"pip install 'doorkeeper\[gpio\]'"):
        open_door({"name": "g", "type": "gpio", "chip": "/dev/gpiochip0", "line": 3})


@pytest.mark.parametrize(("active_low", "locked_level", "unlocked_level"),
                         [(False, 0, 1), (True, 1, 0)])
def test_gpio_door_levels_timer_and_release(chip: _FakeChip, active_low: bool,
                                            locked_level: int, unlocked_level: int) -> None:
    chip.level[3] = unlocked_level  # whatever a crashed run left on the pin
    door = open_door({"name": "g", "type": "gpio", "chip": "/dev/gpiochip0", "line": 3,
                      "active_low": active_low})
    # requested with the locked level as the initial output: never an unlocked window
    assert chip.history[0] == (3, locked_level)
    assert chip.owner[3] == "doorkeeper"
    with pytest.raises(DoorError, match="cannot request GPIO line 3"):
        open_door({"name": "g2", "type": "gpio", "chip": "/dev/gpiochip0", "line": 3})
    door.unlock(3)
    assert chip.level[3] == unlocked_level
    assert _wait_until(lambda: door.state().locked)
    assert chip.level[3] == locked_level
    door.unlock(30)
    door.close()  # drives locked, then releases
    assert chip.level[3] == locked_level and 3 not in chip.owner


def test_gpio_unknown_chip_is_a_door_error(chip: _FakeChip) -> None:
    with pytest.raises(DoorError, match="/dev/gpiochip9"):
        open_door({"name": "g", "type": "gpio", "chip": "/dev/gpiochip9", "line": 3})
