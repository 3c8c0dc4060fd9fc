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
  large site (`delta_1000_onto_snapshot_site_s`): costs that grow with the
  site show there.
- fanout: hub CPU of publishing one delta, in one thread of a fresh process,
  no gRPC: `Publisher.bundle_for` (build and encrypt once) plus
  `Publisher.issue` per device. The 1-device and N-device sides each get a
  delta of their own (a new to-version, so both build once), alternated over
  a few rounds; medians are reported.
- templates: float16 vs float32 wire size, and how much float16 moves cosine
  similarity of L2-normalised 512-d vectors (random pairs and near pairs, the
  regime around a match threshold).
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

MODEL_ID = "w600k_mbf.onnx:" + hashlib.sha256(b"doorkeeper bench sync").hexdigest()
SNAPSHOT_BATCH = 5_000
_ONE_THREAD = {
    name: "1"
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
}


class BenchError(Exception):
    """A phase did not do what it must (wrong outcome, wrong bundle kind, no report)."""


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


# ------------------------------------------------------------------ shared helpers


def _cores() -> tuple[int, int]:
    """(hub core, measuring core): different ones when there are two or more."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[-1]


def _pin(core: int) -> int:
    os.sched_setaffinity(0, {core})
    return core


def _specs(rng: Any, count: int, tag: str) -> list[Any]:
    """`count` persons with one random L2-normalised template each."""
    import numpy as np

    from doorkeeper import templates as tmpl
    from doorkeeper.hub.whitelist import PersonSpec

    vectors = rng.standard_normal((count, 512), dtype=np.float32)
    return [PersonSpec(name=f"Resident {tag}-{i}", templates=[tmpl.encode(v, MODEL_ID)])
            for i, v in enumerate(vectors)]


def _status_kb(field: str, pid: int | str = "self") -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise BenchError(f"/proc/{pid}/status has no {field}")
    return int(match.group(1))


CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakRss:
    """Peak resident memory of this process from `start()` to `stop()`, in bytes."""

    def __init__(self, clear_refs: Path = CLEAR_REFS) -> None:
        self.clear_refs = clear_refs
        self.method = ""
        self._peak = 0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> int:
        """Reset the high-water mark; returns RSS right now (the baseline)."""
        try:
            with open(self.clear_refs, "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.method = "VmHWM reset via /proc/self/clear_refs"
        except OSError:
            import psutil

            proc = psutil.Process()
            self.method = "psutil RSS sampled every 20 ms"
            self._peak = proc.memory_info().rss

            def sample() -> None:
                while not self._stop.wait(0.02):
                    self._peak = max(self._peak, proc.memory_info().rss)

            self._sampler = threading.Thread(target=sample, daemon=True)
            self._sampler.start()
        return _status_kb("VmRSS") * 1024

    def stop(self) -> int:
        if self._sampler is None:
            return _status_kb("VmHWM") * 1024
        self._stop.set()
        self._sampler.join()
        return max(self._peak, _status_kb("VmRSS") * 1024)


class StreamTap:
    """Wraps an agent's `HubClient.stream` to see what a Fetch delivered, untouched."""

    def __init__(self, client: Any) -> None:
        self._real = client.stream
        client.stream = self._stream
        self.reset()

    def reset(self) -> None:
        self.wire_bytes = 0
        self.payload_bytes = 0
        self.chunks = 0
        self.kinds: list[int] = []
        self.first_part_at = 0.0

    def _stream(self, method: str, request: Any, timeout: float) -> Iterator[Any]:
        from doorkeeper.v1 import doorkeeper_pb2 as pb

        for part in self._real(method, request, timeout):
            if not self.first_part_at:
                self.first_part_at = time.perf_counter()
            self.wire_bytes += part.ByteSize()
            which = part.WhichOneof("part")
            if which == "header":
                self.kinds.append(pb.BundleHeader.FromString(part.header.header).kind)
            elif which == "chunk":
                self.chunks += 1
                self.payload_bytes += len(part.chunk.data)
            yield part


def _open_agent(agent_dir: Path) -> tuple[Any, Any]:
    from doorkeeper.agent.identity import AgentFiles
    from doorkeeper.agent.sync import Syncer
    from doorkeeper.agent.whitelist import LocalWhitelist

    files = AgentFiles(agent_dir)
    whitelist = LocalWhitelist(files.whitelist, files.storage_key())
    return whitelist, Syncer(files, whitelist)


def _open_hub_domain(hub_dir: Path) -> tuple[Any, Any, Any]:
    """(store, hub keys, whitelist) on the hub's files, without gRPC."""
    from doorkeeper.hub.hubkeys import HubKeys
    from doorkeeper.hub.sqlite_store import SqliteHubStore
    from doorkeeper.hub.whitelist import Whitelist

    store = SqliteHubStore(hub_dir / "hub.db")
    hub_keys = HubKeys.load(hub_dir / "keys")
    return store, hub_keys, Whitelist(store, hub_keys)


# ------------------------------------------------------------------ workers (fresh processes)


def _worker_delta(args: dict[str, Any]) -> dict[str, Any]:
    """An agent in sync with the base population; then timed deltas."""
    import numpy as np

    from doorkeeper.v1 import doorkeeper_pb2 as pb

    core = _pin(args["core"])
    store, _, hub_whitelist = _open_hub_domain(Path(args["hub_dir"]))
    local, syncer = _open_agent(Path(args["agent_dir"]))
    tap = StreamTap(syncer.client)
    first = syncer.sync_once()
    if first.outcome != "applied":
        raise BenchError(f"initial sync of the base population: {first.outcome} {first.detail}")
    rng = np.random.default_rng(args["seed"])
    samples: list[dict[str, Any]] = []
    for r in range(args["repeats"]):
        specs = _specs(rng, args["persons"], f"delta{r}")
        _, site = hub_whitelist.add_persons(args["site_id"], specs)
        tap.reset()
        start = time.perf_counter()  # the change is committed
        result = syncer.sync_once()
        elapsed = time.perf_counter() - start
        if result.outcome != "applied" or tap.kinds != [pb.BUNDLE_KIND_DELTA]:
            raise BenchError(f"delta sync: {result.outcome} {result.detail}, kinds {tap.kinds}")
        if local.version != site.version or local.state_digest != site.state_digest:
            raise BenchError("agent state differs from the hub's after the delta")
        report = store.latest_report(syncer.identity.device_id)
        if report is None or report.version != site.version or report.state_digest != site.state_digest:
            raise BenchError("the hub has no report of the applied version")
        samples.append({"s": elapsed, "first_part_s": tap.first_part_at - start,
                        "wire_bytes": tap.wire_bytes, "payload_bytes": tap.payload_bytes,
                        "chunks": tap.chunks, "persons_after": local.person_count})
    syncer.close()
    local.close()
    store.close()
    return {"samples": samples, "core": core}


def _worker_snapshot(args: dict[str, Any]) -> dict[str, Any]:
    """A fresh agent process fetches and applies a whole site: time and peak RSS growth."""
    from doorkeeper.v1 import doorkeeper_pb2 as pb

    core = _pin(args["core"])
    local, syncer = _open_agent(Path(args["agent_dir"]))
    tap = StreamTap(syncer.client)
    gc.collect()
    peak = PeakRss()
    baseline = peak.start()
    start = time.perf_counter()
    result = syncer.sync_once()
    elapsed = time.perf_counter() - start
    top = peak.stop()
    if result.outcome != "applied" or tap.kinds != [pb.BUNDLE_KIND_SNAPSHOT]:
        raise BenchError(f"snapshot sync: {result.outcome} {result.detail}, kinds {tap.kinds}")
    persons = local.person_count
    if persons != args["persons"]:
        raise BenchError(f"agent holds {persons} persons after the snapshot, expected {args['persons']}")
    out = {
        "s": elapsed, "first_part_s": tap.first_part_at - start, "wire_bytes": tap.wire_bytes,
        "payload_bytes": tap.payload_bytes, "chunks": tap.chunks, "baseline_rss": baseline,
        "peak_rss": top, "method": peak.method, "version": local.version, "core": core,
    }
    # Then (memory already measured) one delta onto this large site: costs that grow with it show.
    import numpy as np

    store, _, hub_whitelist = _open_hub_domain(Path(args["hub_dir"]))
    _, site = hub_whitelist.add_persons(
        args["site_id"], _specs(np.random.default_rng(args["seed"]), args["delta_persons"], "big"))
    tap.reset()
    start = time.perf_counter()
    result = syncer.sync_once()
    out["delta_s"] = time.perf_counter() - start
    out["delta_first_part_s"] = tap.first_part_at - start
    if result.outcome != "applied" or tap.kinds != [pb.BUNDLE_KIND_DELTA] or \
            local.state_digest != site.state_digest:
        raise BenchError(f"delta onto the snapshot site: {result.outcome} {result.detail}, kinds {tap.kinds}")
    store.close()
    syncer.close()
    local.close()
    return out


def _checkpoint(db: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _cpu_us(fn: Callable[[], object], n: int) -> float:
    start = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - start) / n * 1e6


def _worker_fanout(args: dict[str, Any]) -> dict[str, Any]:
    """Hub CPU (this thread only) to publish one delta to 1 device and to N devices."""
    import numpy as np
    from nacl.public import Box, PrivateKey, PublicKey, SealedBox

    from doorkeeper import keys
    from doorkeeper import token as tokens
    from doorkeeper.hub.devices import Devices
    from doorkeeper.hub.publisher import Publisher
    from doorkeeper.v1 import doorkeeper_pb2 as pb

    core = _pin(args["core"])
    store, hub_keys, whitelist = _open_hub_domain(Path(args["hub_dir"]))
    devices_api = Devices(store, hub_keys)
    publisher = Publisher(store, hub_keys)
    rng = np.random.default_rng(args["seed"])
    n_persons, n_devices = args["persons"], args["devices"]
    site = whitelist.add_site("fanout")
    whitelist.add_persons(site.site_id, _specs(rng, n_persons, "fanout-base"))
    now = int(time.time())
    devices = []
    for i in range(n_devices):
        issued = devices_api.add(site.site_id, f"door-{i:04d}")
        pair = keys.KeyPair.generate()
        token_id = tokens.Token.parse(issued.token).token_id
        devices.append(store.redeem_token(token_id, pair.sign_public, pair.box_public, now))

    def publish(targets: list[Any], tag: str) -> dict[str, float]:
        _, after = whitelist.add_persons(site.site_id, _specs(rng, n_persons, tag))
        _checkpoint(Path(args["hub_dir"]) / "hub.db")  # no side pays for the other's WAL checkpoint
        gc.collect()
        t0 = time.thread_time()
        meta = publisher.bundle_for(site.site_id, after.version - 1)
        t1 = time.thread_time()
        if meta is None:
            raise BenchError("fanout: the hub built no bundle")
        headers = [publisher.issue(meta, d) for d in targets]
        t2 = time.thread_time()
        if meta is None or meta.kind != pb.BUNDLE_KIND_DELTA or len(headers) != len(targets):
            raise BenchError("fanout: the hub did not build a delta")
        return {"build": t1 - t0, "issue": t2 - t1, "total": t2 - t0,
                "bundle_bytes": float(sum(meta.chunk_length))}

    # The first publish after a hub start pays one X25519 per device to precompute
    # its crypto_box shared key; later publishes reuse it.
    cold = publish(devices, "cold")
    one: list[dict[str, float]] = []
    many: list[dict[str, float]] = []
    for r in range(args["rounds"]):  # alternate the order so drift hits both sides
        if r % 2 == 0:
            one.append(publish(devices[:1], f"one{r}"))
            many.append(publish(devices, f"many{r}"))
        else:
            many.append(publish(devices, f"many{r}"))
            one.append(publish(devices[:1], f"one{r}"))

    # Where the per-device time goes, each step alone on this thread.
    meta = publisher.bundle_for(site.site_id, store.get_site(site.site_id).version - 1)
    if meta is None:
        raise BenchError("fanout: no bundle for the breakdown")
    content_key = hub_keys.unseal(meta.content_key_sealed)
    device_box = PublicKey(devices[0].box_public)
    raw = publisher.issue(meta, devices[0]).header  # the real header bytes one device gets
    shared = Box(PrivateKey.generate(), device_box)  # what a cached per-device shared key would cost
    reps = max(200, n_devices)
    breakdown = {
        "unseal_content_key": _cpu_us(lambda: hub_keys.unseal(meta.content_key_sealed), reps),
        "sealedbox_wrap": _cpu_us(lambda: SealedBox(PublicKey(devices[0].box_public)).encrypt(content_key),
                                  reps),
        "header_serialise": _cpu_us(lambda: pb.BundleHeader.FromString(raw).SerializeToString(
            deterministic=True), reps),
        "ed25519_sign": _cpu_us(lambda: keys.sign(hub_keys.pair.sign_key, keys.CTX_BUNDLE_HEADER, raw), reps),
        "issue_total": _cpu_us(lambda: publisher.issue(meta, devices[0]), reps),
        "precomputed_box_wrap_for_comparison": _cpu_us(lambda: shared.encrypt(content_key), reps),
    }
    store.close()
    return {"one": one, "many": many, "cold": cold, "breakdown_us": breakdown, "core": core,
            "header_bytes": len(raw)}


def _worker_hub(args: dict[str, Any]) -> None:
    """`doorkeeper hub serve`, pinned to one core before grpc starts any thread."""
    _pin(args["core"])
    from doorkeeper.tools.cli import cli

    cli.main(args=["hub", "serve", "--data", args["hub_dir"], "--listen", args["listen"]],
             prog_name="doorkeeper")


_WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "_delta": _worker_delta,
    "_snapshot": _worker_snapshot,
    "_fanout": _worker_fanout,
}


def _run_worker(task: str, args: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "doorkeeper.tools.bench_sync", task, json.dumps(args)],
        env={**os.environ, **_ONE_THREAD}, capture_output=True, text=True, timeout=900, check=False,
    )
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise click.ClickException(f"bench sync {task} failed: {last}")
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ------------------------------------------------------------------ the hub process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def hub_process(hub_dir: Path, core: int) -> Iterator[tuple[str, int]]:
    """A real hub process on a loopback port; yields (address, pid); SIGTERM on exit."""
    port = _free_port()
    log_path = hub_dir.parent / "hub.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "doorkeeper.tools.bench_sync", "_hub",
             json.dumps({"hub_dir": str(hub_dir), "listen": f"127.0.0.1:{port}", "core": core})],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **_ONE_THREAD},
        )
    try:
        deadline = time.monotonic() + 30
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise click.ClickException(f"hub did not start: {' | '.join(tail)}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ------------------------------------------------------------------ templates (in this process)


def template_figures(pairs: int, seed: int = 5) -> dict[str, Any]:
    """Wire sizes, and max |cos(f32) - cos(f16 decoded)| over random and near pairs."""
    import numpy as np

    from doorkeeper import templates as tmpl
    from doorkeeper.v1 import doorkeeper_pb2 as pb

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


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # not Linux: platform's answer stands
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "platform": platform.platform()}


def _register(devices_api: Any, site_id: str, name: str, agent_dir: Path, address: str) -> str:
    from doorkeeper.agent.identity import init_agent

    issued = devices_api.add(site_id, name)
    return str(init_agent(agent_dir, address, issued.token).device_id)


def _fanout_figures(fan: dict[str, Any], devices: int) -> dict[str, Any]:
    one = statistics.median(x["total"] for x in fan["one"])
    many = statistics.median(x["total"] for x in fan["many"])
    return {
        "fanout_1000_vs_1_cpu_ratio": round(many / one, 3),
        "fanout_1_cpu_s": round(one, 4),
        "fanout_1000_cpu_s": round(many, 4),
        "fanout_1000_cold_cpu_s": round(fan["cold"]["total"], 4),
        "fanout_1000_vs_1_cold_cpu_ratio": round(fan["cold"]["total"] / one, 3),
        "fanout_build_cpu_s": round(statistics.median(x["build"] for x in fan["one"] + fan["many"]), 4),
        "per_device_issue_us": round(statistics.median(x["issue"] for x in fan["many"]) / devices * 1e6, 1),
        "issue_breakdown_us": {k: round(v, 1) for k, v in fan["breakdown_us"].items()},
        "fanout_delta_bytes": int(fan["one"][0]["bundle_bytes"]),
        "fanout_header_bytes": fan["header_bytes"],
        "fanout_samples_cpu_s": {side: [round(x["total"], 4) for x in fan[side]] for side in ("one", "many")},
    }


def _delta_figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "delta_1000_apply_s": round(statistics.median(x["s"] for x in samples), 3),
        "delta_1000_bytes": samples[0]["wire_bytes"],
        "delta_1000_payload_bytes": samples[0]["payload_bytes"],
        "delta_1000_chunks": samples[0]["chunks"],
        "delta_1000_first_part_s": round(statistics.median(x["first_part_s"] for x in samples), 3),
        "delta_1000_samples_s": [round(x["s"], 3) for x in samples],
    }


def _snapshot_figures(snap: dict[str, Any], persons: int) -> dict[str, Any]:
    return {
        "snapshot_50k_rss_growth_mb": round((snap["peak_rss"] - snap["baseline_rss"]) / 2**20, 1),
        "snapshot_50k_s": round(snap["s"], 3),
        "snapshot_50k_first_part_s": round(snap["first_part_s"], 3),
        "snapshot_50k_bytes": snap["wire_bytes"],
        "snapshot_50k_payload_bytes": snap["payload_bytes"],
        "snapshot_chunks": snap["chunks"],
        "snapshot_bytes_per_person": round(snap["payload_bytes"] / persons, 1),
        "snapshot_agent_baseline_rss_mb": round(snap["baseline_rss"] / 2**20, 1),
        "snapshot_agent_peak_rss_mb": round(snap["peak_rss"] / 2**20, 1),
        "rss_method": snap["method"],
        "delta_1000_onto_snapshot_site_s": round(snap["delta_s"], 3),
        "delta_1000_onto_snapshot_site_first_part_s": round(snap["delta_first_part_s"], 3),
    }


def run(sizes: Sizes) -> dict[str, Any]:
    """All figures; every phase checks it did what it claims (else `BenchError`)."""
    import numpy as np

    from doorkeeper.hub.devices import Devices
    from doorkeeper.hub.server import init_hub

    hub_core, bench_core = _cores()
    result: dict[str, Any] = template_figures(sizes.f16_pairs)
    with tempfile.TemporaryDirectory(prefix="dk-bench-sync-") as tmp:
        root = Path(tmp)
        hub_dir = root / "hub"
        init_hub(hub_dir)
        store, hub_keys, whitelist = _open_hub_domain(hub_dir)
        try:
            rng = np.random.default_rng(1)
            delta_site = whitelist.add_site("delta")
            whitelist.add_persons(delta_site.site_id, _specs(rng, sizes.delta_base, "base"))
            snap_site = whitelist.add_site("snapshot")
            start = time.perf_counter()
            for first in range(0, sizes.persons_snapshot, SNAPSHOT_BATCH):
                batch = min(SNAPSHOT_BATCH, sizes.persons_snapshot - first)
                whitelist.add_persons(snap_site.site_id, _specs(rng, batch, f"snap{first}"))
            result["snapshot_setup_s"] = round(time.perf_counter() - start, 2)

            # Before the hub process starts, so nothing else runs on the machine.
            fan = _run_worker("_fanout", {"hub_dir": str(hub_dir), "core": bench_core, "seed": 3,
                                          "persons": sizes.persons_delta, "devices": sizes.devices,
                                          "rounds": sizes.fanout_rounds})
            result.update(_fanout_figures(fan, sizes.devices))

            devices_api = Devices(store, hub_keys)
            with hub_process(hub_dir, hub_core) as (address, hub_pid):
                delta_agent, snap_agent = root / "agent-delta", root / "agent-snapshot"
                _register(devices_api, delta_site.site_id, "delta-door", delta_agent, address)
                snap_device = _register(devices_api, snap_site.site_id, "snapshot-door", snap_agent, address)
                delta = _run_worker("_delta", {
                    "hub_dir": str(hub_dir), "agent_dir": str(delta_agent), "site_id": delta_site.site_id,
                    "persons": sizes.persons_delta, "repeats": sizes.delta_repeats, "seed": 2,
                    "core": bench_core})
                result.update(_delta_figures(delta["samples"]))
                snap = _run_worker("_snapshot", {
                    "agent_dir": str(snap_agent), "core": bench_core, "persons": sizes.persons_snapshot,
                    "hub_dir": str(hub_dir), "site_id": snap_site.site_id,
                    "delta_persons": sizes.persons_delta, "seed": 4})
                result.update(_snapshot_figures(snap, sizes.persons_snapshot))
                result["hub_peak_rss_mb"] = round(_status_kb("VmHWM", hub_pid) / 1024, 1)
                site_now = store.get_site(snap_site.site_id)
                report = store.latest_report(snap_device)
                if report is None or (report.version, report.state_digest) != (
                        site_now.version, site_now.state_digest):
                    raise BenchError("the hub has no report of what the snapshot agent applied")
        finally:
            store.close()
    result.update({
        "delta_base_persons": sizes.delta_base,
        "transport": "gRPC over loopback to a `doorkeeper hub serve` process (delta, snapshot); "
                     "in-process, one thread (fanout)",
        "pinning": {"hub_core": hub_core, "measuring_core": bench_core},
        "machine": _machine(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    })
    return result


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("figure", "value", title="doorkeeper bench sync")
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    Console().print(table)


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
    _emit(result, as_json)


if __name__ == "__main__":
    task, raw = sys.argv[1], sys.argv[2]
    if task == "_hub":
        _worker_hub(json.loads(raw))
    else:
        print(json.dumps(_WORKERS[task](json.loads(raw))))
