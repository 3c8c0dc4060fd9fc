"""The data owner sees names and site-local times: the roster travels sealed to the owner key."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner

from doorkeeper.agent.sync.service import SyncOptions, SyncService
from doorkeeper.tools.cli import cli
from doorkeeper.tools.cli.logs import generate_owner_key
from doorkeeper.wire.entrylog import Entry
from tests.harness import both_stores, register_agent


@both_stores
def test_logs_decrypt_shows_names_and_site_local_times(run, hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak", utc_offset="+08:00")
    owner_key = tmp_path / "owner.key"
    assert run("site", "owner-key", "--site", "oak", "--out", str(owner_key)).exit_code == 0
    ann = operator.add_person("oak", name="Ann Quigley", cards=["04A2B19C"]).person_id
    register_agent(operator, "oak", "front", tmp_path / "a").close()
    service = SyncService(tmp_path / "a", SyncOptions(poll_interval_s=3600, upload_interval_s=3600))
    try:
        assert service.syncer.sync_once().ok
        service.record(Entry(door="front", decision="granted", credential="card", person_id=ann,
                             whitelist_version=3))
        service.record(Entry(door="front", decision="denied", credential="card", reason="unknown_card"))
        assert service.upload().records_acked == 2
    finally:
        service.close()
    export = tmp_path / "oak.dklogs"
    r = run("logs", "pull", "--site", "oak", "--out", str(export))
    assert r.exit_code == 0 and "roster sealed" in r.output, r.output
    assert b"Ann Quigley" not in export.read_bytes()  # sealed in the file too
    r = CliRunner().invoke(cli, ["logs", "decrypt", "--owner-key", str(owner_key), str(export)])
    assert r.exit_code == 0, r.output
    granted, denied = r.stdout.strip().splitlines()
    assert "Ann Quigley" in granted and "granted via card" in granted and "+08:00" in granted
    assert "nobody identified" in denied and "unknown card" in denied
    r = CliRunner().invoke(cli, ["logs", "decrypt", "--owner-key", str(owner_key), str(export), "--json"])
    first = json.loads(r.stdout)[0]
    assert first["person_id"] == ann and first["person_name"] == "Ann Quigley"
    assert isinstance(first["wall_time_ms"], int)
    local = dt.datetime.fromtimestamp(first["wall_time_ms"] / 1000, dt.timezone(dt.timedelta(hours=8)))
    assert first["local_time"] == local.isoformat(sep=" ", timespec="seconds")
    # another owner key opens neither the entries nor the roster
    other = tmp_path / "other.key"
    generate_owner_key(other)
    r = CliRunner().invoke(cli, ["logs", "decrypt", "--owner-key", str(other), str(export)])
    assert r.exit_code != 0 and "Ann Quigley" not in r.output and "roster" in r.stderr
