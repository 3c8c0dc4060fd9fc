"""`doorkeeper bench rollout`: time from `rollout promote` to every door applied.

All real: a hub process (`doorkeeper hub serve`, SQLite in a temp dir, or a throwaway
PostgreSQL database with --store), three agents (`SyncService`: watch stream, fetch,
verify, apply, signed report) in this process, gRPC over loopback. Polling and heartbeats
are an hour away, so only the watch stream can bring a promotion in time.

Each repetition: start a rollout with door0 as canary, add one person (the staged change),
wait until door0 holds it and the two held doors are still at the base, then time the
PromoteRollout call (what `doorkeeper rollout promote` sends; the command's own process start
is not included) until all three doors' whitelists hold the head version; then wait for the
hub's rollout job to close the rollout before the next repetition. `promote_to_all_reported_*`
times the same promotion until `rollout status` (GetRollout) shows every door applied at the
head from its signed report, polled after the doors applied (so it is an upper bound).

With --deliver-early each repetition instead times `PromoteRollout{at: an hour ahead,
deliver_early}` until both held doors hold the head for that time (verified, on disk, their
whitelists still at the base); once the hub has their reports saying so, it times
`AbortRollout` until all three doors apply the abort version (the held doors drop what they
held), which also readies the next repetition.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from doorkeeper.tools.bench.kit import emit, free_port, port_open, stamp, stop_process, throwaway_database

DOORS = 3


def _wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise click.ClickException(f"timed out waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def _hub(hub_dir: Path, store_url: str | None) -> Iterator[str]:
    from doorkeeper.hub.server import init_hub

    init_hub(hub_dir, store_url)
    port = free_port()
    env = {**os.environ, "DOORKEEPER_HUB__ROLLOUT_CHECK_INTERVAL_S": "0.5"}
    args = [sys.executable, "-m", "doorkeeper", "hub", "serve", "--data", str(hub_dir),
            "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off"]
    if store_url:
        args += ["--store", store_url]
    with open(hub_dir.parent / "hub.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait(lambda: port_open(port) or proc.poll() is not None, 30, "the hub to listen", 0.05)
        if proc.poll() is not None:
            raise click.ClickException("hub did not start; see " + str(hub_dir.parent / "hub.log"))
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


def run(repeats: int, store_url: str | None = None, deliver_early: bool = False) -> dict[str, Any]:
    from nacl.signing import SigningKey

    from doorkeeper.agent.sync.hubclient import ADMIN, HubClient
    from doorkeeper.agent.sync.identity import init_agent
    from doorkeeper.agent.sync.service import SyncOptions, SyncService
    from doorkeeper.v1 import doorkeeper_pb2 as pb
    from doorkeeper.wire import keys

    with tempfile.TemporaryDirectory(prefix="dk-bench-rollout-") as tmp, \
            _hub(Path(tmp) / "hub", store_url) as addr:
        key = SigningKey(keys.read_private(Path(tmp) / "hub" / "operator.key"))
        services: list[SyncService] = []
        with HubClient(addr, keys.key_id(bytes(key.verify_key)), key) as op:
            op.call(ADMIN + "AddSite", pb.AddSiteRequest(name="bench"))
            op.call(ADMIN + "AddPerson", pb.AddPersonRequest(site="bench", name="Base", cards=["CARD0000"]))
            try:
                for i in range(DOORS):
                    token = op.call(ADMIN + "AddDevice",
                                    pb.AddDeviceRequest(site="bench", name=f"door{i}")).token
                    init_agent(Path(tmp) / f"a{i}", addr, token)
                    service = SyncService(Path(tmp) / f"a{i}", SyncOptions(
                        poll_interval_s=3600, heartbeat_interval_s=3600, upload_interval_s=3600))
                    service.start()
                    services.append(service)
                times: list[float] = []
                aborts: list[float] = []
                reported: list[float] = []
                for n in range(repeats):
                    base = op.call(ADMIN + "ListSites", pb.ListSitesRequest()).sites[0].version
                    _wait(lambda b=base: all(s.whitelist.version == b for s in services), 60,  # type: ignore[misc]
                          "doors at the base")
                    op.call(ADMIN + "StartRollout", pb.StartRolloutRequest(site="bench", canary=["door0"]))
                    head = op.call(ADMIN + "AddPerson", pb.AddPersonRequest(
                        site="bench", name=f"P{n}", cards=[f"CARD{n + 1:04d}"])).version
                    _wait(lambda h=head: services[0].whitelist.version == h, 60, "the canary")  # type: ignore[misc]
                    if any(s.whitelist.version != base for s in services[1:]):
                        raise click.ClickException("a held door left the base before the promotion")
                    if deliver_early:
                        t0 = time.perf_counter()
                        op.call(ADMIN + "PromoteRollout", pb.PromoteRolloutRequest(
                            site="bench", at=int(time.time()) + 3600, deliver_early=True))
                        _wait(lambda h=head: all(s.syncer.holding_version == h  # type: ignore[misc]
                                                 for s in services[1:]), 60, "the held doors to hold it")
                        times.append(time.perf_counter() - t0)
                        # And reported it (a report still in flight when the abort lands would
                        # name the abort's version: the door then waits its retry step).
                        _wait(lambda: sum(d.state == "scheduled" for d in op.call(
                            ADMIN + "GetRollout", pb.GetRolloutRequest(site="bench")).doors) == DOORS - 1,
                            60, "the held doors' reports", 0.01)
                        if any(s.whitelist.version != base for s in services[1:]):
                            raise click.ClickException("a held door applied the promotion before its time")
                        t0 = time.perf_counter()
                        closed = op.call(ADMIN + "AbortRollout", pb.AbortRolloutRequest(
                            site="bench", reason="bench")).closed_version
                        _wait(lambda c=closed: all(s.whitelist.version == c and s.syncer.pending is None  # type: ignore[misc]
                                                   for s in services), 60, "every door at the abort")
                        aborts.append(time.perf_counter() - t0)
                        continue
                    t0 = time.perf_counter()
                    op.call(ADMIN + "PromoteRollout", pb.PromoteRolloutRequest(site="bench"))
                    _wait(lambda h=head: all(s.whitelist.version == h for s in services), 60,  # type: ignore[misc]
                          "every door")
                    times.append(time.perf_counter() - t0)
                    # What an operator sees: `rollout status` naming every door applied at the
                    # head, from the doors' signed reports as the hub recorded them.
                    _wait(lambda h=head: all(d.state == "applied" and d.reported_version == h  # type: ignore[misc]
                                             for d in op.call(ADMIN + "GetRollout",
                                                              pb.GetRolloutRequest(site="bench")).doors),
                          60, "every door's signed report", 0.001)
                    reported.append(time.perf_counter() - t0)
                    _wait(lambda: op.call(ADMIN + "GetRollout", pb.GetRolloutRequest(site="bench")).state
                          == "completed", 60, "the rollout to close", 0.1)
            finally:
                for s in services:
                    s.close()
    what = "promote_early_to_held_doors_holding" if deliver_early else "promote_to_all_applied"
    result: dict[str, Any] = {
        f"{what}_median_s": round(statistics.median(times), 4),
        f"{what}_max_s": round(max(times), 4),
        f"{what}_min_s": round(min(times), 4),
        "repeats": repeats, "doors": DOORS, "store": "postgresql" if store_url else "sqlite",
        "deliver_early": deliver_early, "all_s": [round(t, 4) for t in times], **stamp(),
    }
    if reported:
        result |= {"promote_to_all_reported_median_s": round(statistics.median(reported), 4),
                   "promote_to_all_reported_max_s": round(max(reported), 4)}
    if aborts:
        result |= {"abort_to_all_applied_median_s": round(statistics.median(aborts), 4),
                   "abort_to_all_applied_max_s": round(max(aborts), 4),
                   "abort_all_s": [round(t, 4) for t in aborts]}
    return result


@click.command("rollout")
@click.option("--repeats", type=click.IntRange(1, 100), default=7, show_default=True)
@click.option("--store", "admin_url", default=None,
              help="A PostgreSQL server URL (its admin database): the hub runs on a throwaway "
                   "database there.")
@click.option("--deliver-early", is_flag=True,
              help="Time `promote --at (an hour ahead) --deliver-early` until the held doors hold it, "
                   "then the abort until every door applied it.")
@click.option("--json", "as_json", is_flag=True)
def rollout(repeats: int, admin_url: str | None, deliver_early: bool, as_json: bool) -> None:
    """Time from `rollout promote` to all 3 doors applied (real hub and agents, loopback)."""
    if admin_url:
        with throwaway_database(admin_url) as url:
            result = run(repeats, url, deliver_early)
    else:
        result = run(repeats, deliver_early=deliver_early)
    emit(result, as_json, "rollout promote --deliver-early -> held doors holding it; abort -> all applied"
         if deliver_early else "rollout promote -> all doors applied")
