"""`doorkeeper bench sync`: whitelist sync figures, measured with the real parts.

Everything runs for real: a hub process (`doorkeeper hub serve`) on a loopback
port with its SQLite file in a temp dir, agents talking gRPC to it, PyNaCl for
every signature and box. Heavy parts run in fresh Python processes (honest RSS,
no warm caches from an earlier phase); on a machine with two or more cores the
hub is pinned to the first core and each measuring process to the last, as a
hub and a door are different machines.

- delta: a site with a base population (twice the delta, so the hub sends a
  delta rather than a snapshot) and an agent already in sync. Persons are added
  with `Whitelist.add_persons` (one change, one version) straight into the hub's
  database; the clock starts when that commit returns and stops when
  `Syncer.sync_once()` returns: challenge, fetch (the hub builds the bundle on
  demand), per-chunk checks, staging with fsync, verify, decrypt, apply in one
  transaction, signed report. The hub's recorded report is checked afterwards.
- snapshot: a fresh agent process fetches and applies the whole site. Its peak
  RSS growth is VmHWM (reset through /proc/self/clear_refs just before the
  fetch) minus VmRSS at that moment; where clear_refs is not writable, RSS is
  sampled every 20 ms instead. Then the same agent takes one delta onto that
  large site (`delta_onto_snapshot_site_s`): costs that grow with the
  site show there.
- publish: hub CPU of publishing one delta, in one thread of a fresh process,
  no gRPC: `Publisher.bundle_for` (build and encrypt once) plus
  `Publisher.issue` per device (wrap the content key, sign the header). It
  excludes delivering the ciphertext to each device, so it is NOT fan-out: that
  comes end to end with the fleet simulator. The 1-device and N-device sides each get a
  delta of their own (a new to-version, so both build once), alternated over
  a few rounds; medians are reported.
- templates: float16 vs float32 wire size, and how much float16 moves cosine
  similarity of L2-normalised 512-d vectors (random pairs and near pairs, the
  regime around a match threshold).

The fresh-process workers (and the hub process) are in `benchsync_workers`, the measuring
instruments (peak RSS, stream tap, pinning) in `benchsync_probes`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from doorkeeper.tools.bench.kit import cores, emit, process_affinity, stamp
from doorkeeper.tools.bench.sync_probes import CLEAR_REFS, BenchError, PeakRss, StreamTap, status_kb
from doorkeeper.tools.bench.sync_workers import (
    MODEL_ID,
    hub_process,
    open_hub_domain,
    person_specs,
    run_worker,
)

__all__ = [
    "CLEAR_REFS", "FULL", "MODEL_ID", "QUICK", "SNAPSHOT_BATCH", "BenchError", "PeakRss", "Sizes",
    "StreamTap", "hub_process", "run", "sync", "template_figures",
]

SNAPSHOT_BATCH = 5_000


@dataclass(frozen=True)
class Sizes:
    persons_delta: int
    persons_snapshot: int
    devices: int
    delta_repeats: int
    fanout_rounds: int
    f16_pairs: int

    @property
    def delta_base(self) -> int:
        # The hub sends a snapshot when a delta would touch more than half the site.
        return 2 * self.persons_delta


# ------------------------------------------------------------------ templates (in this process)


def template_figures(pairs: int, seed: int = 5) -> dict[str, Any]:
    """Wire sizes, and max |cos(f32) - cos(f16 decoded)| over random and near pairs."""
    import numpy as np

    from doorkeeper.v1 import doorkeeper_pb2 as pb
    from doorkeeper.wire import templates as tmpl

    rng = np.random.default_rng(seed)
    v = tmpl.normalise(rng.standard_normal(512).astype(np.float32))
    f16 = tmpl.encode(v, MODEL_ID)
    f32 = pb.Template(model_id=MODEL_ID, dim=512, vector=v.astype("<f4").tobytes(),
                      encoding=pb.Template.ENCODING_F32)

    def worst(a: Any, b: Any) -> tuple[float, float, float]:
        """(max delta, min cos, max cos) over row pairs; f16 side decoded as the agent does."""
        fa = np.stack([tmpl.normalise(x) for x in a])
        fb = np.stack([tmpl.normalise(x) for x in b])
        ha = np.stack([tmpl.decode(tmpl.encode(x, MODEL_ID)) for x in fa])
        hb = np.stack([tmpl.decode(tmpl.encode(x, MODEL_ID)) for x in fb])
        exact = np.einsum("ij,ij->i", fa.astype(np.float64), fb.astype(np.float64))
        wire = np.einsum("ij,ij->i", ha.astype(np.float64), hb.astype(np.float64))
        return float(np.max(np.abs(exact - wire))), float(exact.min()), float(exact.max())

    a = rng.standard_normal((pairs, 512)).astype(np.float32)
    b = rng.standard_normal((pairs, 512)).astype(np.float32)
    random_delta, _, _ = worst(a, b)
    # Near pairs: v and v + noise, with the noise spread so cosines run from ~0.2 to ~0.99.
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    sigma = np.exp(rng.uniform(np.log(0.005), np.log(0.2), size=(pairs, 1))).astype(np.float32)
    near = unit + sigma * rng.standard_normal((pairs, 512)).astype(np.float32)
    near_delta, near_lo, near_hi = worst(unit, near)
    return {
        "template_wire_bytes": len(f16.SerializeToString()),
        "template_f32_wire_bytes": len(f32.SerializeToString()),
        "f16_max_cosine_delta": max(random_delta, near_delta),
        "f16_max_cosine_delta_random_pairs": random_delta,
        "f16_max_cosine_delta_near_pairs": near_delta,
        "f16_near_pairs_cos_range": [round(near_lo, 3), round(near_hi, 3)],
        "f16_pairs": pairs,
    }


# ------------------------------------------------------------------ the run


def _register(devices_api: Any, site_id: str, name: str, agent_dir: Path, address: str) -> str:
    from doorkeeper.agent.sync.identity import init_agent

    issued = devices_api.add(site_id, name)
    return str(init_agent(agent_dir, address, issued.token).device_id)


def _fanout_figures(fan: dict[str, Any], devices: int) -> dict[str, Any]:
    """Hub CPU to build one delta and issue its signed header to 1 and to N devices, one thread,
    in-process: the ciphertext is never delivered (end-to-end fan-out needs the fleet simulator)."""
    one = statistics.median(x["total"] for x in fan["one"])
    many = statistics.median(x["total"] for x in fan["many"])
    return {
        "publish_devices": devices,
        "publish_build_and_sign_cpu_ratio_n_vs_one_device": round(many / one, 3),
        "publish_build_and_sign_one_device_cpu_s": round(one, 4),
        "publish_build_and_sign_n_devices_cpu_s": round(many, 4),
        "publish_n_devices_cold_keys_cpu_s": round(fan["cold"]["total"], 4),
        "publish_build_cpu_s": round(statistics.median(x["build"] for x in fan["one"] + fan["many"]), 4),
        "publish_issue_per_device_us": round(
            statistics.median(x["issue"] for x in fan["many"]) / devices * 1e6, 1),
        "publish_issue_breakdown_us": {k: round(v, 1) for k, v in fan["breakdown_us"].items()},
        "publish_delta_bytes": int(fan["one"][0]["bundle_bytes"]),
        "publish_header_bytes": fan["header_bytes"],
        "publish_samples_cpu_s": {side: [round(x["total"], 4) for x in fan[side]]
                                  for side in ("one", "many")},
        "publish_excludes": "delivery of the ciphertext to each device over gRPC, the hub's other "
                            "threads; end-to-end fan-out comes with the fleet simulator",
        "publish_threads": 1,
        "publish_pinned_cores": fan["pinned"],
    }


def _delta_figures(samples: list[dict[str, Any]], pinned: list[int]) -> dict[str, Any]:
    return {
        "delta_apply_s": round(statistics.median(x["s"] for x in samples), 3),
        "delta_bytes": samples[0]["wire_bytes"],
        "delta_payload_bytes": samples[0]["payload_bytes"],
        "delta_chunks": samples[0]["chunks"],
        "delta_first_part_s": round(statistics.median(x["first_part_s"] for x in samples), 3),
        "delta_samples_s": [round(x["s"], 3) for x in samples],
        "delta_agent_pinned_cores": pinned,
    }


def _snapshot_figures(snap: dict[str, Any], persons: int) -> dict[str, Any]:
    return {
        "snapshot_sync_rss_growth_mb": round((snap["peak_rss"] - snap["baseline_rss"]) / 2**20, 1),
        "snapshot_sync_rss_excludes": "the door's whitelist view (see `doorkeeper bench agent`)",
        "snapshot_s": round(snap["s"], 3),
        "snapshot_first_part_s": round(snap["first_part_s"], 3),
        "snapshot_bytes": snap["wire_bytes"],
        "snapshot_payload_bytes": snap["payload_bytes"],
        "snapshot_chunks": snap["chunks"],
        "snapshot_bytes_per_person": round(snap["payload_bytes"] / persons, 1),
        "snapshot_agent_baseline_rss_mb": round(snap["baseline_rss"] / 2**20, 1),
        "snapshot_agent_peak_rss_mb": round(snap["peak_rss"] / 2**20, 1),
        "rss_method": snap["method"],
        "delta_onto_snapshot_site_s": round(snap["delta_s"], 3),
        "delta_onto_snapshot_site_first_part_s": round(snap["delta_first_part_s"], 3),
        "snapshot_agent_pinned_cores": snap["pinned"],
    }


def run(sizes: Sizes) -> dict[str, Any]:
    """All figures; every phase checks it did what it claims (else `BenchError`)."""
    import numpy as np

    from doorkeeper.hub.devices import Devices
    from doorkeeper.hub.server import init_hub

    hub_core, bench_core = cores()
    result: dict[str, Any] = template_figures(sizes.f16_pairs)
    with tempfile.TemporaryDirectory(prefix="dk-bench-sync-") as tmp:
        root = Path(tmp)
        hub_dir = root / "hub"
        init_hub(hub_dir)
        store, hub_keys, whitelist = open_hub_domain(hub_dir)
        try:
            rng = np.random.default_rng(1)
            delta_site = whitelist.add_site("delta")
            whitelist.add_persons(delta_site.site_id, person_specs(rng, sizes.delta_base, "base"))
            snap_site = whitelist.add_site("snapshot")
            start = time.perf_counter()
            for first in range(0, sizes.persons_snapshot, SNAPSHOT_BATCH):
                batch = min(SNAPSHOT_BATCH, sizes.persons_snapshot - first)
                whitelist.add_persons(snap_site.site_id, person_specs(rng, batch, f"snap{first}"))
            result["snapshot_setup_s"] = round(time.perf_counter() - start, 2)

            # Before the hub process starts, so nothing else runs on the machine.
            fan = run_worker("_fanout", {"hub_dir": str(hub_dir), "core": bench_core, "seed": 3,
                                          "persons": sizes.persons_delta, "devices": sizes.devices,
                                          "rounds": sizes.fanout_rounds})
            result.update(_fanout_figures(fan, sizes.devices))

            devices_api = Devices(store, hub_keys)
            with hub_process(hub_dir, hub_core) as (address, hub_pid):
                delta_agent, snap_agent = root / "agent-delta", root / "agent-snapshot"
                _register(devices_api, delta_site.site_id, "delta-door", delta_agent, address)
                snap_device = _register(devices_api, snap_site.site_id, "snapshot-door", snap_agent, address)
                delta = run_worker("_delta", {
                    "hub_dir": str(hub_dir), "agent_dir": str(delta_agent), "site_id": delta_site.site_id,
                    "persons": sizes.persons_delta, "repeats": sizes.delta_repeats, "seed": 2,
                    "core": bench_core})
                result.update(_delta_figures(delta["samples"], delta["pinned"]))
                snap = run_worker("_snapshot", {
                    "agent_dir": str(snap_agent), "core": bench_core, "persons": sizes.persons_snapshot,
                    "hub_dir": str(hub_dir), "site_id": snap_site.site_id,
                    "delta_persons": sizes.persons_delta, "seed": 4})
                result.update(_snapshot_figures(snap, sizes.persons_snapshot))
                result["hub_peak_rss_mb"] = round(status_kb("VmHWM", hub_pid) / 1024, 1)
                result["hub_pinned_cores"] = process_affinity(hub_pid)
                site_now = store.get_site(snap_site.site_id)
                report = store.latest_report(snap_device)
                if report is None or (report.version, report.state_digest) != (
                        site_now.version, site_now.state_digest):
                    raise BenchError("the hub has no report of what the snapshot agent applied")
        finally:
            store.close()
    result.update({
        "delta_persons": sizes.persons_delta,
        "delta_base_persons": sizes.delta_base,
        "snapshot_persons": sizes.persons_snapshot,
        "transport": "gRPC over loopback to a `doorkeeper hub serve` process (delta, snapshot); "
                     "in-process, one thread, no delivery (publish)",
        "threads": {"blas_openmp": 1, "publish": 1,
                    "agent_and_hub": "gRPC's own threads; each process pinned to one core"},
        "pinning": {"hub_core": hub_core, "measuring_core": bench_core,
                    "checked": "every thread's affinity read back from /proc/<pid>/task"},
        **stamp(),
    })
    return result


QUICK = {"persons_delta": 200, "persons_snapshot": 2_000, "devices": 50}
FULL = {"persons_delta": 1_000, "persons_snapshot": 50_000, "devices": 1_000}


@click.command("sync")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--persons-delta", type=click.IntRange(1), default=None,
              help="Persons in the delta (default 1000; 200 with --quick).")
@click.option("--persons-snapshot", type=click.IntRange(1), default=None,
              help="Persons in the snapshot (default 50000; 2000 with --quick).")
@click.option("--devices", type=click.IntRange(1), default=None,
              help="Devices in the fanout (default 1000; 50 with --quick).")
@click.option("--quick", is_flag=True, help="Small sizes, for tests (well under a minute).")
def sync(as_json: bool, persons_delta: int | None, persons_snapshot: int | None, devices: int | None,
         quick: bool) -> None:
    """Sync figures: delta apply time, snapshot RSS growth, fanout CPU, template wire size."""
    base = QUICK if quick else FULL
    sizes = Sizes(
        persons_delta=persons_delta or base["persons_delta"],
        persons_snapshot=persons_snapshot or base["persons_snapshot"],
        devices=devices or base["devices"],
        delta_repeats=2 if quick else 3,
        fanout_rounds=2 if quick else 5,
        f16_pairs=2_000,
    )
    command = ["doorkeeper", "bench", "sync"]
    for flag, value in (("--persons-delta", persons_delta), ("--persons-snapshot", persons_snapshot),
                        ("--devices", devices)):
        if value is not None:
            command += [flag, str(value)]
    command += ["--quick"] * quick + ["--json"] * as_json
    try:
        result = run(sizes)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    result["command"] = " ".join(command)
    result["sizes"] = asdict(sizes)
    emit(result, as_json, title="doorkeeper bench sync")

