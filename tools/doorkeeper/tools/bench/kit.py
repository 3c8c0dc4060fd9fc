"""What every `doorkeeper bench ...` command shares.

Heavy measurements run in fresh worker processes (honest RSS, no warm caches from the parent)
with BLAS and OpenMP pinned to one thread; results come back as one JSON line; figures are
printed as JSON (`--json`) or as a table.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

ONE_THREAD = {
    name: "1"
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
}


def run_worker(module: str, task: str, args: dict[str, Any], *, label: str,
               timeout: float = 900.0, core: int | None = None) -> dict[str, Any]:
    """Run ``python -m module task ARGS`` in a fresh one-thread process; its last stdout line
    as JSON. With ``core``, the process is pinned before it starts (every thread inherits it,
    and libraries that size thread pools at import see one core: pinning after import was
    measured to make the int8 gallery search 3x slower). Raises ClickException with the
    worker's last error line when it fails."""
    completed = subprocess.run(
        [sys.executable, "-m", module, task, json.dumps(args)],
        env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, timeout=timeout, check=False,
        preexec_fn=None if core is None else (lambda: os.sched_setaffinity(0, {core})),
    )
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise click.ClickException(f"{label} {task} failed: {last}")
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def machine() -> dict[str, Any]:
    """CPU model, core counts and platform of this machine."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # not Linux: platform's answer stands
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "shared": "machine shared with other engineers while measuring"}


def stamp() -> dict[str, Any]:
    """Date (UTC), machine and Python of a run, for every bench's output."""
    import datetime as dt

    return {"machine": machine(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "python": platform.python_version()}


def cores() -> tuple[int, int]:
    """(first core, last core) of this process: different ones when there are two or more."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[-1]


def process_affinity(pid: int | str = "self") -> list[int]:
    """Every core any thread of the process may run on (the union over /proc/<pid>/task)."""
    cores: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            cores |= os.sched_getaffinity(int(tid))
        except ProcessLookupError:
            continue  # the thread ended meanwhile
    return sorted(cores)


def pin(core: int) -> list[int]:
    """Pin EVERY thread of this process to ``core`` (sched_setaffinity(0) alone moves only the
    calling thread: threads that onnxruntime, OpenCV or gRPC started at import would stay
    free, and were measured to make a pinned search 10x slower). Returns the affinity read back
    from all threads; RuntimeError if it is not exactly that core."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except ProcessLookupError:
            continue
    pinned = process_affinity()
    if pinned != [core]:
        raise RuntimeError(f"asked to pin to core {core}, threads may run on {pinned}")
    return pinned


def stop_process(proc: subprocess.Popen[Any], grace: float = 15.0) -> None:
    """SIGTERM a process this bench started; SIGKILL it when it outlives ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def emit(result: dict[str, Any], as_json: bool, title: str = "") -> None:
    """Print the figures: one JSON object, or a two-column table."""
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    from rich.console import Console
    from rich.table import Column, Table

    # Figure names are never wrapped or cut: a reader must see the exact key.
    table = Table(Column("figure", no_wrap=True), Column("value", overflow="fold"), title=title or None)
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    Console().print(table)


@contextmanager
def throwaway_database(admin_url: str, prefix: str = "dk_bench") -> Iterator[str]:
    """A new empty PostgreSQL database on the server of `admin_url` (an admin connection,
    e.g. postgresql://postgres@127.0.0.1:5432/postgres): its URL; dropped with its
    sessions afterwards, whatever happened."""
    import uuid

    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot create a database on {admin_url}: {exc}") from exc
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
