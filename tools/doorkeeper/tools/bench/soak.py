"""`doorkeeper bench soak`: a hub process through many change-and-fetch cycles.

Each cycle is what a week of operation repeats: an operator adds a person (a signed
AddPerson over gRPC), a real agent syncs (Challenge, Fetch of a freshly built delta
bundle, Report) and must hold the new version. The hub runs in its own process so its
file descriptors (/proc/PID/fd) and resident memory (VmRSS) are its own; both are
sampled after a warm-up and at the end. A leak shows as descriptors that grow with the
number of cycles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from doorkeeper.tools.bench.kit import emit, free_port, port_open
from doorkeeper.tools.bench.sync_probes import BenchError, status_kb


@dataclass(frozen=True)
class Sample:
    fds: int
    rss_kb: int


@dataclass(frozen=True)
class SoakResult:
    cycles: int
    warmup_cycles: int
    start: Sample  # after the warm-up
    end: Sample
    hub_version: int
    agent_version: int
    elapsed_s: float

    def figures(self) -> dict[str, Any]:
        out = asdict(self)
        out["fds_growth"] = self.end.fds - self.start.fds
        out["rss_growth_kb"] = self.end.rss_kb - self.start.rss_kb
        return out


def sample(pid: int) -> Sample:
    return Sample(fds=len(os.listdir(f"/proc/{pid}/fd")), rss_kb=status_kb("VmRSS", pid))


def _hub_process(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "doorkeeper", "hub", "serve", "--data", str(data_dir),
         "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "DOORKEEPER_HUB_CONFIG"},
    )
    deadline = time.monotonic() + 60
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise BenchError(f"hub did not start: {err.strip()[-300:]}")
        time.sleep(0.05)
    return proc


def soak(cycles: int, warmup: int, workdir: Path) -> SoakResult:
    """Run `warmup` then `cycles` change-and-fetch cycles against a hub process in `workdir`."""
    from nacl.signing import SigningKey

    from doorkeeper.agent.sync.hubclient import ADMIN, HubClient
    from doorkeeper.agent.sync.identity import AgentFiles, init_agent
    from doorkeeper.agent.sync.syncer import Syncer
    from doorkeeper.agent.sync.whitelist import LocalWhitelist
    from doorkeeper.hub.server import init_hub
    from doorkeeper.v1 import doorkeeper_pb2 as pb
    from doorkeeper.wire import keys

    hub_dir, agent_dir = workdir / "hub", workdir / "agent"
    operator_key = init_hub(hub_dir)
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = _hub_process(hub_dir, port)
    try:
        key = SigningKey(keys.read_private(operator_key))
        with HubClient(address, keys.key_id(bytes(key.verify_key)), key) as op:
            op.call(ADMIN + "AddSite", pb.AddSiteRequest(name="soak"))
            token = op.call(ADMIN + "AddDevice", pb.AddDeviceRequest(site="soak", name="door")).token
            init_agent(agent_dir, address, token)
            files = AgentFiles(agent_dir)
            whitelist = LocalWhitelist(files.whitelist, files.storage_key())
            syncer = Syncer(files, whitelist)
            try:
                start = sample(proc.pid)
                began = time.monotonic()
                version = 0
                for i in range(warmup + cycles):
                    if i == warmup:
                        start, began = sample(proc.pid), time.monotonic()
                    version = op.call(ADMIN + "AddPerson", pb.AddPersonRequest(
                        site="soak", name=f"Resident {i}", cards=[f"{100000 + i}"])).version
                    result = syncer.sync_once()
                    if not result.ok or whitelist.version != version:
                        raise BenchError(f"cycle {i}: agent at {whitelist.version}, hub at {version}: "
                                         f"{result.detail}")
                end = sample(proc.pid)
                return SoakResult(cycles, warmup, start, end, version, whitelist.version,
                                  round(time.monotonic() - began, 2))
            finally:
                syncer.close()
                whitelist.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@click.command("soak")
@click.option("--cycles", default=1000, show_default=True, help="Change-and-fetch cycles after the warm-up.")
@click.option("--warmup", default=20, show_default=True, help="Cycles before the first sample.")
@click.option("--json", "as_json", is_flag=True)
def soak_command(cycles: int, warmup: int, as_json: bool) -> None:
    """A hub process through CYCLES change-and-fetch cycles: descriptors and RSS, start and end."""
    with tempfile.TemporaryDirectory(prefix="doorkeeper-soak-") as tmp:
        try:
            result = soak(cycles, warmup, Path(tmp))
        except BenchError as exc:
            raise click.ClickException(str(exc)) from None
    figures = {"command": f"doorkeeper bench soak --cycles {cycles} --warmup {warmup}"
               + (" --json" if as_json else ""), **result.figures()}
    emit(figures, as_json, title="hub soak")
