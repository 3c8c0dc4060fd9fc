"""What every power-cut trial shares: writer processes, a hub process, reading stores back.

Writers (`workers.py`) run on the power-loss mount and print what they were told is stored;
`AckReader` collects it. `HubProcess` is a real `doorkeeper hub serve`; `ClientThread`s call it
from the harness (which is never cut) and keep what it answered.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doorkeeper.tools.powerloss.mount import LazyMount, PowerLossError
from doorkeeper.tools.powerloss.tally import Tally

WORKERS = "doorkeeper.tools.powerloss.workers"
START_TIMEOUT_S = 60.0


class AckReader:
    """Collects ``A key content`` lines from a writer's stdout in a background thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.pairs: list[tuple[str, str]] = []
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.rstrip("\n").split(maxsplit=2)
            if parts and parts[0] == "R":
                self.ready.set()
            elif len(parts) == 3 and parts[0] == "A":
                self.pairs.append((parts[1], parts[2]))
        self.ready.set()

    def wait(self, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.pairs) < count and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)

    def finish(self) -> list[tuple[str, str]]:
        self._thread.join(30)
        return list(self.pairs)


def spawn(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    """A process in its own group (so a cut kills it and its children), stderr to /dev/null."""
    return subprocess.Popen([sys.executable, *args], stdout=stdout, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)


def run_writer(mount: LazyMount, tally: Tally, rng: random.Random, *args: str) -> None:
    """Start a writer on the mount, cut after a random number of acknowledged writes."""
    proc = spawn("-m", WORKERS, *args)
    reader = AckReader(proc)
    reader.ready.wait(START_TIMEOUT_S)
    reader.wait(rng.randint(1, tally.records))
    tally.cut(mount, rng, proc)
    tally.acknowledge(reader.finish())
    mount.start()


def integrity_ok(db: Path) -> bool:
    if not db.exists():
        return True  # nothing acknowledged can be in a file that never became durable; lost counts it
    conn = sqlite3.connect(db)
    try:
        return bool(conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()


def read_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql`, or none when the file or its table never became durable."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_copy(src: Path, dst: Path) -> None:
    """Copy a directory tree onto the mount and fsync every file and directory in it."""
    shutil.copytree(src, dst)
    for directory, _, files in os.walk(dst):
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory))
    fsync_path(dst.parent)


@contextlib.contextmanager
def mounted(root: Path) -> Iterator[LazyMount]:
    mount = LazyMount(root / "disk", root / "mnt").start()
    try:
        yield mount
    finally:
        mount.stop()


class HubProcess:
    """`doorkeeper hub serve` on a loopback port; the operator key is read once, off the mount."""

    def __init__(self, data_dir: Path, operator_key: bytes) -> None:
        from nacl.signing import SigningKey

        from doorkeeper.tools.bench.kit import free_port

        self.data_dir = data_dir
        self.address = f"127.0.0.1:{free_port()}"
        self.operator = SigningKey(operator_key)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        from doorkeeper.agent.sync.hubclient import ADMIN
        from doorkeeper.v1 import doorkeeper_pb2 as pb

        self.proc = spawn("-m", "doorkeeper", "hub", "serve", "--data", str(self.data_dir),
                          "--listen", self.address, "--metrics-listen", "off", stdout=subprocess.DEVNULL)
        with self.client() as client:
            client.call(ADMIN + "ListSites", pb.ListSitesRequest(), timeout=START_TIMEOUT_S,
                        wait_for_ready=True)
        return self.proc

    def client(self) -> Any:
        from doorkeeper.agent.sync.hubclient import HubClient
        from doorkeeper.wire import keys

        return HubClient(self.address, keys.key_id(bytes(self.operator.verify_key)), self.operator)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class ClientThread:
    """A client of the hub in a background thread, keeping the (key, content) pairs it was answered."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []
        self.error: Exception | None = None  # why it stopped, when the hub refused rather than vanished
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def wait(self, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.pairs) < count and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)

    def finish(self) -> list[tuple[str, str]]:
        self.stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise PowerLossError(f"the hub refused a request: {self.error}")
        return list(self.pairs)


def init_hub_with_site(where: Path, site: str) -> bytes:
    """A hub data directory with one site; returns the operator key."""
    from doorkeeper.hub.server import Hub, init_hub

    operator_key = init_hub(where).read_bytes()
    hub = Hub.open(where)
    try:
        hub.whitelist.add_site(site)
    finally:
        hub.close()
    return operator_key


def hub_with_device(where: Path) -> tuple[HubProcess, str]:
    """A running hub (off the power-loss disk) with site "powercut" and a registration token."""
    from doorkeeper.agent.sync.hubclient import ADMIN
    from doorkeeper.v1 import doorkeeper_pb2 as pb

    hub = HubProcess(where, init_hub_with_site(where, "powercut"))
    hub.start()
    try:
        with hub.client() as op:
            token = op.call(ADMIN + "AddDevice", pb.AddDeviceRequest(site="powercut", name="door")).token
    except BaseException:
        hub.stop()
        raise
    return hub, token


def listing(top: Path) -> list[str]:
    """Every path under `top`, for error messages about what survived a cut."""
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))
