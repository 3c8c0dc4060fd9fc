"""Power-cut trials of the stores: write, cut at a random moment, reboot, compare, repeat.

Each trial returns a `Tally` (tally.py: lost, reissued_versions, duplicated compare CONTENTS).
Used by the power-loss tests (a few cuts) and `doorkeeper bench durability` (many).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorkeeper.tools.powerloss.rig import (
    START_TIMEOUT_S,
    WORKERS,
    AckReader,
    ClientThread,
    HubProcess,
    durable_copy,
    hub_with_device,
    init_hub_with_site,
    integrity_ok,
    mounted,
    read_rows,
    run_writer,
    spawn,
)
from doorkeeper.tools.powerloss.tally import Tally

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
    from doorkeeper.hub.whitelist import unseal_profile

    hub_keys = HubKeys.load(data_dir / "keys")
    rows = read_rows(data_dir / "hub.db", "SELECT updated_version, person_id, name_sealed FROM persons")
    return {str(v): f"{pid}:{unseal_profile(hub_keys, bytes(sealed)).name}" for v, pid, sealed in rows}


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
        from doorkeeper.agent.sync.hubclient import HubClient, log_sender
        from doorkeeper.agent.sync.identity import AgentFiles
        from doorkeeper.wire.entrylog import OwnerKey

        files = AgentFiles(self.agent_dir)
        ident = files.load_identity()
        device = files.device_keys()
        owner = OwnerKey.from_public(self.owner_public)
        outbox = Outbox(files.outbox, device_id=ident.device_id, owner_key=lambda: owner,
                        policy=OutboxPolicy(min_free_bytes=0))

        def send(batch: Any) -> Any:
            ack = log_sender(client, timeout=10)(batch)  # the hub cut away: UploadFailed
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
