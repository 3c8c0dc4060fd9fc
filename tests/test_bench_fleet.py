"""`doorkeeper bench fleet` in its smallest form: every key present, every door accounted for
(no timing thresholds), and the topologies this hub cannot run refused clearly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from doorkeeper.tools.bench.fleet import fleet

KEYS = ("devices", "hubs", "store", "apply_p50_s", "apply_p99_s", "apply_max_s",
        "hub_cpu_ms_per_device_change", "hub_rss_mb_per_1000_devices", "admin_p50_ms", "ingest_per_s")


def quick_run(*topology: str) -> dict[str, Any]:
    result = CliRunner().invoke(fleet, [
        "--devices", "6", "--workers", "2", "--changes", "2", "--big-persons", "30",
        "--upload-batches", "2", "--batch-records", "5", "--admin-calls", "3", "--settle", "0",
        "--json", *topology])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.output)  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """One quick run per store: one hub on SQLite; two replicas sharing a PostgreSQL
    database behind the balancer (the change goes through one, doors sit on both)."""
    if request.param == "sqlite":
        return quick_run()
    from tests.pg import ADMIN_URL, require_server

    require_server()
    return quick_run("--store", "postgresql", "--hubs", "2", "--pg-url", ADMIN_URL)


def test_every_figure_is_there_and_names_what_ran(figures: dict[str, Any]) -> None:
    for key in KEYS:
        assert key in figures, key
    expected = (6, 1, "sqlite") if figures["store"] == "sqlite" else (6, 2, "postgresql")
    assert (figures["devices"], figures["hubs"], figures["store"]) == expected
    for key in KEYS[3:]:
        assert isinstance(figures[key], float) and figures[key] > 0, (key, figures[key])
    assert figures["apply_p50_s"] <= figures["apply_p99_s"] <= figures["apply_max_s"]
    assert figures["big_change"]["persons"] == 30
    assert figures["ingest"]["batch_records"] == 5 and figures["ingest"]["records"] == 6 * 2 * 5
    assert "load average" in figures["uptime_before"]


def test_every_door_applied_every_change_and_the_hub_recorded_it(figures: dict[str, Any]) -> None:
    changes = [*figures["one_person_changes"], figures["big_change"]]
    assert len(changes) == 3
    for change in changes:
        assert change["missing"] == 0 and change["fleet_in_sync"] == 6
        assert change["bytes_per_device"] > 0
    # The big change carries the 30 persons' templates to every door: far more bytes.
    assert figures["big_change"]["bytes_per_device"] > 10 * figures["bytes_per_device_change"]
    assert "incomplete_changes" not in figures and figures["errors"] == {}


def test_changes_ride_the_watch_stream_and_stream_nonces_spare_the_challenges(
        figures: dict[str, Any]) -> None:
    """Per door: the first sync (a snapshot) is fetched; the one-person changes and the
    30-person one (under the 64 KiB the stream carries) come on the watch stream, so no
    Fetch at all for them, only a Report. A Challenge for the registration proof, the
    registration's report, the watch, the first fetch (the registration report's beacon
    starts it before the watch's first beacon brings a nonce) and each log upload; none for
    the reports of the changes."""
    assert figures["delivery"] == "watch"
    per_door = {name: count / 6 for name, count in figures["rpcs"].items()}
    syncs = 1 + 2 + 1  # the first sync, two one-person changes, the big change
    assert per_door["Fetch"] == 1 and per_door["pushed"] == syncs - 1
    assert per_door["Report"] == syncs + 1
    assert per_door["Challenge"] == 1 + 1 + 1 + 1 + 2


def test_fetch_delivery_fetches_every_change() -> None:
    """`--delivery fetch` (the comparison in BENCHMARKS.md): every door fetches every change
    and the watch stream carries beacons only."""
    figures = quick_run("--delivery", "fetch", "--upload-batches", "0")
    per_door = {name: count / 6 for name, count in figures["rpcs"].items()}
    assert figures["delivery"] == "fetch" and "pushed" not in per_door
    assert per_door["Fetch"] == 1 + 2 + 1 and per_door["Report"] == 1 + 2 + 1 + 1
    assert "incomplete_changes" not in figures and figures["errors"] == {}


def test_postgresql_runs_count_the_database_and_drop_it(figures: dict[str, Any]) -> None:
    if figures["store"] != "postgresql":
        assert "store_database" not in figures and "db_cpu_ms_per_device_change" not in figures
        return
    import psycopg

    from tests.pg import ADMIN_URL

    assert figures["db_cpu_ms_per_device_change"] >= 0
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        left = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (figures["store_database"],)).fetchall()
    assert left == []


def test_topologies_this_hub_cannot_run_are_refused_clearly() -> None:
    several = CliRunner().invoke(fleet, ["--hubs", "2", "--devices", "2"])
    assert several.exit_code != 0 and "shared store" in several.output
    nobody = CliRunner().invoke(fleet, ["--store", "postgresql", "--devices", "2",
                                        "--pg-url", "postgresql://postgres@127.0.0.1:1/postgres"])
    assert nobody.exit_code != 0 and "cannot create a database" in nobody.output
    unbalanced = CliRunner().invoke(fleet, ["--store", "postgresql", "--hubs", "2", "--no-balancer",
                                            "--workers", "1", "--devices", "2"])
    assert unbalanced.exit_code != 0 and "one door process per hub" in unbalanced.output
