"""Owner tools: owner key generation, export files, `logs decrypt` and `logs verify`."""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from doorkeeper.agent.entries.outbox import Outbox, OutboxPolicy
from doorkeeper.agent.entries.uploader import upload_pending
from doorkeeper.hub.logs import LogIngest
from doorkeeper.hub.logstore import SqliteLogStore
from doorkeeper.tools.bench.logs import sample_entry
from doorkeeper.tools.cli import cli
from doorkeeper.tools.cli.logs import export_logs, generate_owner_key, load_owner_keys
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import entrylog
from doorkeeper.wire.keys import KeyFileError, KeyPair

DEV = "dev-1"
SITE = "site-1"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["logs", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def site(tmp_path: Path) -> dict[str, object]:
    """Owner key rotated once, 12 entries with a no-key gap at the start, exported."""
    old_key = generate_owner_key(tmp_path / "owner-old.key")
    new_key = generate_owner_key(tmp_path / "owner-new.key")
    current: list[entrylog.OwnerKey | None] = [None]
    dev = KeyPair.generate()
    outbox = Outbox(tmp_path / "outbox.db", device_id=DEV, owner_key=lambda: current[0],
                    policy=OutboxPolicy(min_free_bytes=0))
    ingest = LogIngest(SqliteLogStore(tmp_path / "hub.db"))
    outbox.append(sample_entry(0))  # before the first sync: counted, not written
    current[0] = old_key
    for i in range(1, 7):
        outbox.append(sample_entry(i))
    current[0] = new_key
    for i in range(7, 13):
        outbox.append(sample_entry(i))
    upload_pending(outbox, lambda b: ingest.ingest(SITE, DEV, dev.sign_public,
                                                   b.SerializeToString()),
                   device_key=dev.sign_key, site_id=SITE, batch_records=4)
    device_keys = [pb.LogDeviceKey(device_id=DEV, site_id=SITE, sign_public_key=dev.sign_public)]
    batches = [b.as_proto() for b in ingest.pull(SITE)]
    export_logs(tmp_path / "site.dklogs", device_keys, batches)
    return {"dir": tmp_path, "file": str(tmp_path / "site.dklogs"), "batches": batches,
            "device_keys": device_keys, "old": str(tmp_path / "owner-old.key"),
            "new": str(tmp_path / "owner-new.key")}


def test_generate_owner_key_writes_private_half_0600_and_refuses_overwrite(tmp_path):
    key = generate_owner_key(tmp_path / "owner.key")
    assert stat.S_IMODE((tmp_path / "owner.key").stat().st_mode) == 0o600
    assert (tmp_path / "owner.key.pub").read_bytes() == key.public_key
    assert list(load_owner_keys([tmp_path / "owner.key"])) == [key.key_id]
    with pytest.raises(KeyFileError):
        generate_owner_key(tmp_path / "owner.key")


def test_verify_ok_lists_every_gap(site):
    code, out, err = run("verify", "--owner-key", site["old"], "--owner-key", site["new"],
                         site["file"])
    assert code == 0, err
    assert "OK device dev-1" in out and "13 entries" not in out and "12 entries" in out
    assert "GAP dev-1 seq 1..1: 0 dropped, 1 unwritten (unsealable, no owner key)" in err


def test_decrypt_json_and_csv_with_both_rotation_keys(site):
    code, out, _ = run("decrypt", "--owner-key", site["old"], "--owner-key", site["new"],
                       "--json", site["file"])
    assert code == 0
    rows = json.loads(out)
    assert [r["seq"] for r in rows] == list(range(2, 14))
    assert rows[0]["person_id"] == "person-00000001" and rows[0]["decision"] == "granted"
    code, out, _ = run("decrypt", "--owner-key", site["old"], "--owner-key", site["new"],
                       "--csv", site["file"])
    assert code == 0
    assert len(list(csv.DictReader(io.StringIO(out)))) == 12


def test_old_key_alone_cannot_read_new_records(site):
    code, _out, err = run("decrypt", "--owner-key", site["old"], "--json", site["file"])
    assert code == 1 and "which was not given" in err


def test_removed_batch_fails_verification(site, tmp_path):
    batches = site["batches"]
    tampered = tmp_path / "tampered.dklogs"
    export_logs(tampered, site["device_keys"], [batches[0], *batches[2:]])
    code, _, err = run("verify", "--owner-key", site["old"], "--owner-key", site["new"],
                       str(tampered))
    assert code == 1 and "gap before batch" in err


def test_batch_resigned_by_another_key_fails_verification(site, tmp_path):
    batches = list(site["batches"])
    forged = pb.SignedLogBatch(batch=batches[1].batch, signature=bytes(64))
    path = tmp_path / "forged.dklogs"
    export_logs(path, site["device_keys"], [batches[0], forged, *batches[2:]])
    code, _, err = run("verify", "--owner-key", site["old"], "--owner-key", site["new"], str(path))
    assert code == 1 and "bad signature" in err


def test_not_an_export_file_is_refused(tmp_path, site):
    junk = tmp_path / "junk.dklogs"
    junk.write_bytes(b"hello world")
    code, _, err = run("verify", "--owner-key", site["old"], str(junk))
    assert code != 0 and "bad magic" in err


def test_export_refuses_to_overwrite(site):
    with pytest.raises(Exception, match="already exists"):
        export_logs(Path(site["file"]), site["device_keys"], site["batches"])
