"""Agent outbox and uploader: durability, bounds, gaps, key rotation, kill -9, no plaintext."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from doorkeeper.agent.entries.outbox import (
    REASON_NO_OWNER_KEY,
    DropPolicy,
    Outbox,
    OutboxPolicy,
)
from doorkeeper.agent.entries.uploader import upload_pending
from doorkeeper.hub.logs import LogIngest
from doorkeeper.hub.logstore import SqliteLogStore
from doorkeeper.tools.bench.logs import kill_loop, sample_entry
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import entrylog
from doorkeeper.wire.entrylog import OwnerKey
from doorkeeper.wire.keys import KeyPair

DEV = "dev-1"
SITE = "site-1"


class Agent:
    """A device with an outbox, a hub ingest, and an owner key that can be set later."""

    def __init__(self, tmp: Path, policy: OutboxPolicy | None = None, with_key: bool = True,
                 **kw: object) -> None:
        self.tmp = tmp
        self.owner_private = PrivateKey.generate()
        self.owner: OwnerKey | None = (
            OwnerKey.from_public(bytes(self.owner_private.public_key)) if with_key else None)
        self.keys_by_id = {entrylog.owner_key_id(bytes(self.owner_private)):
                           bytes(self.owner_private)}
        self.dev = KeyPair.generate()
        self.policy = policy or OutboxPolicy(min_free_bytes=0)
        self.kw = kw
        self.outbox = self.open()
        self.ingest = LogIngest(SqliteLogStore(tmp / "hub.db"))
        self.hub_up = True

    def open(self) -> Outbox:
        return Outbox(self.tmp / "outbox.db", device_id=DEV, owner_key=lambda: self.owner,
                      policy=self.policy, **self.kw)  # type: ignore[arg-type]

    def send(self, batch: pb.SignedLogBatch) -> pb.LogAck:
        if not self.hub_up:
            raise ConnectionError("hub unreachable")
        return self.ingest.ingest(SITE, DEV, self.dev.sign_public, batch.SerializeToString())

    def upload(self, **kw: object):
        return upload_pending(self.outbox, self.send, device_key=self.dev.sign_key, site_id=SITE,
                              **kw)  # type: ignore[arg-type]

    def rotate(self) -> None:
        new = PrivateKey.generate()
        self.keys_by_id[entrylog.owner_key_id(bytes(new))] = bytes(new)
        self.owner = OwnerKey.from_public(bytes(new.public_key))

    def verify(self, keys: dict[str, bytes] | None = None) -> entrylog.ExportReport:
        frames = [pb.LogExportFrame(device_key=pb.LogDeviceKey(
            device_id=DEV, site_id=SITE, sign_public_key=self.dev.sign_public))]
        frames += [pb.LogExportFrame(batch=b.as_proto()) for b in self.ingest.pull(SITE)]
        return entrylog.verify_export(frames, self.keys_by_id if keys is None else keys)


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(tmp_path)


_CHILD_APPEND = """
import os, sys
from doorkeeper.agent.entries.outbox import Outbox, OutboxPolicy
from doorkeeper.tools.bench.logs import sample_entry
from doorkeeper.wire.entrylog import OwnerKey
path, device, owner_hex, first, count = sys.argv[1:6]
owner = OwnerKey.from_public(bytes.fromhex(owner_hex))
outbox = Outbox(path, device_id=device, owner_key=lambda: owner, policy=OutboxPolicy(min_free_bytes=0))
for i in range(int(first), int(first) + int(count)):
    result = outbox.append(sample_entry(i))
    print(result.seq if result.written else result.reason, flush=True)
os._exit(0)  # no close(), no checkpoint: only what each append committed survives
"""


def _append_in_another_process(agent: Agent, first: int, count: int) -> list[int]:
    import subprocess
    import sys

    assert agent.owner is not None
    done = subprocess.run([sys.executable, "-c", _CHILD_APPEND, str(agent.tmp / "outbox.db"), DEV,
                           agent.owner.public_key.hex(), str(first), str(count)],
                          capture_output=True, text=True, timeout=120, check=True)
    return [int(x) for x in done.stdout.split()]


def test_append_is_durable_and_seq_never_goes_back(agent):
    """What another process acknowledged (then exited without closing) is on disk for this one,
    and after every row was uploaded and deleted, the next process's seq still goes on."""
    agent.outbox.close()
    assert _append_in_another_process(agent, 0, 5) == [1, 2, 3, 4, 5]
    agent.outbox = agent.open()
    assert agent.outbox.stats().backlog_records == 5
    agent.upload()
    assert agent.outbox.stats().backlog_records == 0
    report = agent.verify()
    assert [(e.seq, e.person_id) for e in report.entries] == [
        (i + 1, sample_entry(i).person_id) for i in range(5)]
    agent.outbox.close()
    assert _append_in_another_process(agent, 5, 1) == [6]  # rows deleted: seq still never goes back
    agent.outbox = agent.open()
    assert agent.outbox.stats().acked == 5 and agent.outbox.stats().backlog_records == 1


def test_outbox_belongs_to_one_device(agent):
    with pytest.raises(ValueError, match="belongs to device"):
        Outbox(agent.tmp / "outbox.db", device_id="someone-else", owner_key=lambda: None)


def test_outage_then_everything_arrives_once_and_in_order(agent):
    agent.hub_up = False
    for i in range(120):
        assert agent.outbox.append(sample_entry(i)).written
        if i % 40 == 0:
            result = agent.upload(batch_records=25)
            assert result.error and result.records_acked == 0
    assert agent.outbox.stats().backlog_records == 120
    agent.hub_up = True
    result = agent.upload(batch_records=25)
    assert (result.records_acked, result.backlog, result.error) == (120, 0, "")
    report = agent.verify()
    assert report.ok and [e.seq for e in report.entries] == list(range(1, 121))


def test_interrupted_upload_resumes_and_lost_ack_is_not_duplicated(agent):
    for i in range(50):
        agent.outbox.append(sample_entry(i))
    real_send = agent.send
    calls = []

    def lose_ack(batch):  # hub stores it, the ack never arrives
        calls.append(real_send(batch))
        raise TimeoutError("deadline exceeded")

    result = upload_pending(agent.outbox, lose_ack, device_key=agent.dev.sign_key, site_id=SITE,
                            batch_records=20)
    assert result.error and agent.outbox.stats().backlog_records == 50
    assert agent.upload(batch_records=20, max_batches=1).duplicates == 20
    agent.upload(batch_records=20)
    report = agent.verify()
    assert [e.seq for e in report.entries] == list(range(1, 51))
    assert agent.ingest.device_status(DEV).duplicates == 20


def test_ack_never_deletes_beyond_the_sent_batch(agent):
    for i in range(10):
        agent.outbox.append(sample_entry(i))
    lying = upload_pending(agent.outbox, lambda b: pb.LogAck(watermark=10**9),
                           device_key=agent.dev.sign_key, site_id=SITE, batch_records=4,
                           max_batches=1)
    assert lying.records_acked == 4 and agent.outbox.stats().backlog_records == 6


def test_refused_batch_deletes_nothing(agent):
    for i in range(10):
        agent.outbox.append(sample_entry(i))
    wrong = KeyPair.generate()
    result = upload_pending(agent.outbox, agent.send, device_key=wrong.sign_key, site_id=SITE)
    assert "signature" in result.error and agent.outbox.stats().backlog_records == 10


def test_no_owner_key_writes_no_plaintext_and_counts_a_gap(tmp_path):
    agent = Agent(tmp_path, with_key=False)
    for i in range(3):
        result = agent.outbox.append(sample_entry(i))
        assert (result.written, result.reason) == (False, REASON_NO_OWNER_KEY)
    assert agent.outbox.stats().unwritten_total == 3
    agent.rotate()  # the first synced bundle brings the owner key
    assert agent.outbox.append(sample_entry(3)).seq == 2  # seq 1 is the gap marker
    agent.upload()
    report = agent.verify()
    assert report.ok
    assert [(g.from_seq, g.unwritten, g.reason) for g in report.gaps] == [
        (1, 3, REASON_NO_OWNER_KEY)]
    assert agent.ingest.device_status(DEV).unwritten == 3


def test_owner_key_rotation_old_records_stay_readable_with_old_key(agent):
    old_keys = dict(agent.keys_by_id)
    for i in range(3):
        agent.outbox.append(sample_entry(i))
    agent.rotate()
    for i in range(3, 6):
        agent.outbox.append(sample_entry(i))
    agent.upload()
    report = agent.verify()
    assert report.ok and [e.seq for e in report.entries] == [1, 2, 3, 4, 5, 6]
    only_old = agent.verify(old_keys)
    assert not only_old.ok and [e.seq for e in only_old.entries] == [1, 2, 3]


def test_record_cap_drops_oldest_counts_and_marks_the_gap(tmp_path):
    agent = Agent(tmp_path, OutboxPolicy(max_records=40, drop_chunk=10, min_free_bytes=0))
    for i in range(200):
        assert agent.outbox.append(sample_entry(i)).written
    stats = agent.outbox.stats()
    assert stats.backlog_records <= 40 and stats.dropped_total > 0
    agent.upload()
    report = agent.verify()
    assert report.ok
    assert sum(g.dropped for g in report.gaps) == stats.dropped_total
    assert len(report.entries) + stats.dropped_total == 200
    assert report.entries[-1].seq == 200


def test_drop_newest_policy_keeps_queue_and_counts_new_decisions(tmp_path):
    agent = Agent(tmp_path, OutboxPolicy(max_records=10, policy=DropPolicy.DROP_NEWEST,
                                         min_free_bytes=0))
    results = [agent.outbox.append(sample_entry(i)) for i in range(15)]
    assert [r.written for r in results] == [True] * 10 + [False] * 5
    agent.upload()
    agent.outbox.append(sample_entry(15))
    agent.upload()
    report = agent.verify()
    assert report.ok and [(g.from_seq, g.unwritten) for g in report.gaps] == [(11, 5)]


def test_disk_floor_drops_oldest_instead_of_growing(tmp_path):
    free = [10**12]
    agent = Agent(tmp_path, OutboxPolicy(min_free_bytes=10**9, drop_chunk=8),
                  disk_free=lambda: free[0])
    for i in range(100):
        agent.outbox.append(sample_entry(i))
    free[0] = 10  # the disk is nearly full now

    def pages() -> int:
        conn = sqlite3.connect(agent.tmp / "outbox.db")
        try:
            return int(conn.execute("PRAGMA page_count").fetchone()[0])
        finally:
            conn.close()

    before = pages()
    for i in range(100, 400):
        assert agent.outbox.append(sample_entry(i)).written
    stats = agent.outbox.stats()
    assert stats.dropped_total >= 250 and stats.backlog_records < 100
    assert pages() <= before + 2  # freed pages are reused: the file stops growing
    agent.upload()
    assert agent.verify().ok


def test_age_cap_drops_old_records(tmp_path):
    now = [1_800_000_000.0]
    agent = Agent(tmp_path, OutboxPolicy(max_age_days=7, min_free_bytes=0),
                  wall_clock=lambda: now[0])
    for i in range(20):
        agent.outbox.append(sample_entry(i))
    now[0] += 8 * 86400
    agent.outbox.append(sample_entry(20))
    assert agent.outbox.stats().dropped_total == 20
    agent.upload()
    report = agent.verify()
    assert report.ok and [(g.from_seq, g.to_seq, g.reason) for g in report.gaps] == [
        (1, 20, "age cap")]


@pytest.mark.parametrize("policy", [DropPolicy.DROP_OLDEST, DropPolicy.DROP_NEWEST])
def test_sqlite_full_never_raises_and_counts_drops(tmp_path, policy):
    agent = Agent(tmp_path, OutboxPolicy(policy=policy, min_free_bytes=0, drop_chunk=16))
    for i in range(20):
        agent.outbox.append(sample_entry(i))
    # A size-limited database: SQLITE_FULL from here on (set on the writer connection).
    (pages,) = agent.outbox._w.execute("PRAGMA page_count").fetchone()
    agent.outbox._w.execute(f"PRAGMA max_page_count = {pages}")
    results = [agent.outbox.append(sample_entry(i)) for i in range(20, 400)]  # never raises
    stats = agent.outbox.stats()
    assert stats.dropped_total + stats.unwritten_total > 0
    assert stats.dropped_total + stats.unwritten_total + sum(r.written for r in results) >= 380
    agent.outbox._w.execute("PRAGMA max_page_count = 1000000")  # space returns
    assert agent.outbox.append(sample_entry(400)).written
    agent.upload()
    report = agent.verify()
    assert report.ok and report.gaps
    counted = sum(g.dropped + g.unwritten for g in report.gaps)
    assert counted == stats.dropped_total + stats.unwritten_total
    assert len(report.entries) + counted == 401


def test_outbox_files_hold_no_plaintext(agent):
    for i in range(50):
        agent.outbox.append(sample_entry(i))
    agent.upload(max_batches=1, batch_records=10)
    blob = b"".join(p.read_bytes() for p in agent.tmp.glob("outbox.db*"))
    assert len(blob) > 10_000
    for needle in (b"person-0000", b"granted", b"denied", b"not on whitelist", b"front-door",
                   pb.LogEntry(similarity=0.61).SerializeToString()[1:]):
        assert needle not in blob, needle


def test_kill_9_during_append_loses_and_duplicates_nothing(tmp_path):
    outcome = kill_loop(tmp_path / "rig", 20, seed=1, modes=("append",))
    assert outcome.acknowledged > 0
    assert (outcome.lost, outcome.duplicated, outcome.integrity_ok, outcome.chain_ok) == (
        0, 0, True, True)


def test_kill_9_during_upload_loses_and_duplicates_nothing(tmp_path):
    outcome = kill_loop(tmp_path / "rig", 20, seed=2, modes=("upload", "both"))
    assert outcome.acknowledged > 0
    assert (outcome.lost, outcome.duplicated, outcome.integrity_ok, outcome.chain_ok) == (
        0, 0, True, True)
    conn = sqlite3.connect(tmp_path / "rig" / "hub.db")
    (stored,) = conn.execute("SELECT COUNT(*) FROM log_batches").fetchone()
    conn.close()
    assert stored > 0
