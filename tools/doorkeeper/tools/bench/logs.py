"""`doorkeeper bench logs`: outbox append, hub ingest by batch size, upload, and a SIGKILL loop.

Also a subprocess worker (`python -m doorkeeper.tools.bench.logs worker DIR MODE`)
that the kill -9 loop (bench and tests) runs and SIGKILLs: it prints
``A <seq>`` after each append returned and ``U <watermark>`` after each
acknowledged upload, flushing each line, so the parent knows exactly what was
acknowledged before the kill.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from nacl.public import PrivateKey

from doorkeeper.agent.entries.outbox import Outbox, OutboxPolicy
from doorkeeper.agent.entries.uploader import DEFAULT_BATCH_RECORDS, upload_pending
from doorkeeper.hub.logs import LogIngest
from doorkeeper.hub.logstore import SqliteLogStore
from doorkeeper.tools.bench.kit import (
    ONE_THREAD,
    cores,
    emit,
    free_port,
    pin,
    process_affinity,
    run_worker,
    stamp,
    stop_process,
)
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import entrylog
from doorkeeper.wire.entrylog import Entry, OwnerKey
from doorkeeper.wire.keys import KeyPair

SITE = "site-bench"
DEVICE = "dev-bench"
TRANSPORT = ("upload: gRPC over loopback to a `doorkeeper hub serve` process pinned to one core "
             "(signed UploadLogs calls); ingest: LogIngest in a fresh process pinned to that core, "
             "one thread, no gRPC")
INGEST_BATCHES = (1, 10, 100, 1000)
INGEST_TARGET_PER_S = 10_000
SIGKILL_NOTE = ("SIGKILL only: the kernel's page cache survives a kill, so this does not prove "
                "durability (it would pass with synchronous=OFF); 'lost' compares sequence numbers")


def sample_entry(i: int, tag: str = "") -> Entry:
    return Entry(door="front-door", decision="granted" if i % 5 else "denied",
                 credential="face", person_id=f"person-{tag}{i:08d}", similarity=0.61 + i % 7 / 100,
                 liveness=0.93, whitelist_version=42, reason="" if i % 5 else "not on whitelist")


# ------------------------------------------------------------------ kill -9 worker


@dataclass(frozen=True)
class Rig:
    """A directory with device keys, an owner key, an outbox and a hub database."""

    root: Path

    @classmethod
    def create(cls, root: Path) -> Rig:
        root.mkdir(parents=True, exist_ok=True)
        KeyPair.generate().save(root, "device")
        owner = PrivateKey.generate()
        (root / "owner.key").write_bytes(bytes(owner))
        os.chmod(root / "owner.key", 0o600)
        return cls(root)

    @property
    def device(self) -> KeyPair:
        return KeyPair.load(self.root, "device")

    @property
    def owner_private(self) -> bytes:
        return (self.root / "owner.key").read_bytes()

    @property
    def owner(self) -> OwnerKey:
        return OwnerKey.from_public(bytes(PrivateKey(self.owner_private).public_key))

    def outbox(self) -> Outbox:
        owner = self.owner
        return Outbox(self.root / "outbox.db", device_id=DEVICE, owner_key=lambda: owner,
                      policy=OutboxPolicy(min_free_bytes=0))

    def ingest(self) -> LogIngest:
        return LogIngest(SqliteLogStore(self.root / "hub.db"))

    def upload(self, outbox: Outbox, ingest: LogIngest, **kw: object) -> object:
        dev = self.device
        return upload_pending(
            outbox, lambda b: ingest.ingest(SITE, DEVICE, dev.sign_public, b.SerializeToString()),
            device_key=dev.sign_key, site_id=SITE, **kw)  # type: ignore[arg-type]


def _worker(root: Path, mode: str) -> None:
    rig = Rig(root)
    outbox = rig.outbox()
    ingest = rig.ingest()
    dev = rig.device
    tag = f"{os.getpid()}-"
    out = sys.stdout

    def send(b: pb.SignedLogBatch) -> pb.LogAck:
        ack = ingest.ingest(SITE, DEVICE, dev.sign_public, b.SerializeToString())
        out.write(f"U {ack.watermark}\n")
        out.flush()
        return ack

    out.write("R\n")
    out.flush()
    i = 0
    while True:
        if mode in ("append", "both"):
            for _ in range(10):
                r = outbox.append(sample_entry(i, tag))
                i += 1
                if r.written:
                    out.write(f"A {r.seq}\n")
                    out.flush()
        if mode in ("upload", "both"):
            upload_pending(outbox, send, device_key=dev.sign_key, site_id=SITE,
                           batch_records=7, max_batches=3)
        if mode == "upload" and outbox.stats().backlog_records == 0:
            for _ in range(30):  # refill so there is always something to upload
                outbox.append(sample_entry(i, tag))
                i += 1


@dataclass(frozen=True)
class KillOutcome:
    iterations: int
    acknowledged: int
    lost: int
    duplicated: int
    integrity_ok: bool
    chain_ok: bool


def integrity_ok(path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def kill_loop(root: Path, iterations: int, *, seed: int = 0,
              modes: tuple[str, ...] = ("append", "upload", "both")) -> KillOutcome:
    """Spawn the worker, SIGKILL it at a random moment, reopen, repeat; then
    upload everything and check: integrity_check ok after every kill, every
    acknowledged append reached the hub exactly once, the chain verifies."""
    rng = random.Random(seed)
    rig = Rig.create(root)
    acked_seqs: set[int] = set()
    ok = True
    for it in range(iterations):
        proc = subprocess.Popen(
            [sys.executable, "-m", "doorkeeper.tools.bench.logs", "worker", str(root),
             modes[it % len(modes)]], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # "R": set up, now working
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(proc.pid, signal.SIGKILL)
        output = proc.stdout.read()
        proc.wait()
        proc.stdout.close()
        acked_seqs.update(int(line[2:]) for line in output.splitlines() if line.startswith("A "))
        for name in ("outbox.db", "hub.db"):
            if (root / name).exists() and not integrity_ok(root / name):
                ok = False
    outbox = rig.outbox()
    ingest = rig.ingest()
    rig.upload(outbox, ingest)
    frames = [pb.LogExportFrame(device_key=pb.LogDeviceKey(
        device_id=DEVICE, site_id=SITE, sign_public_key=rig.device.sign_public))]
    frames += [pb.LogExportFrame(batch=b.as_proto()) for b in ingest.pull(SITE)]
    report = entrylog.verify_export(frames, {rig.owner.key_id: rig.owner_private})
    seqs = [e.seq for e in report.entries]
    persons = [e.person_id for e in report.entries]
    duplicated = (len(seqs) - len(set(seqs))) + (len(persons) - len(set(persons)))
    lost = len(acked_seqs - set(seqs))
    outbox.close()
    return KillOutcome(iterations, len(acked_seqs), lost, duplicated,
                       ok and integrity_ok(root / "hub.db"), report.ok and not report.gaps)


# ------------------------------------------------------------------ figures


def _presealed_batches(device: KeyPair, owner: OwnerKey, n: int,
                       per_batch: int = DEFAULT_BATCH_RECORDS) -> list[bytes]:
    out, head, seq = [], entrylog.GENESIS, 0
    while seq < n:
        records = []
        for _ in range(min(per_batch, n - seq)):
            seq += 1
            raw = entrylog.seal_entry(sample_entry(seq), DEVICE, seq, head, owner)
            head = entrylog.chain_value(raw)
            records.append(raw)
        out.append(entrylog.sign_batch(device.sign_key, site_id=SITE, device_id=DEVICE,
                                       records=records, sent_at_ms=int(time.time() * 1000))
                   .SerializeToString())
    return out


def _worker_ingest(args: dict[str, Any]) -> dict[str, Any]:
    """Fresh process pinned to the hub's core: `LogIngest.ingest` of presealed signed batches of
    each size into a fresh SQLite log store; only the ingest calls are timed."""
    pinned = pin(args["core"])
    owner = OwnerKey.from_public(bytes.fromhex(args["owner_public"]))
    out: dict[str, Any] = {"pinned": pinned, "by_batch": {}}
    for per_batch in args["batches"]:
        dev = KeyPair.generate()
        batches = _presealed_batches(dev, owner, args["records"], per_batch)
        ingest = LogIngest(SqliteLogStore(Path(args["dir"]) / f"ingest-{per_batch}.db"))
        t0 = time.perf_counter()
        for raw in batches:
            ingest.ingest(SITE, DEVICE, dev.sign_public, raw)
        elapsed = time.perf_counter() - t0
        status = ingest.device_status(DEVICE)
        if status is None or status.watermark != args["records"]:
            raise RuntimeError(f"ingest of {per_batch}-record batches stored the wrong count")
        out["by_batch"][str(per_batch)] = {"records_per_s": round(args["records"] / elapsed, 1),
                                           "batches": len(batches), "s": round(elapsed, 3)}
    return out


def _grpc_append_and_upload(root: Path, rig: Rig, records: int, hub_core: int,
                            agent_core: int) -> dict[str, object]:
    """A real hub process (pinned to ``hub_core``) and a registered device: durable appends,
    then one upload over gRPC at the agent's default batch size."""
    from nacl.signing import SigningKey

    from doorkeeper.agent.sync.hubclient import ADMIN, SYNC, HubClient
    from doorkeeper.agent.sync.identity import AgentFiles, init_agent
    from doorkeeper.hub.server import init_hub
    from doorkeeper.wire import keys

    init_hub(root / "hub")
    address = f"127.0.0.1:{free_port()}"
    hub = subprocess.Popen(
        [sys.executable, "-m", "doorkeeper", "hub", "serve", "--data", str(root / "hub"),
         "--listen", address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **ONE_THREAD}, preexec_fn=lambda: os.sched_setaffinity(0, {hub_core}))
    before = sorted(os.sched_getaffinity(0))
    pin(agent_core)
    try:
        op_key = SigningKey(keys.read_private(root / "hub" / "operator.key"))
        with HubClient(address, keys.key_id(bytes(op_key.verify_key)), op_key) as op:
            op.call(ADMIN + "AddSite", pb.AddSiteRequest(name="bench"), timeout=30, wait_for_ready=True)
            owner_public = rig.owner.public_key
            op.call(ADMIN + "SetOwnerKey", pb.SetOwnerKeyRequest(site="bench", public_key=owner_public))
            token = op.call(ADMIN + "AddDevice", pb.AddDeviceRequest(site="bench", name="door")).token
        hub_pinned = process_affinity(hub.pid)
        ident = init_agent(root / "agent", address, token)
        files = AgentFiles(root / "agent")
        owner = rig.owner
        outbox = Outbox(files.outbox, device_id=ident.device_id, owner_key=lambda: owner,
                        policy=OutboxPolicy(min_free_bytes=0))
        t0 = time.perf_counter()
        for i in range(records):
            outbox.append(sample_entry(i))
        append_s = time.perf_counter() - t0
        device = files.device_keys()
        with HubClient(address, ident.device_id, device.sign_key) as client:
            t0 = time.perf_counter()
            up = upload_pending(
                outbox, lambda b: client.call(SYNC + "UploadLogs", b, timeout=60, wait_for_ready=True),
                device_key=device.sign_key, site_id=ident.site_id)
            upload_s = time.perf_counter() - t0
        left = outbox.stats().backlog_records
        outbox.close()
        if up.error or up.records_acked != records or left:
            raise click.ClickException(f"upload incomplete: {up}")
        return {"append_per_s": round(records / append_s, 1),
                "append_records": records,
                "upload_s": round(upload_s, 3),
                "upload_records": records,
                "upload_batch_records": DEFAULT_BATCH_RECORDS,
                "upload_batches": up.batches,
                "upload_hub_pinned_cores": hub_pinned,
                "upload_agent_pinned_cores": process_affinity()}
    finally:
        os.sched_setaffinity(0, before)
        stop_process(hub, grace=30)


def run(records: int, ingest_records: int, kill_iterations: int) -> dict[str, object]:
    hub_core, agent_core = cores()
    result: dict[str, object] = {"transport": TRANSPORT}
    with tempfile.TemporaryDirectory(prefix="dk-bench-logs-") as tmp:
        root = Path(tmp)
        rig = Rig.create(root / "rig")
        result.update(_grpc_append_and_upload(root, rig, records, hub_core, agent_core))

        ingest = run_worker("doorkeeper.tools.bench.logs", "_ingest", {
            "core": hub_core, "records": ingest_records, "batches": list(INGEST_BATCHES),
            "owner_public": rig.owner.public_key.hex(), "dir": str(root)}, label="bench logs",
            core=hub_core)
        by_batch = ingest["by_batch"]
        meeting = [int(b) for b, v in by_batch.items() if v["records_per_s"] >= INGEST_TARGET_PER_S]
        result.update({
            "ingest_per_s_by_batch_records": {b: v["records_per_s"] for b, v in by_batch.items()},
            "ingest_records": ingest_records,
            "ingest_detail": by_batch,
            "ingest_hub_pinned_cores": ingest["pinned"],
            "ingest_threads": 1,
            "ingest_smallest_batch_meeting_target": min(meeting) if meeting else None,
            "ingest_target_per_s": INGEST_TARGET_PER_S,
            "agent_default_upload_batch_records": DEFAULT_BATCH_RECORDS,
        })

        if kill_iterations:
            k = kill_loop(root / "kill", kill_iterations)
            result.update(sigkill_iterations=k.iterations, sigkill_acknowledged=k.acknowledged,
                          sigkill_lost=k.lost, sigkill_duplicated=k.duplicated,
                          sigkill_integrity_ok=k.integrity_ok, sigkill_chain_ok=k.chain_ok,
                          sigkill_note=SIGKILL_NOTE)
    result["sizes"] = {"records": records, "ingest_records": ingest_records,
                       "batches": list(INGEST_BATCHES), "kill_iterations": kill_iterations}
    result.update(stamp())
    return result


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--records", type=click.IntRange(1), default=None,
              help="Records appended and uploaded (default 100000; 2000 with --quick).")
@click.option("--ingest-records", type=click.IntRange(1), default=None,
              help="Records ingested per batch size (default 20000; 2000 with --quick).")
@click.option("--kill-iterations", type=click.IntRange(0), default=None,
              help="SIGKILL iterations (default 200; 5 with --quick).")
@click.option("--quick", is_flag=True, help="Small sizes, for tests.")
def logs(as_json: bool, records: int | None, ingest_records: int | None, kill_iterations: int | None,
         quick: bool) -> None:
    """Entry-log figures: append, upload, ingest by batch size, SIGKILL loop."""
    emit(run(records or (2_000 if quick else 100_000), ingest_records or (2_000 if quick else 20_000),
             kill_iterations if kill_iterations is not None else (5 if quick else 200)),
         as_json, title="doorkeeper bench logs")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        _worker(Path(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "_ingest":
        print(json.dumps(_worker_ingest(json.loads(sys.argv[2]))))
    else:
        logs()
