"""The fresh processes of `doorkeeper bench sync`: what runs in each, and how it is started.

Each worker runs as ``python -m doorkeeper.tools.bench.sync_workers TASK JSON_ARGS``, pins
itself to the core it is given, and prints its result as one JSON object on its last line;
``_hub`` instead runs `doorkeeper hub serve` until SIGTERM. A fresh process per phase gives
honest RSS and no warm caches from an earlier phase; numeric libraries get one thread each.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from doorkeeper.tools.bench import kit as benchkit
from doorkeeper.tools.bench.kit import pin
from doorkeeper.tools.bench.sync_probes import BenchError, PeakRss, StreamTap, cpu_us

MODEL_ID = "w600k_mbf.onnx:" + hashlib.sha256(b"doorkeeper bench sync").hexdigest()
ENTRY = "doorkeeper.tools.bench.sync_workers"  # this module, as `python -m` runs it


def person_specs(rng: Any, count: int, tag: str) -> list[Any]:
    """`count` persons with one random L2-normalised template each."""
    import numpy as np

    from doorkeeper.hub.whitelist import PersonSpec
    from doorkeeper.wire import templates as tmpl

    vectors = rng.standard_normal((count, 512), dtype=np.float32)
    return [PersonSpec(name=f"Resident {tag}-{i}", templates=[tmpl.encode(v, MODEL_ID)])
            for i, v in enumerate(vectors)]


def _open_agent(agent_dir: Path) -> tuple[Any, Any]:
    from doorkeeper.agent.sync.identity import AgentFiles
    from doorkeeper.agent.sync.syncer import Syncer
    from doorkeeper.agent.sync.whitelist import LocalWhitelist

    files = AgentFiles(agent_dir)
    whitelist = LocalWhitelist(files.whitelist, files.storage_key())
    return whitelist, Syncer(files, whitelist)


def open_hub_domain(hub_dir: Path) -> tuple[Any, Any, Any]:
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

    pinned = pin(args["core"])
    store, _, hub_whitelist = open_hub_domain(Path(args["hub_dir"]))
    local, syncer = _open_agent(Path(args["agent_dir"]))
    tap = StreamTap(syncer.client)
    first = syncer.sync_once()
    if first.outcome != "applied":
        raise BenchError(f"initial sync of the base population: {first.outcome} {first.detail}")
    rng = np.random.default_rng(args["seed"])
    samples: list[dict[str, Any]] = []
    for r in range(args["repeats"]):
        specs = person_specs(rng, args["persons"], f"delta{r}")
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
    return {"samples": samples, "pinned": pinned}


def _worker_snapshot(args: dict[str, Any]) -> dict[str, Any]:
    """A fresh agent process fetches and applies a whole site: time and peak RSS growth."""
    from doorkeeper.v1 import doorkeeper_pb2 as pb

    pinned = pin(args["core"])
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
        "peak_rss": top, "method": peak.method, "version": local.version, "pinned": pinned,
    }
    # Then (memory already measured) one delta onto this large site: costs that grow with it show.
    import numpy as np

    store, _, hub_whitelist = open_hub_domain(Path(args["hub_dir"]))
    _, site = hub_whitelist.add_persons(
        args["site_id"], person_specs(np.random.default_rng(args["seed"]), args["delta_persons"], "big"))
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


def _worker_fanout(args: dict[str, Any]) -> dict[str, Any]:
    """Hub CPU (this thread only) to publish one delta to 1 device and to N devices."""
    import numpy as np
    from nacl.public import Box, PrivateKey, PublicKey, SealedBox

    from doorkeeper.hub.devices import Devices
    from doorkeeper.hub.publisher import Publisher
    from doorkeeper.v1 import doorkeeper_pb2 as pb
    from doorkeeper.wire import keys
    from doorkeeper.wire import token as tokens

    pinned = pin(args["core"])
    store, hub_keys, whitelist = open_hub_domain(Path(args["hub_dir"]))
    devices_api = Devices(store, hub_keys)
    publisher = Publisher(store, hub_keys)
    rng = np.random.default_rng(args["seed"])
    n_persons, n_devices = args["persons"], args["devices"]
    site = whitelist.add_site("fanout")
    whitelist.add_persons(site.site_id, person_specs(rng, n_persons, "fanout-base"))
    now = int(time.time())
    devices = []
    for i in range(n_devices):
        issued = devices_api.add(site.site_id, f"door-{i:04d}")
        pair = keys.KeyPair.generate()
        token_id = tokens.Token.parse(issued.token).token_id
        device = store.bind_token_keys(token_id, pair.sign_public, pair.box_public, now)
        store.complete_registration(device.device_id, now)
        devices.append(device)

    def publish(targets: list[Any], tag: str) -> dict[str, float]:
        _, after = whitelist.add_persons(site.site_id, person_specs(rng, n_persons, tag))
        _checkpoint(Path(args["hub_dir"]) / "hub.db")  # no side pays for the other's WAL checkpoint
        gc.collect()
        t0 = time.thread_time()
        meta = publisher.bundle_for(site.site_id, after.version - 1)
        t1 = time.thread_time()
        if meta is None:
            raise BenchError("fanout: the hub built no bundle")
        headers = [publisher.issue(meta, d) for d in targets]
        t2 = time.thread_time()
        if meta.kind != pb.BUNDLE_KIND_DELTA or len(headers) != len(targets):
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
        "unseal_content_key": cpu_us(lambda: hub_keys.unseal(meta.content_key_sealed), reps),
        "sealedbox_wrap": cpu_us(lambda: SealedBox(PublicKey(devices[0].box_public)).encrypt(content_key),
                                  reps),
        "header_serialise": cpu_us(lambda: pb.BundleHeader.FromString(raw).SerializeToString(
            deterministic=True), reps),
        "ed25519_sign": cpu_us(lambda: keys.sign(hub_keys.pair.sign_key, keys.CTX_BUNDLE_HEADER, raw), reps),
        "issue_total": cpu_us(lambda: publisher.issue(meta, devices[0]), reps),
        "precomputed_box_wrap_for_comparison": cpu_us(lambda: shared.encrypt(content_key), reps),
    }
    store.close()
    return {"one": one, "many": many, "cold": cold, "breakdown_us": breakdown, "pinned": pinned,
            "header_bytes": len(raw)}


def _worker_hub(args: dict[str, Any]) -> None:
    """`doorkeeper hub serve`, pinned to one core before grpc starts any thread."""
    pin(args["core"])
    from doorkeeper.tools.cli import cli

    cli.main(args=["hub", "serve", "--data", args["hub_dir"], "--listen", args["listen"]],
             prog_name="doorkeeper")


_WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "_delta": _worker_delta,
    "_snapshot": _worker_snapshot,
    "_fanout": _worker_fanout,
}


def run_worker(task: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run worker ``task`` in a fresh process; its JSON result, or ClickException on failure."""
    return benchkit.run_worker(ENTRY, task, args, label="bench sync", core=args.get("core"))


@contextmanager
def hub_process(hub_dir: Path, core: int) -> Iterator[tuple[str, int]]:
    """A real hub process on a loopback port; yields (address, pid); SIGTERM on exit."""
    port = benchkit.free_port()
    log_path = hub_dir.parent / "hub.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", ENTRY, "_hub",
             json.dumps({"hub_dir": str(hub_dir), "listen": f"127.0.0.1:{port}", "core": core})],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **benchkit.ONE_THREAD},
            preexec_fn=lambda: os.sched_setaffinity(0, {core}),
        )
    try:
        deadline = time.monotonic() + 30
        while not benchkit.port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise click.ClickException(f"hub did not start: {' | '.join(tail)}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        benchkit.stop_process(proc)


if __name__ == "__main__":
    task, raw = sys.argv[1], sys.argv[2]
    if task == "_hub":
        _worker_hub(json.loads(raw))
    else:
        print(json.dumps(_WORKERS[task](json.loads(raw))))
