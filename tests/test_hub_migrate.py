"""Moving a single SQLite hub to PostgreSQL (`doorkeeper hub migrate --from hub.db --to URL`),
and `hub migrate` bringing a schema to this version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import psycopg
from click.testing import CliRunner

from doorkeeper.agent.sync.service import SyncOptions, SyncService
from doorkeeper.hub import sqlite_store
from doorkeeper.tools.cli import cli
from doorkeeper.wire.entrylog import Entry
from tests.harness import HubThread, Operator, random_template, register_agent, spawn_hub, wait_for


def test_a_sqlite_hub_moves_to_postgresql_and_its_door_keeps_syncing(tmp_path: Path, pg_url: str) -> None:
    rng = np.random.default_rng(31)
    runner = CliRunner()
    h = HubThread(tmp_path / "hub").start()
    op = Operator(h.address, h.data_dir / "operator.key")
    env = {"DOORKEEPER_HUB": h.address, "DOORKEEPER_OPERATOR_KEY": str(h.data_dir / "operator.key")}
    op.add_site("oak")
    r = runner.invoke(cli, ["site", "owner-key", "--site", "oak", "--out", str(tmp_path / "owner.key")],
                      env=env)
    assert r.exit_code == 0, r.output
    before = [op.add_person("oak", templates=[random_template(rng)]).person_id for _ in range(3)]
    register_agent(op, "oak", "front", tmp_path / "a").close()
    service = SyncService(tmp_path / "a", SyncOptions(poll_interval_s=3600, upload_interval_s=3600,
                                                      heartbeat_interval_s=3600))
    hub_proc = None
    try:
        assert service.syncer.sync_once().ok
        service.record(Entry(door="front", decision="granted", credential="face",
                             person_id=before[0], similarity=0.7, whitelist_version=4))
        assert service.upload().records_acked == 1
        h.stop()

        # A running hub holds the data directory: the copy waits for it to stop.
        r = runner.invoke(cli, ["hub", "migrate", "--from", str(h.data_dir / "hub.db"), "--to", pg_url])
        assert r.exit_code == 0, r.output
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM persons").fetchone() == (3,)
            assert conn.execute("SELECT watermark FROM log_devices").fetchone() == (1,)
            audited = conn.execute("SELECT count(*) FROM audit").fetchone()
        # A second copy into the same database is refused and changes nothing.
        r = runner.invoke(cli, ["hub", "migrate", "--from", str(h.data_dir / "hub.db"), "--to", pg_url])
        assert r.exit_code != 0 and "already holds hub data" in r.output
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM persons").fetchone() == (3,)

        # The same data directory (its keys) served from PostgreSQL, on the same port.
        port = int(h.address.rpartition(":")[2])
        hub_proc = spawn_hub(h.data_dir, port, "--store", pg_url, "--metrics-listen", "off")
        added = op.add_person("oak", templates=[random_template(rng)]).person_id
        # The door, never re-registered, fetches the new version and reports it.
        assert wait_for(lambda: service.syncer.sync_once().ok and service.whitelist.person(added) is not None,
                        timeout=60)
        assert all(service.whitelist.person(pid) is not None for pid in before)
        service.record(Entry(door="front", decision="denied", credential="face", similarity=0.2))
        assert service.upload().records_acked == 1  # the log chain continues where SQLite left it
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT watermark FROM log_devices").fetchone() == (2,)
            assert conn.execute("SELECT version FROM reports").fetchone() == conn.execute(
                "SELECT version FROM sites").fetchone()  # its signed report: in sync
            # New audit entries follow the copied ones (the identity moved past them).
            assert conn.execute("SELECT count(*) FROM audit").fetchone() == (audited[0] + 1,)
        # ... and extend the hash chain copied from SQLite: the whole trail verifies.
        r = runner.invoke(cli, ["audit", "verify"], env=env)
        assert r.exit_code == 0 and "audit trail intact" in r.output, r.output
    finally:
        service.close()
        if hub_proc is not None:
            hub_proc.terminate()
            hub_proc.wait(15)
        h.stop()


def test_hub_migrate_brings_a_version_1_data_directory_to_the_latest(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    data.mkdir()
    with sqlite3.connect(data / "hub.db") as db:
        db.executescript(sqlite_store.SCHEMA_V1)  # a hub from before schema versions
    r = CliRunner().invoke(cli, ["hub", "migrate", "--data", str(data)])
    assert r.exit_code == 0, r.output
    latest = sqlite_store.MIGRATIONS[-1][0]
    assert f"hub {latest}" in r.output and "logs 1" in r.output
    with sqlite3.connect(data / "hub.db") as db:
        row = db.execute("SELECT version FROM schema_version WHERE component = 'hub'").fetchone()
        assert row == (latest,)


def test_hub_migrate_refuses_to_copy_while_the_hub_runs(tmp_path: Path, pg_url: str) -> None:
    h = HubThread(tmp_path / "hub").start()
    try:
        r = CliRunner().invoke(cli, ["hub", "migrate", "--from", str(h.data_dir / "hub.db"), "--to", pg_url])
        assert r.exit_code == 2 and "stop it first" in r.output
        with psycopg.connect(pg_url) as conn:  # nothing was created
            assert conn.execute("SELECT to_regclass('sites')").fetchone() == (None,)
    finally:
        h.stop()


def test_hub_init_on_postgresql_then_migrate_reports_the_versions(tmp_path: Path, pg_url: str) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["hub", "init", "--data", str(tmp_path / "hub"), "--store", pg_url])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "hub" / "hub.db").exists()  # the state is in PostgreSQL
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT role FROM operators").fetchall() == [("admin",)]
    r = runner.invoke(cli, ["hub", "migrate", "--store", pg_url])
    latest = sqlite_store.MIGRATIONS[-1][0]
    assert r.exit_code == 0 and f"hub {latest}" in r.output and "logs 1" in r.output, r.output
    r = runner.invoke(cli, ["hub", "migrate", "--store", "mysql://x"])
    assert r.exit_code != 0 and "postgresql://" in r.output
