"""Power-cut trials: write, cut at a random moment, reboot, compare contents, repeat.

Each trial keeps every (key, content) pair a writer acknowledged, over all its cuts, and after
every reboot reads the store back through the rebooted mount:

- lost: acknowledged pairs whose key is missing or now holds other contents (a record rewritten
  with the same sequence number after a cut counts as lost: what the client was told is gone);
- reissued_versions: keys acknowledged twice with different contents (a version number or seq
  handed out again after a cut);
- duplicated: contents stored under more than one key;
- integrity_failures: reboots after which `PRAGMA integrity_check` was not ok.

Used by the power-loss tests (a few cuts) and `doorkeeper bench durability` (many).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doorkeeper.tools.powerloss.mount import LazyMount, PowerLossError

WORKERS = "doorkeeper.tools.powerloss.workers"
START_TIMEOUT_S = 60.0


@dataclass
class Tally:
    """What one trial saw over all its cuts."""

    store: str
    records: int  # each cut comes after a random number, 1 to this, of acknowledged writes
    torn: bool = False  # cuts may also persist a random part of the unsynced pages
    cuts: int = 0
    torn_cuts: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    reissued_versions: int = 0
    integrity_failures: int = 0
    examples: list[str] = field(default_factory=list)
    _acked: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _lost: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _duplicated: set[str] = field(default_factory=set, repr=False)

    def cut(self, mount: LazyMount, rng: random.Random,
            *procs: subprocess.Popen[str]) -> None:
        """One power cut, counted. In a torn trial every other cut (at random) also persists a
        random fraction of the unsynced pages; the others drop all of them."""
        torn = self.torn and rng.random() < 0.5
        mount.cut(*procs, torn=(rng.random(), rng.randrange(2**31)) if torn else None)
        self.cuts += 1
        self.torn_cuts += torn

    def acknowledge(self, pairs: list[tuple[str, str]]) -> None:
        self._acked.update(pairs)
        self.acknowledged = len(self._acked)
        contents: dict[str, set[str]] = {}
        for key, content in self._acked:
            contents.setdefault(key, set()).add(content)
        self.reissued_versions = sum(1 for c in contents.values() if len(c) > 1)

    def check(self, stored: dict[str, str], integrity_ok: bool) -> None:
        """Compare every pair acknowledged so far with what the rebooted store holds."""
        for key, content in sorted(self._acked - self._lost):
            if stored.get(key) != content:
                self._lost.add((key, content))
                if len(self.examples) < 5:
                    self.examples.append(f"cut {self.cuts}: {key} acknowledged as {content!r}, "
                                         f"found {stored.get(key)!r}")
        self.lost = len(self._lost)
        counts = Counter(stored.values())
        self._duplicated.update(c for c, n in counts.items() if n > 1)
        self.duplicated = len(self._duplicated)
        if not integrity_ok:
            self.integrity_failures += 1

    def figures(self) -> dict[str, Any]:
        return {"cuts": self.cuts, "torn_cuts": self.torn_cuts, "records": self.records,
                "acknowledged": self.acknowledged,
                "lost": self.lost, "duplicated": self.duplicated,
                "reissued_versions": self.reissued_versions, "integrity_failures": self.integrity_failures,
                "examples": self.examples}


# ------------------------------------------------------------------ shared plumbing


class AckReader:
    """Collects ``A key content`` lines from a writer's stdout in a background thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.pairs: list[tuple[str, str]] = []
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.rstrip("\n").split(maxsplit=2)
            if parts and parts[0] == "R":
                self.ready.set()
            elif len(parts) == 3 and parts[0] == "A":
                self.pairs.append((parts[1], parts[2]))
        self.ready.set()

    def wait(self, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.pairs) < count and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)

    def finish(self) -> list[tuple[str, str]]:
        self._thread.join(30)
        return list(self.pairs)


def spawn(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    """A process in its own group (so a cut kills it and its children), stderr to /dev/null."""
    return subprocess.Popen([sys.executable, *args], stdout=stdout, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)


def run_writer(mount: LazyMount, tally: Tally, rng: random.Random, *args: str) -> None:
    """Start a writer on the mount, cut after a random number of acknowledged writes."""
    proc = spawn("-m", WORKERS, *args)
    reader = AckReader(proc)
    reader.ready.wait(START_TIMEOUT_S)
    reader.wait(rng.randint(1, tally.records))
    tally.cut(mount, rng, proc)
    tally.acknowledge(reader.finish())
    mount.start()


def integrity_ok(db: Path) -> bool:
    if not db.exists():
        return True  # nothing acknowledged can be in a file that never became durable; lost counts it
    conn = sqlite3.connect(db)
    try:
        return bool(conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()


def read_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql`, or none when the file or its table never became durable."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_copy(src: Path, dst: Path) -> None:
    """Copy a directory tree onto the mount and fsync every file and directory in it."""
    shutil.copytree(src, dst)
    for directory, _, files in os.walk(dst):
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory))
    fsync_path(dst.parent)


@contextlib.contextmanager
def mounted(root: Path) -> Iterator[LazyMount]:
    mount = LazyMount(root / "disk", root / "mnt").start()
    try:
        yield mount
    finally:
        mount.stop()


# ------------------------------------------------------------------ plain SQLite (validation)


def sqlite_trial(root: Path, cuts: int, records: int, *, synchronous: str, journal_mode: str = "WAL",
                 seed: int = 0, torn: bool = False) -> Tally:
    """SQLite inserts under a given `synchronous`: the harness must lose some with OFF, none with FULL."""
    rng = random.Random(seed)
    tally = Tally(f"sqlite synchronous={synchronous} journal_mode={journal_mode}", records, torn)
    with mounted(root) as mount:
        db = mount.path / "records.db"
        for _ in range(cuts):
            run_writer(mount, tally, rng, "sqlite", str(db), synchronous, journal_mode)
            stored = {str(i): body for i, body in read_rows(db, "SELECT id, body FROM records")}
            tally.check(stored, integrity_ok(db))
    return tally


# ------------------------------------------------------------------ the agent's outbox


@dataclass(frozen=True)
class OutboxRig:
    """An outbox directory with the owner key needed to read its sealed records back."""

    root: Path
    device_id: str = "door-powercut"

    @classmethod
    def create(cls, root: Path) -> OutboxRig:
        from nacl.public import PrivateKey

        root.mkdir(parents=True)
        (root / "owner.key").write_bytes(bytes(PrivateKey.generate()))
        return cls(root)

    def owner_private(self) -> bytes:
        return (self.root / "owner.key").read_bytes()

    def open(self) -> Any:
        from nacl.public import PrivateKey

        from doorkeeper.agent.entries.outbox import Outbox, OutboxPolicy
        from doorkeeper.wire.entrylog import OwnerKey

        owner = OwnerKey.from_public(bytes(PrivateKey(self.owner_private()).public_key))
        return Outbox(self.root / "outbox.db", device_id=self.device_id, owner_key=lambda: owner,
                      policy=OutboxPolicy(min_free_bytes=0))

    @staticmethod
    def entry(person_id: str) -> Any:
        from doorkeeper.wire.entrylog import Entry

        return Entry(door="front", decision="granted", credential="face", person_id=person_id,
                     similarity=0.7, liveness=0.9, whitelist_version=1)

    def stored(self) -> dict[str, str]:
        """seq -> person id of every record in the outbox, decrypted with the owner key."""
        from doorkeeper.wire import entrylog

        private = self.owner_private()
        keys = {entrylog.owner_key_id(private): private}
        out: dict[str, str] = {}
        for seq, record in read_rows(self.root / "outbox.db", "SELECT seq, record FROM outbox"):
            with contextlib.suppress(entrylog.BadLogBatch):  # gap markers are not entries
                rec = entrylog.parse_record(bytes(record))
                out[str(seq)] = entrylog.decrypt_record(rec, self.device_id, keys).person_id
        return out


def outbox_trial(root: Path, cuts: int, records: int, *, seed: int = 0, torn: bool = False) -> Tally:
    rng = random.Random(seed)
    tally = Tally("agent outbox", records, torn)
    with mounted(root) as mount:
        seed_dir = root / "seed"
        OutboxRig.create(seed_dir)
        durable_copy(seed_dir, mount.path / "agent")
        rig = OutboxRig(mount.path / "agent")
        for _ in range(cuts):
            run_writer(mount, tally, rng, "outbox", str(rig.root))
            tally.check(rig.stored(), integrity_ok(rig.root / "outbox.db"))
    return tally


# ------------------------------------------------------------------ the hub store


class HubProcess:
    """`doorkeeper hub serve` on a loopback port; the operator key is read once, off the mount."""

    def __init__(self, data_dir: Path, operator_key: bytes) -> None:
        from nacl.signing import SigningKey

        from doorkeeper.tools.bench.kit import free_port

        self.data_dir = data_dir
        self.address = f"127.0.0.1:{free_port()}"
        self.operator = SigningKey(operator_key)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        from doorkeeper.agent.sync.hubclient import ADMIN
        from doorkeeper.v1 import doorkeeper_pb2 as pb

        self.proc = spawn("-m", "doorkeeper", "hub", "serve", "--data", str(self.data_dir),
                          "--listen", self.address, "--metrics-listen", "off", stdout=subprocess.DEVNULL)
        with self.client() as client:
            client.call(ADMIN + "ListSites", pb.ListSitesRequest(), timeout=START_TIMEOUT_S,
                        wait_for_ready=True)
        return self.proc

    def client(self) -> Any:
        from doorkeeper.agent.sync.hubclient import HubClient
        from doorkeeper.wire import keys

        return HubClient(self.address, keys.key_id(bytes(self.operator.verify_key)), self.operator)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class ClientThread:
    """A client of the hub in a background thread, keeping the (key, content) pairs it was answered."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []
        self.error: Exception | None = None  # why it stopped, when the hub refused rather than vanished
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def wait(self, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.pairs) < count and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)

    def finish(self) -> list[tuple[str, str]]:
        self.stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise PowerLossError(f"the hub refused a request: {self.error}")
        return list(self.pairs)


class Publisher(ClientThread):
    """Adds one person per call; keeps (version, "person_id:name") for each answer."""

    def __init__(self, hub: HubProcess, site: str, tag: str) -> None:
        super().__init__()
        self.hub, self.site, self.tag = hub, site, tag
        self.start()

    def _run(self) -> None:
        import grpc

        from doorkeeper.agent.sync.hubclient import ADMIN
        from doorkeeper.v1 import doorkeeper_pb2 as pb

        gone = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
        with self.hub.client() as client:
            i = 0
            while not self.stop.is_set():
                name = f"{self.tag}-{i}"
                try:
                    request = pb.AddPersonRequest(site=self.site, name=name,
                                                  cards=["card" + name.replace("-", "x")])
                    answer = client.call(ADMIN + "AddPerson", request, timeout=10)
                except grpc.RpcError as exc:  # the hub is gone: this change was never acknowledged
                    if exc.code() not in gone:
                        self.error = exc
                    return
                self.pairs.append((str(answer.version), f"{answer.person_id}:{name}"))
                i += 1


def hub_persons(data_dir: Path) -> dict[str, str]:
    """version -> "person_id:name" for every person in the hub database (names unsealed)."""
    from doorkeeper.hub.hubkeys import HubKeys

    hub_keys = HubKeys.load(data_dir / "keys")
    rows = read_rows(data_dir / "hub.db", "SELECT updated_version, person_id, name_sealed FROM persons")
    return {str(v): f"{pid}:{hub_keys.unseal(bytes(sealed)).decode()}" for v, pid, sealed in rows}


def init_hub_with_site(where: Path, site: str) -> bytes:
    """A hub data directory with one site; returns the operator key."""
    from doorkeeper.hub.server import Hub, init_hub

    operator_key = init_hub(where).read_bytes()
    hub = Hub.open(where)
    try:
        hub.whitelist.add_site(site)
    finally:
        hub.close()
    return operator_key


def hub_with_device(where: Path) -> tuple[HubProcess, str]:
    """A running hub (off the power-loss disk) with site "powercut" and a registration token."""
    from doorkeeper.agent.sync.hubclient import ADMIN
    from doorkeeper.v1 import doorkeeper_pb2 as pb

    hub = HubProcess(where, init_hub_with_site(where, "powercut"))
    hub.start()
    try:
        with hub.client() as op:
            token = op.call(ADMIN + "AddDevice", pb.AddDeviceRequest(site="powercut", name="door")).token
    except BaseException:
        hub.stop()
        raise
    return hub, token


def hub_trial(root: Path, cuts: int, records: int, *, seed: int = 0, torn: bool = False) -> Tally:
    """AddPerson through a real hub process on the power-loss disk; cut while it publishes."""
    rng = random.Random(seed)
    tally = Tally("hub store", records, torn)
    site = "powercut"
    operator_key = init_hub_with_site(root / "seed", site)
    with mounted(root) as mount:
        durable_copy(root / "seed", mount.path / "hub")
        hub = HubProcess(mount.path / "hub", operator_key)
        try:
            for cut in range(cuts):
                proc = hub.start()
                publisher = Publisher(hub, site, f"c{cut}")
                publisher.wait(rng.randint(1, records))
                tally.cut(mount, rng, proc)
                tally.acknowledge(publisher.finish())
                mount.start()
                tally.check(hub_persons(hub.data_dir), integrity_ok(hub.data_dir / "hub.db"))
        finally:
            hub.stop()
    return tally


# ------------------------------------------------------------------ the agent's whitelist


def whitelist_trial(root: Path, cuts: int, records: int, *, seed: int = 0, torn: bool = False) -> Tally:
    """The agent syncs from a hub (off the disk) while persons are added; cut while it applies.

    Acknowledged: each version the agent applied and would report. After the cut its whitelist
    must hold at least that version, and every person published up to that version.
    """
    from doorkeeper.agent.sync.identity import AgentFiles, init_agent
    from doorkeeper.agent.sync.whitelist import LocalWhitelist

    rng = random.Random(seed)
    tally = Tally("agent whitelist", records, torn)
    site = "powercut"
    hub, token = hub_with_device(root / "hub")
    try:
        init_agent(root / "agent-seed", hub.address, token)
        published: dict[int, str] = {}  # version -> person id, from the hub's answers
        with mounted(root) as mount:
            durable_copy(root / "agent-seed", mount.path / "agent")
            files = AgentFiles(mount.path / "agent")
            for cut in range(cuts):
                publisher = Publisher(hub, site, f"c{cut}")
                proc = spawn("-m", WORKERS, "whitelist", str(files.root))
                reader = AckReader(proc)
                reader.ready.wait(START_TIMEOUT_S)
                reader.wait(rng.randint(1, records))
                tally.cut(mount, rng, proc)
                for version, person in publisher.finish():
                    published[int(version)] = person.split(":")[0]
                applied = reader.finish()
                # Each applied version stands for every person published up to it.
                tally.acknowledge([(pid, str(v)) for v, pid in published.items()
                                   if applied and v <= max(int(a) for a, _ in applied)])
                mount.start()
                whitelist = LocalWhitelist(files.whitelist, files.storage_key())
                try:
                    by_person = {p: v for v, p in published.items()}
                    stored = {r.person_id: str(by_person[r.person_id])
                              for r in whitelist.records() if r.person_id in by_person}
                    consistent = whitelist.compute_digest() == whitelist.state_digest
                finally:
                    whitelist.close()
                tally.check(stored, consistent and integrity_ok(files.whitelist))
    finally:
        hub.stop()
    return tally


# ------------------------------------------------------------------ the hub's entry-log store


class LogUploader(ClientThread):
    """A door's outbox off the disk, appending and uploading to the hub.

    Acknowledged: every record at or below a watermark the hub answered (`LogAck`).
    """

    def __init__(self, hub: HubProcess, agent_dir: Path, owner_public: bytes, tag: str) -> None:
        super().__init__()
        self.hub, self.agent_dir, self.owner_public, self.tag = hub, agent_dir, owner_public, tag
        self.written: dict[int, str] = {}
        self.start()

    def _run(self) -> None:
        from doorkeeper.agent.entries.outbox import Outbox, OutboxPolicy
        from doorkeeper.agent.entries.uploader import upload_pending
        from doorkeeper.agent.sync.hubclient import SYNC, HubClient
        from doorkeeper.agent.sync.identity import AgentFiles
        from doorkeeper.wire.entrylog import OwnerKey

        files = AgentFiles(self.agent_dir)
        ident = files.load_identity()
        device = files.device_keys()
        owner = OwnerKey.from_public(self.owner_public)
        outbox = Outbox(files.outbox, device_id=ident.device_id, owner_key=lambda: owner,
                        policy=OutboxPolicy(min_free_bytes=0))

        def send(batch: Any) -> Any:
            ack = client.call(SYNC + "UploadLogs", batch, timeout=10)
            self.pairs.extend((str(seq), pid) for seq, pid in self.written.items() if seq <= ack.watermark)
            return ack

        try:
            with HubClient(self.hub.address, ident.device_id, device.sign_key) as client:
                i = 0
                while not self.stop.is_set():
                    for _ in range(5):
                        person = f"{self.tag}-{i}"
                        result = outbox.append(OutboxRig.entry(person))
                        if result.written:
                            self.written[result.seq] = person
                        i += 1
                    if upload_pending(outbox, send, device_key=device.sign_key, site_id=ident.site_id,
                                      batch_records=5).error:
                        return  # the hub is gone: the rest was never acknowledged
        finally:
            outbox.close()


def hub_log_entries(data_dir: Path, site_id: str, device_id: str, device_public: bytes,
                    owner_private: bytes) -> dict[str, str]:
    """seq -> person id of every entry the hub's log store holds, verified and decrypted."""
    from doorkeeper.hub.logs import LogIngest
    from doorkeeper.hub.logstore import SqliteLogStore
    from doorkeeper.v1 import doorkeeper_pb2 as pb
    from doorkeeper.wire import entrylog

    store = SqliteLogStore(data_dir / "logs.db")
    try:
        frames = [pb.LogExportFrame(device_key=pb.LogDeviceKey(
            device_id=device_id, site_id=site_id, sign_public_key=device_public))]
        frames += [pb.LogExportFrame(batch=b.as_proto()) for b in LogIngest(store).pull(site_id)]
    finally:
        store.close()
    report = entrylog.verify_export(frames, {entrylog.owner_key_id(owner_private): owner_private})
    return {str(e.seq): e.person_id for e in report.entries}


def hub_logs_trial(root: Path, cuts: int, records: int, *, seed: int = 0, torn: bool = False) -> Tally:
    """A door uploads entry logs to a hub process on the disk; cut while batches are acknowledged."""
    from nacl.public import PrivateKey

    from doorkeeper.agent.sync.hubclient import ADMIN
    from doorkeeper.agent.sync.identity import AgentFiles, init_agent
    from doorkeeper.v1 import doorkeeper_pb2 as pb

    rng = random.Random(seed)
    tally = Tally("hub entry-log store", records, torn)
    # Every cut stops an upload mid-call, which the uploader rightly warns about: expected here.
    logging.getLogger("doorkeeper.agent.entries.uploader").setLevel(logging.ERROR)
    owner = PrivateKey.generate()
    operator_key = init_hub_with_site(root / "seed", "powercut")
    with mounted(root) as mount:
        durable_copy(root / "seed", mount.path / "hub")
        hub = HubProcess(mount.path / "hub", operator_key)
        try:
            hub.start()
            with hub.client() as op:
                op.call(ADMIN + "SetOwnerKey", pb.SetOwnerKeyRequest(
                    site="powercut", public_key=bytes(owner.public_key)))
                token = op.call(ADMIN + "AddDevice", pb.AddDeviceRequest(site="powercut", name="door")).token
            ident = init_agent(root / "agent", hub.address, token)
            device_public = AgentFiles(root / "agent").device_keys().sign_public
            for cut in range(cuts):
                if cut:
                    hub.start()
                uploader = LogUploader(hub, root / "agent", bytes(owner.public_key), f"c{cut}")
                uploader.wait(rng.randint(1, records))
                assert hub.proc is not None
                tally.cut(mount, rng, hub.proc)
                tally.acknowledge(uploader.finish())
                mount.start()
                stored = hub_log_entries(hub.data_dir, ident.site_id, ident.device_id, device_public,
                                         bytes(owner))
                tally.check(stored, integrity_ok(hub.data_dir / "logs.db"))
        finally:
            hub.stop()
    return tally


TRIALS: dict[str, Callable[..., Tally]] = {
    "hub": hub_trial,
    "hub_logs": hub_logs_trial,
    "agent_whitelist": whitelist_trial,
    "outbox": outbox_trial,
}


# ------------------------------------------------------------------ key files


def hub_init_trial(root: Path, *, existing_dir: bool) -> None:
    """`doorkeeper hub init` on the disk, a cut right after it returned, then `hub serve` must start.

    `existing_dir`: the data directory already exists durably (as a package would make it);
    otherwise `hub init` creates it. Raises PowerLossError saying what was missing.
    """
    with mounted(root) as mount:
        data = mount.path / "hub"
        if existing_dir:
            data.mkdir()
            fsync_path(mount.path)
        subprocess.run([sys.executable, "-m", "doorkeeper", "hub", "init", "--data", str(data)],
                       check=True, capture_output=True)
        mount.cut()
        mount.start()
        if not (data / "operator.key").exists():
            raise PowerLossError(f"after the cut the hub directory holds {_listing(mount.path)}")
        hub = HubProcess(data, (data / "operator.key").read_bytes())
        try:
            hub.start()
        except Exception as exc:
            raise PowerLossError(f"the hub did not start after the cut ({exc}); "
                                 f"the disk holds {_listing(mount.path)}") from None
        finally:
            hub.stop()


def agent_init_trial(root: Path) -> None:
    """`init_agent` onto the disk, a cut right after it returned: identity and keys must load."""
    from doorkeeper.agent.sync.identity import AgentFiles, init_agent

    hub, token = hub_with_device(root / "hub")
    try:
        with mounted(root) as mount:
            init_agent(mount.path / "agent", hub.address, token)
            mount.cut()
            mount.start()
            files = AgentFiles(mount.path / "agent")
            try:
                files.trust()
                files.storage_key()
            except Exception as exc:
                raise PowerLossError(f"the agent's identity did not survive the cut ({exc}); "
                                     f"the disk holds {_listing(mount.path)}") from None
    finally:
        hub.stop()


def _listing(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


def bootstrap_hub_init_trial(root: Path, script: Path) -> None:
    """`deploy/compose-bootstrap.sh hub-init` on the disk, a cut right after it returned: the TLS
    certificate and key and the published CA copy must be whole, and the hub must start."""
    bindir = str(Path(sys.executable).parent)
    with mounted(root) as mount:
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
                   DK_DATA=str(mount.path / "hub"), DK_BOOTSTRAP=str(mount.path / "bootstrap"))
        subprocess.run(["sh", str(script), "hub-init"], env=env, check=True, capture_output=True)  # noqa: S607
        mount.cut()
        mount.start()
        tls, published = mount.path / "hub" / "tls", mount.path / "bootstrap" / "hub-ca.pem"
        for path in (tls / "hub.crt", tls / "hub.key", published):
            if not path.exists() or b"-----END " not in path.read_bytes():
                raise PowerLossError(f"{path.relative_to(mount.path)} is missing or torn after the cut; "
                                     f"the disk holds {_listing(mount.path)}")
        if published.read_bytes() != (tls / "hub.crt").read_bytes():
            raise PowerLossError("the published CA certificate is not the hub's certificate")
        hub = HubProcess(mount.path / "hub", (mount.path / "hub" / "operator.key").read_bytes())
        try:
            hub.start()
        finally:
            hub.stop()


def rotate_key_trial(root: Path) -> None:
    """`doorkeeper hub rotate-key` on the disk, a cut right after it answered the new key id:
    the hub must come back with that key, its rotation statement and the retired public key."""
    from doorkeeper.hub.hubkeys import ROTATIONS_FILE, HubKeys

    with mounted(root) as mount:
        data = mount.path / "hub"
        durable_copy(_seed_hub(root / "seed"), data)
        done = subprocess.run([sys.executable, "-m", "doorkeeper", "hub", "rotate-key", "--data", str(data)],
                              check=True, capture_output=True, text=True)
        new_id = done.stdout.strip().splitlines()[-1]
        mount.cut()
        mount.start()
        try:
            keys = HubKeys.load(data / "keys")
        except Exception as exc:
            raise PowerLossError(f"the hub keys do not load after the cut ({exc}); "
                                 f"the disk holds {_listing(mount.path)}") from None
        if keys.key_id != new_id or len(keys.rotations) != 1:
            raise PowerLossError(f"after the cut the hub signs with {keys.key_id} (rotated to {new_id}) "
                                 f"and holds {len(keys.rotations)} rotation statements; "
                                 f"{ROTATIONS_FILE} and the pending key did not survive")
        if not list((data / "keys" / "retired").glob("*.sign.pub")):
            raise PowerLossError("the retired public key did not survive the cut")


def _seed_hub(where: Path) -> Path:
    from doorkeeper.hub.server import init_hub

    init_hub(where)
    return where
