"""Mount, cut and reboot the power-loss file system (`lazyfs.py`).

    mount = LazyMount(tmp / "disk", tmp / "mnt").start()
    proc = subprocess.Popen([... a program writing under mount.path ...])
    ...                               # the program acknowledges some writes
    mount.cut(proc)                   # freeze the disk, SIGKILL the program, drop the page cache
    mount.start()                     # "reboot": only what was fsynced is there
    ...                               # check that every acknowledged write survived
    mount.stop()

Needs root, /dev/fuse, `fusermount3` (Debian `fuse3`) and the `mfusepy` package;
`unavailable()` says which is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


class PowerLossError(Exception):
    """The power-loss file system could not be mounted or cut."""


def unavailable() -> str | None:
    """Why the power-loss file system cannot run here, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if os.geteuid() != 0:
        return "mounting the power-loss file system needs root"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return "fusermount3 not found (apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:  # mfusepy raises OSError when libfuse is missing
        return f"mfusepy cannot load libfuse: {exc} (pip install mfusepy; apt-get install fuse3)"
    return None


class LazyMount:
    """One power-loss disk: `backing` keeps the synced state across cuts, `path` is the mount."""

    def __init__(self, backing: Path, path: Path) -> None:
        self.backing = backing
        self.path = path
        self.log = backing.with_name(backing.name + ".lazyfs.log")
        self.cuts = 0
        self._daemon: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 15.0) -> LazyMount:
        """Mount (again): what processes see is exactly the synced state."""
        if self._daemon is not None:
            raise PowerLossError("already mounted")
        self.backing.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        # The daemon's stderr goes to a file beside the store: a pipe nobody reads could fill
        # and stall the file system.
        with open(self.log, "a") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "doorkeeper.tools.powerloss.lazyfs", str(self.backing),
                 str(self.path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        deadline = time.monotonic() + timeout_s
        while not os.path.ismount(self.path):
            if daemon.poll() is not None or time.monotonic() > deadline:
                daemon.kill()
                daemon.communicate()
                last = (self.log.read_text().strip().splitlines() or ["no output"])[-1]
                raise PowerLossError(f"lazyfs did not mount {self.path}: {last} (see {self.log})")
            time.sleep(0.02)
        self._daemon = daemon
        return self

    def cut(self, *procs: subprocess.Popen[str] | subprocess.Popen[bytes],
            torn: tuple[float, int] | None = None) -> None:
        """Power cut: freeze the disk, SIGKILL `procs` (and wait for them), lose the page cache.

        `torn=(fraction, seed)`: each unsynced page reaches the disk with that probability
        (names and truncations still need their fsync), as a real cut can.
        """
        daemon = self._require()
        assert daemon.stdin is not None and daemon.stdout is not None
        daemon.stdin.write(f"cut {torn[0]} {torn[1]}\n" if torn else "cut\n")
        daemon.stdin.flush()
        if daemon.stdout.readline().strip() != "frozen":
            raise PowerLossError("lazyfs did not freeze for the cut")
        # SIGKILL first: a process waiting on a request the daemon already took cannot die until
        # the connection aborts, but it will never run another instruction of its own.
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL) if _leads_group(proc) else proc.kill()
        self._kill_daemon(daemon)
        for proc in procs:
            proc.wait()
        self.cuts += 1

    def stop(self) -> None:
        """Unmount at the end of a test; unsynced state is dropped as in a cut."""
        if self._daemon is not None:
            self._kill_daemon(self._daemon)

    def _kill_daemon(self, daemon: subprocess.Popen[str]) -> None:
        daemon.kill()
        daemon.communicate()
        self._daemon = None
        tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
        subprocess.run([tool, "-u", "-z", str(self.path)], capture_output=True, check=False)
        if os.path.ismount(self.path):
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)  # noqa: S607

    def _require(self) -> subprocess.Popen[str]:
        if self._daemon is None:
            raise PowerLossError("not mounted")
        return self._daemon

    def __enter__(self) -> LazyMount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _leads_group(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False
