"""`doorkeeper bench agent`: peak memory of a real `doorkeeper agent run` process.

Two sites on one `doorkeeper hub serve` process (loopback, pinned to the first core): one with
``--persons`` persons (random unit templates of the agent's own model, plus one real resident
enrolled from ../shared/faces), one with none. A fresh door registers on each, then
`doorkeeper agent run` starts with an empty local whitelist, a camera folder holding that
resident's photo, and the default face settings. Each run is measured from process start
through the first sync (the whole site), the whitelist view build and the first decision
after it, which must be a grant for the resident on the large site (the door really decides
with that whitelist). Then its VmHWM (peak resident set, /proc/<pid>/status) is read and the
process is stopped with SIGTERM.

``agent_peak_rss_growth_mb`` = VmHWM(large site) - VmHWM(empty site): what the whitelist
costs the door process, sync and view together. Both agents are pinned to the last core.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from doorkeeper.tools.bench.kit import cores, emit, process_affinity, stamp, stop_process

RESIDENT_PHOTO = "obama/obama2.jpg"
CAMERA_PHOTO = "obama/obama1.jpg"
GRANT = re.compile(r"Verification successful: door")
DECIDED = re.compile(r"Verification successful: door|door \S+: (denied|unknown) ")
VIEW = re.compile(r"door gallery: version \d+ -> (\d+), (\d+) persons, (\d+) templates")
BATCH = 5_000


def _populate(hub_dir: Path, site_id: str, persons: int, model_id: str, resident: Any) -> str:
    """`persons` random persons plus the resident (whose id is returned), straight into the hub."""
    import numpy as np

    from doorkeeper.hub.whitelist import PersonSpec
    from doorkeeper.tools.bench.sync_workers import open_hub_domain
    from doorkeeper.wire import templates as tmpl

    store, _, whitelist = open_hub_domain(hub_dir)
    try:
        rng = np.random.default_rng(21)
        for first in range(0, persons, BATCH):
            count = min(BATCH, persons - first)
            vectors = rng.standard_normal((count, 512), dtype=np.float32)
            whitelist.add_persons(site_id, [
                PersonSpec(name=f"Resident {first + i}", templates=[tmpl.encode(v, model_id)])
                for i, v in enumerate(vectors)])
        added, _ = whitelist.add_persons(site_id, [PersonSpec(
            name="The resident at the door", templates=[tmpl.encode(resident, model_id)])])
        return str(added[0])
    finally:
        store.close()


def _wait_for_view(proc: subprocess.Popen[bytes], log_path: Path, persons: int, deadline: float,
                   after_line: int = 0) -> int:
    """The log line index of the view holding ``persons`` (past ``after_line``)."""
    from doorkeeper.tools.bench.sync_probes import BenchError

    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise BenchError(f"agent run ended or timed out before its view: {' | '.join(tail)}")
        lines = log_path.read_text(errors="replace").splitlines()
        for i in range(after_line, len(lines)):
            match = VIEW.search(lines[i])
            if match and int(match.group(2)) == persons:
                return i
        time.sleep(0.05)


def _run_agent(agent_dir: Path, camera: Path, core: int, expect_persons: int,
               timeout: float, change: Callable[[], None] | None = None) -> dict[str, Any]:
    """Start `agent run`, wait for the view of the synced site and a decision made with it;
    returns VmHWM and what the door decided. With ``change`` (one person added at the hub),
    then also the VmHWM once the agent has applied it and rebuilt its view. SIGTERM afterwards."""
    from doorkeeper.tools.bench.sync_probes import BenchError, status_kb

    log_path = agent_dir.parent / f"{agent_dir.name}.log"
    command = [sys.executable, "-m", "doorkeeper", "agent", "run", "--data", str(agent_dir),
               "--camera", str(camera), "--loop-camera", "--confirm-frames", "1",
               "--upload-interval", "3600", "--poll-interval", "1", "--metrics-listen", "off"]
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        # Text log lines (the agent logs JSON when its output is not a terminal).
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "DOORKEEPER_AGENT__LOG__FORMAT": "text"},
                                preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    try:
        view: tuple[int, int, int] | None = None
        view_s = decided_s = 0.0
        decision = ""
        deadline = time.monotonic() + timeout
        while not decision:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise BenchError(f"agent run ended or timed out before deciding: {' | '.join(tail)}")
            lines = log_path.read_text(errors="replace").splitlines()
            for i, line in enumerate(lines):
                match = VIEW.search(line)
                if match and int(match.group(2)) == expect_persons:
                    view = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
                    view_s = view_s or time.perf_counter() - start
                    later = [x for x in lines[i + 1:] if DECIDED.search(x) and " INFO " in x]
                    if later:
                        decision = "granted" if GRANT.search(later[0]) else "refused"
                        decided_s = time.perf_counter() - start
                    break
            time.sleep(0.05)
        hwm_kb = status_kb("VmHWM", proc.pid)
        rss_kb = status_kb("VmRSS", proc.pid)
        pinned = process_affinity(proc.pid)
        after: dict[str, Any] = {}
        if change is not None:
            seen = len(log_path.read_text(errors="replace").splitlines())
            change()
            _wait_for_view(proc, log_path, expect_persons + 1, time.monotonic() + timeout, seen)
            after = {"vmhwm_after_one_change_mb": round(status_kb("VmHWM", proc.pid) / 1024, 1)}
    finally:
        stop_process(proc, grace=60)
    assert view is not None
    return {"vmhwm_mb": round(hwm_kb / 1024, 1), "vmrss_at_decision_mb": round(rss_kb / 1024, 1),
            "view_version": view[0], "view_persons": view[1], "view_templates": view[2],
            "decision": decision, "view_built_s": round(view_s, 2), "decided_s": round(decided_s, 2),
            "pinned_cores": pinned, **after}


def run(persons: int, timeout: float) -> dict[str, Any]:
    from doorkeeper.agent.face.engine import EngineConfig, FaceEngine
    from doorkeeper.agent.face.quality import enrol
    from doorkeeper.agent.sync.identity import init_agent
    from doorkeeper.hub.devices import Devices
    from doorkeeper.hub.server import init_hub
    from doorkeeper.tools.bench.face import faces_dir
    from doorkeeper.tools.bench.sync_probes import BenchError
    from doorkeeper.tools.bench.sync_workers import hub_process, open_hub_domain

    faces = faces_dir()
    engine = FaceEngine(EngineConfig())
    [resident] = enrol(engine, [faces / RESIDENT_PHOTO])
    model_id = engine.model_id
    del engine
    hub_core, agent_core = cores()
    with tempfile.TemporaryDirectory(prefix="dk-bench-agent-") as tmp:
        root = Path(tmp)
        hub_dir = root / "hub"
        init_hub(hub_dir)
        store, hub_keys, whitelist = open_hub_domain(hub_dir)
        large = whitelist.add_site("large")
        empty = whitelist.add_site("empty")
        devices = Devices(store, hub_keys)
        tokens = {name: devices.add(site.site_id, f"{name}-door").token
                  for name, site in (("large", large), ("empty", empty))}
        store.close()
        setup = time.perf_counter()
        _populate(hub_dir, large.site_id, persons, model_id, resident.embedding)
        setup_s = time.perf_counter() - setup
        camera = root / "camera"
        camera.mkdir()
        shutil.copy(faces / CAMERA_PHOTO, camera / "frame.jpg")
        runs: dict[str, dict[str, Any]] = {}
        with hub_process(hub_dir, hub_core) as (address, hub_pid):
            hub_pinned = process_affinity(hub_pid)
            for name in ("empty", "large"):
                init_agent(root / name, address, tokens[name])
            def one_more() -> None:  # a later change at the hub: the door rebuilds its view
                _populate(hub_dir, large.site_id, 0, model_id, resident.embedding)

            runs["empty"] = _run_agent(root / "empty", camera, agent_core, 0, timeout)
            runs["large"] = _run_agent(root / "large", camera, agent_core, persons + 1, timeout,
                                       change=one_more)
        if runs["large"]["decision"] != "granted" or runs["empty"]["decision"] != "refused":
            raise BenchError(f"wrong decisions: large site {runs['large']['decision']}, "
                             f"empty site {runs['empty']['decision']} (expected granted, refused)")
    return {
        "agent_peak_rss_growth_mb": round(runs["large"]["vmhwm_mb"] - runs["empty"]["vmhwm_mb"], 1),
        "agent_peak_rss_growth_after_one_change_mb": round(
            runs["large"]["vmhwm_after_one_change_mb"] - runs["empty"]["vmhwm_mb"], 1),
        "persons": persons + 1,
        "agent_peak_rss_mb": runs["large"]["vmhwm_mb"],
        "agent_empty_peak_rss_mb": runs["empty"]["vmhwm_mb"],
        "runs": runs,
        "measured": "VmHWM of `doorkeeper agent run` from start through sync, view build and first "
                    "decision with the synced view; minus the same with an empty whitelist. "
                    "after_one_change: the same process once it has applied one more person and "
                    "rebuilt its view (old and new view exist together for a moment)",
        "pinning": {"hub_core": hub_core, "agent_core": agent_core},
        "hub_pinned_cores": hub_pinned,
        "onnxruntime_threads": 1,
        "populate_s": round(setup_s, 1),
        "sizes": {"persons": persons},
        **stamp(),
    }


@click.command("agent")
@click.option("--persons", type=click.IntRange(0), default=None,
              help="Random persons on the large site (default 50000; 2000 with --quick).")
@click.option("--quick", is_flag=True, help="2,000 persons, for tests.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for each agent.")
@click.option("--json", "as_json", is_flag=True)
def agent(persons: int | None, quick: bool, timeout: float, as_json: bool) -> None:
    """Peak RSS of a real `agent run` with a large whitelist, minus an empty one."""
    from doorkeeper.tools.bench.sync_probes import BenchError

    count = persons if persons is not None else (2_000 if quick else 50_000)
    try:
        result = run(count, timeout)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    emit(result, as_json, title="doorkeeper bench agent")
