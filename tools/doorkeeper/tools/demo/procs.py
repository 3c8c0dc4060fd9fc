"""The processes the demo runs, and what it reads from them.

`Proc` starts one `doorkeeper ...` child (its own session, so Ctrl-C reaches the demo only),
copies its output to a log file and hands every line to a callback; `stop()` is SIGTERM, then
SIGKILL, and says which it took. `Door` is the demo's side of one door agent: its hot folder
and card reader, and the decisions, whitelist swaps and loop statistics parsed from the agent's
output lines (`Seen`). `sweep_leftovers` finds (and kills, if they are ours) processes still
running in the demo directory; `terminate_as_interrupt` makes SIGTERM unwind like Ctrl-C.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

# What the agents print (text logs; a JSON log line's "message" is searched the same way).
GRANT_RE = re.compile(r"Verification successful: door (?P<door>\S+), person (?P<person>\S+), "
                      r"(?P<cred>\w+); door .* \[(?P<details>[^\[\]]*)\]\s*$")
REFUSE_RE = re.compile(r"door (?P<door>\S+): (?P<result>denied|unknown|shadow) \((?P<reason>\w+)\) "
                       r"(?P<cred>\w+)(?: person (?P<person>\S+))? \[(?P<details>[^\[\]]*)\]\s*$")
GALLERY_RE = re.compile(r"door gallery: version (\d+) -> (\d+), (\d+) persons")
LOOP_RE = re.compile(r"door (\S+): loop stopped after (\d+) frames; decisions (\{[^}]*\}); "
                     r"p50 (\S+) ms, p99 (\S+) ms")
THREAD_DIED_RE = re.compile(r"Exception in thread (\S+?):?$")
SUCCESS = "Verification successful"


class DemoError(Exception):
    """A step could not go on; the message says what broke."""


class Proc:
    """A child process whose output lines go to a log file and to ``on_line(stream, line)``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path,
                 on_line: Callable[[str, str], None] | None = None) -> None:
        self.name = name
        self.on_line = on_line
        self._log: IO[str] = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in wait)
        self._log_lock = threading.Lock()
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                                      text=True, encoding="utf-8", errors="replace", bufsize=1,
                                      start_new_session=True)  # Ctrl-C reaches the demo only
        self.pid = self.popen.pid
        self._readers = [threading.Thread(target=self._pump, args=(s, n), daemon=True, name=f"{name}-{n}")
                         for s, n in ((self.popen.stdout, "stdout"), (self.popen.stderr, "stderr"))]
        for t in self._readers:
            t.start()

    def _pump(self, stream: IO[str] | None, which: str) -> None:
        assert stream is not None
        for raw in stream:
            line = raw.rstrip("\n")
            with self._log_lock:
                if not self._log.closed:
                    self._log.write(f"[stdout] {line}\n" if which == "stdout" else f"{line}\n")
                    self._log.flush()
            if self.on_line is not None:
                try:
                    self.on_line(which, line)
                except Exception as exc:  # a parsing bug must not stop the pipe from draining
                    with self._log_lock:
                        self._log.write(f"# demo: could not parse line: {exc!r}\n")

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> str:
        """SIGTERM, then SIGKILL after ``timeout``; returns how it ended ("stopped by SIGTERM"
        means it exited with status 0 after SIGTERM, within the timeout)."""
        how = f"had exited (status {self.popen.poll()})"
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                code = self.popen.wait(timeout)
                how = "stopped by SIGTERM" if code == 0 else f"exited with status {code} after SIGTERM"
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
                how = f"KILLED: still running {timeout:.0f}s after SIGTERM"
        for t in self._readers:
            t.join(timeout=5)
        with self._log_lock:
            self._log.close()
        return how


@dataclass(frozen=True)
class Seen:
    """One decision as an agent printed it, and who the demo put in front of the door."""

    door: str
    result: str
    reason: str
    credential: str
    person_id: str
    similarity: float | None
    version: int | None
    latency_ms: float | None
    at: float
    shown: str = ""  # set by the demo: the label of who stood at the door

    @property
    def similarity_text(self) -> str:
        return f"{self.similarity:.2f}" if self.similarity is not None else "-"

    @property
    def latency_text(self) -> str:
        return f"{self.latency_ms:.0f} ms" if self.latency_ms is not None else "-"


def _message(line: str) -> str:
    """The log message of a text or JSON log line."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(line).get("message", line))
    return line


def _details(text: str) -> tuple[float | None, int | None, float | None]:
    sim = re.search(r"similarity (-?[\d.]+)", text)
    ver = re.search(r"version (\d+)", text)
    ms = re.search(r"([\d.]+) ms", text)
    return (float(sim[1]) if sim else None, int(ver[1]) if ver else None, float(ms[1]) if ms else None)


class Door:
    """The demo's side of one door agent: its folders, its process and what it printed."""

    def __init__(self, name: str, work: Path) -> None:
        self.name = name
        self.data = work / "doors" / name
        self.camera = work / "cameras" / name
        self.camera.mkdir(parents=True)
        self.card_reader = work / "cameras" / f"{name}.cards"
        os.mkfifo(self.card_reader, 0o600)
        self.proc: Proc | None = None
        self.events: queue.Queue[Seen] = queue.Queue()
        self.decisions: list[Seen] = []
        self.stdout_grants = 0
        self.threads_died: list[str] = []  # "Exception in thread X" in its output: a worker is gone
        self.version = 0
        self.link = "direct"
        self.loop_stats: dict[str, Any] = {}
        self.started_at = 0.0
        self.first_view_at: float | None = None
        self._cond = threading.Condition()
        self._frame_no = 0

    def on_line(self, stream: str, line: str) -> None:
        msg = _message(line)
        if stream == "stdout":
            if SUCCESS in msg:
                self.stdout_grants += 1
            return
        if m := GALLERY_RE.search(msg):
            with self._cond:
                self.version = int(m[2])
                if self.first_view_at is None:
                    self.first_view_at = time.monotonic()
                self._cond.notify_all()
        elif m := GRANT_RE.search(msg):
            sim, ver, ms = _details(m["details"])
            self.events.put(Seen(m["door"], "granted", "ok", m["cred"], m["person"], sim, ver, ms,
                                 time.monotonic()))
        elif m := REFUSE_RE.search(msg):
            sim, ver, ms = _details(m["details"])
            self.events.put(Seen(m["door"], m["result"], m["reason"], m["cred"], m["person"] or "", sim, ver,
                                 ms, time.monotonic()))
        elif m := THREAD_DIED_RE.search(msg):
            self.threads_died.append(m[1])
        elif m := LOOP_RE.search(msg):
            self.loop_stats = {"frames": int(m[2]), "decisions": ast.literal_eval(m[3]),
                               "p50_ms": _num(m[4]), "p99_ms": _num(m[5])}

    def alive(self) -> bool:
        """Its agent process was started and is still running."""
        return self.proc is not None and self.proc.running

    def wait_version(self, version: int, timeout: float) -> bool:
        """True once the agent applied whitelist ``version`` (or later); False after ``timeout``
        or as soon as the agent process is gone."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.version < version:
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive():
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def swipe(self, card: str, timeout: float = 10.0) -> None:
        """Hold a card to the reader: one line into the agent's card-reader FIFO."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.card_reader, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO: the agent is between two opens of its reader
                if time.monotonic() > deadline:
                    raise DemoError(f"{self.name}'s card reader is not being read") from None
                time.sleep(0.05)
        try:
            os.write(fd, f"{card}\n".encode())
        finally:
            os.close(fd)

    def drop(self, tag: str, jpeg: bytes) -> None:
        """Put a frame in front of the camera: written as a dotfile, renamed into place."""
        self._frame_no += 1
        name = f"{self._frame_no:06d}-{tag}.jpg"
        tmp = self.camera / f".{name}.part"
        tmp.write_bytes(jpeg)
        os.replace(tmp, self.camera / name)


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def sweep_leftovers(work: Path) -> list[str]:
    """Processes whose command line or working directory is inside ``work``: ours, left over.
    Only descendants of this process are killed; any other match is only reported."""
    me = psutil.Process()
    mine = {p.pid for p in me.children(recursive=True)}
    left: list[str] = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if p.pid == me.pid:
            continue
        cmdline = " ".join(p.info.get("cmdline") or [])
        if str(work) in cmdline or (p.info.get("cwd") or "").startswith(str(work)):
            left.append(f"{p.pid}: {cmdline[:120]}")
            if p.pid in mine:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
    return left


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM to the demo unwinds like Ctrl-C, so its children are stopped too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

