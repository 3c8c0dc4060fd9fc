"""`doorkeeper bench logs`: outbox append, hub ingest, upload, and kill -9 safety.

Also a subprocess worker (`python -m doorkeeper.tools.bench.logs worker DIR MODE`)
that the kill -9 loop (bench and tests) runs and SIGKILLs: it prints
``A <seq>`` after each append returned and ``U <watermark>`` after each
acknowledged upload, flushing each line, so the parent knows exactly what was
acknowledged before the kill.
"""

from __future__ import annotations

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

import click
from nacl.public import PrivateKey

from doorkeeper.agent.entries.outbox import Outbox, OutboxPolicy
from doorkeeper.agent.entries.uploader import upload_pending
from doorkeeper.hub.logs import LogIngest
from doorkeeper.hub.logstore import SqliteLogStore
from doorkeeper.tools.bench.kit import emit, free_port
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import entrylog
from doorkeeper.wire.entrylog import Entry, OwnerKey
from doorkeeper.wire.keys import KeyPair

SITE = "site-bench"
DEVICE = "dev-bench"
TRANSPORT = ("upload: gRPC over loopback to a `doorkeeper hub serve` process (signed UploadLogs calls); "
             "ingest_per_s: LogIngest in-process, one thread")


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
                       per_batch: int = 1000) -> list[bytes]:
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


def _grpc_append_and_upload(root: Path, rig: Rig, records: int) -> dict[str, object]:
    """A real hub process and a registered device: durable appends, then one upload over gRPC."""
    from nacl.signing import SigningKey

    from doorkeeper.agent.sync.hubclient import ADMIN, SYNC, HubClient
    from doorkeeper.agent.sync.identity import AgentFiles, init_agent
    from doorkeeper.hub.server import init_hub
    from doorkeeper.wire import keys

    init_hub(root / "hub")
    address = f"127.0.0.1:{free_port()}"
    hub = subprocess.Popen(
        [sys.executable, "-m", "doorkeeper", "hub", "serve", "--data", str(root / "hub"),
         "--listen", address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        op_key = SigningKey(keys.read_private(root / "hub" / "operator.key"))
        with HubClient(address, keys.key_id(bytes(op_key.verify_key)), op_key) as op:
            op.call(ADMIN + "AddSite", pb.AddSiteRequest(name="bench"), timeout=30, wait_for_ready=True)
            owner_public = rig.owner.public_key
            op.call(ADMIN + "SetOwnerKey", pb.SetOwnerKeyRequest(site="bench", public_key=owner_public))
            token = op.call(ADMIN + "AddDevice", pb.AddDeviceRequest(site="bench", name="door")).token
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
                "upload_100k_s": round(upload_s * 100_000 / records, 2),
                "upload_records": records, "upload_batches": up.batches}
    finally:
        hub.terminate()
        hub.wait(30)


def run(records: int, kill_iterations: int) -> dict[str, object]:
    result: dict[str, object] = {"records": records, "transport": TRANSPORT}
    with tempfile.TemporaryDirectory(prefix="dk-bench-logs-") as tmp:
        root = Path(tmp)
        rig = Rig.create(root / "rig")
        result.update(_grpc_append_and_upload(root, rig, records))

        dev = KeyPair.generate()
        batches = _presealed_batches(dev, rig.owner, records)
        fresh = LogIngest(SqliteLogStore(root / "ingest.db"))
        t0 = time.perf_counter()
        for raw in batches:
            fresh.ingest(SITE, DEVICE, dev.sign_public, raw)
        result["ingest_per_s"] = round(records / (time.perf_counter() - t0), 1)

        if kill_iterations:
            k = kill_loop(root / "kill", kill_iterations)
            result.update(kill_iterations=k.iterations, kill_acknowledged=k.acknowledged,
                          lost=k.lost, duplicated=k.duplicated,
                          integrity_ok=k.integrity_ok, chain_ok=k.chain_ok)
    return result


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--records", default=100_000, show_default=True)
@click.option("--kill-iterations", default=200, show_default=True)
def logs(as_json: bool, records: int, kill_iterations: int) -> None:
    """Entry-log figures: append_per_s, upload_100k_s, ingest_per_s, lost, duplicated."""
    emit(run(records, kill_iterations), as_json, title="doorkeeper bench logs")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        _worker(Path(sys.argv[2]), sys.argv[3])
    else:
        logs()
