"""Decision counts and version history: the store on both backends, and the admin calls over
gRPC fed by real signed manifests from a registered door."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from nacl.signing import SigningKey

from doorkeeper.hub.decisions import checked_rows, face_attempts, totals
from doorkeeper.hub.sqlite_store import SqliteHubStore
from doorkeeper.hub.sqlite_to_pg import HUB_TABLES
from doorkeeper.hub.store import DECISION_COUNTERS, ChangeSet, Device, DeviceReport, HubStore, Token
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from tests.harness import Agent, Operator, both_stores, register_agent, wait_for
from tests.test_hub_store import _person, _site

H = 3600
NOW = 1_800_000_000 - 1_800_000_000 % H  # an hour boundary


def test_counters_are_the_wire_fields_in_order() -> None:
    names = [f.name for f in pb.DecisionHour.DESCRIPTOR.fields]
    assert names == ["hour", *DECISION_COUNTERS]
    assert [f.name for f in pb.DecisionTotals.DESCRIPTOR.fields] == list(DECISION_COUNTERS)


def test_hours_that_cannot_be_placed_are_dropped_and_counted() -> None:
    hours = [
        pb.DecisionHour(hour=NOW - 2 * H, granted_face=3),
        pb.DecisionHour(hour=NOW - H + 5, granted_face=1),  # not on an hour boundary
        pb.DecisionHour(hour=NOW - 40 * 86400, granted_face=1),  # older than the hub keeps
        pb.DecisionHour(hour=NOW + 30 * H, granted_face=1),  # a clock far ahead
        pb.DecisionHour(hour=NOW - 2 * H, granted_face=9),  # repeated
        pb.DecisionHour(hour=NOW, refused_unknown_face=2, shadow_would_refuse=1),
    ]
    rows, dropped = checked_rows(hours, NOW)
    assert dropped == 4
    assert [r[0] for r in rows] == [NOW - 2 * H, NOW]
    t = totals(rows)
    assert (t.granted_face, t.refused_unknown_face, t.shadow_would_refuse) == (3, 2, 1)
    assert face_attempts(t) == (2, 5)


def _row(hour: int, **counts: int) -> tuple[int, ...]:
    return (hour, *(counts.get(c, 0) for c in DECISION_COUNTERS))


def _report(device_id: str, version: int, at: int, *rows: tuple[int, ...]) -> DeviceReport:
    return DeviceReport(device_id, version, b"d" * 32, 0, at, at, b"m", b"s", decisions=rows)


def _store_with_door(store: HubStore) -> None:
    store.create_site(_site())
    store.create_device(Device("d1", "s1", "front", 100), Token("t1", "s1", "d1", b"h", expires_at=10**10))


class DecisionStoreContract:
    def test_counts_are_kept_per_hour_and_only_ever_raised(self, store: HubStore) -> None:
        _store_with_door(store)
        store.record_report(_report("d1", 1, NOW, _row(NOW - H, granted_face=5), _row(NOW, granted_card=1)))
        # A later manifest with a higher count for the open hour; then a late, older one.
        store.record_report(_report("d1", 1, NOW + 60, _row(NOW, granted_card=4, refused_expired=1)))
        store.record_report(_report("d1", 1, NOW + 61, _row(NOW, granted_card=2)))
        rows = store.decision_rows(["d1"], NOW - 2 * H, NOW + H)
        assert rows == [("d1", _row(NOW - H, granted_face=5)),
                        ("d1", _row(NOW, granted_card=4, refused_expired=1))]
        assert store.decision_rows(["d1"], NOW, NOW + H) == [rows[1]]
        assert store.decision_rows(["other"], 0, NOW + H) == []
        assert store.decision_rows([], 0, NOW + H) == []

    def test_hours_older_than_kept_are_pruned(self, store: HubStore) -> None:
        _store_with_door(store)
        store.record_report(_report("d1", 1, NOW - 40 * 86400, _row(NOW - 40 * 86400, granted_face=1)))
        store.record_report(_report("d1", 1, NOW, _row(NOW, granted_face=1)))
        assert [r[0] for _, r in store.decision_rows(["d1"], 0, NOW + H)] == [NOW]

    def test_first_report_of_each_version_is_kept(self, store: HubStore) -> None:
        _store_with_door(store)
        store.record_report(_report("d1", 1, NOW))
        store.record_report(_report("d1", 1, NOW + 10))
        store.record_report(_report("d1", 3, NOW + 20))
        assert store.door_versions(["d1"], 0) == [("d1", 1, NOW), ("d1", 3, NOW + 20)]
        assert store.door_versions(["d1"], 2) == [("d1", 3, NOW + 20)]
        store.compact("s1", 2)
        assert store.door_versions(["d1"], 0) == [("d1", 3, NOW + 20)]

    def test_every_version_is_recorded_with_its_time_and_digest(self, store: HubStore) -> None:
        store.create_site(_site())
        site = store.apply_changes("s1", ChangeSet(upserts=(_person("a" * 32),)), now=NOW)
        rows = store.version_rows("s1", 10)
        assert [(r.version, r.made_at) for r in rows] == [(2, NOW), (1, 100)]
        assert rows[0].state_digest == site.state_digest and rows[0].person_count == 1
        assert store.version_row("s1", 2) == rows[0]
        assert store.version_row("s1", 9) is None
        assert store.version_rows("s1", 1) == rows[:1]


class TestSqliteDecisions(DecisionStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        s = SqliteHubStore(tmp_path / "hub.db")
        yield s
        s.close()


class TestPgDecisions(DecisionStoreContract):
    @pytest.fixture
    def store(self, pg_url: str):  # type: ignore[no-untyped-def]
        from doorkeeper.hub.pg_store import PgHubStore

        s = PgHubStore(pg_url)
        yield s
        s.close()


def test_a_move_to_postgresql_copies_every_table_but_the_bundle_cache(tmp_path: Path) -> None:
    store = SqliteHubStore(tmp_path / "hub.db")
    tables = {r[0] for r in store._conn().execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if not r[0].startswith("sqlite_")}
    store.close()
    assert tables - set(HUB_TABLES) == {"bundles", "bundle_chunks", "schema_version"}


# ------------------------------------------------------------------------- over gRPC

@pytest.fixture
def front(hub, operator: Operator, tmp_path: Path) -> Iterator[Agent]:  # type: ignore[no-untyped-def]
    """Site oak with one registered door, `front`, synced."""
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "front")
    agent.syncer.sync_once()
    yield agent
    agent.close()


def _this_hour() -> int:
    now = int(time.time())
    return now - now % H


@both_stores
def test_counts_from_a_real_door_reach_operators_and_auditors(operator: Operator, front: Agent,
                                                               tmp_path: Path) -> None:
    hour = _this_hour()
    names = {"granted_face": 7, "refused_unknown_face": 2, "shadow_would_refuse": 1}
    # The agent's own manifest, signed with its key and sent by its Report call.
    front.syncer.status_extra = lambda: {"decisions": [
        pb.DecisionHour(hour=hour - H, granted_card=1),
        pb.DecisionHour(hour=hour, **names),
        pb.DecisionHour(hour=hour + 7, granted_face=99)]}  # misplaced: left out
    assert front.syncer.heartbeat()
    got = operator.call("DecisionCounts", pb.DecisionCountsRequest(site="oak"))
    assert [d.name for d in got.doors] == ["front"]  # type: ignore[attr-defined]
    hours = got.doors[0].hours  # type: ignore[attr-defined]
    assert [h.hour for h in hours] == [hour - H, hour]
    assert (hours[1].granted_face, hours[1].refused_unknown_face,
            hours[1].shadow_would_refuse) == (7, 2, 1)
    one = operator.call("DecisionCounts",
                        pb.DecisionCountsRequest(site="oak", device="front", since=hour))
    assert [h.hour for h in one.doors[0].hours] == [hour]  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as err:
        operator.call("DecisionCounts", pb.DecisionCountsRequest(site="oak", device="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # An auditor reads aggregates (they name nobody).
    auditor = _operator_with_role(operator, tmp_path, "auditor")
    again = auditor.call("DecisionCounts", pb.DecisionCountsRequest(site="oak"))
    assert again == got


def _operator_with_role(admin: Operator, tmp_path: Path, role: str) -> Operator:
    sk = SigningKey.generate()
    path = tmp_path / f"{role}.key"
    keys.write_private(path, bytes(sk))
    admin.call("AddOperator", pb.AddOperatorRequest(name=role, role=role, public_key=bytes(sk.verify_key)))
    return Operator(admin.address, path)


@both_stores
def test_version_history_says_how_fast_doors_reported_each_version(hub, operator: Operator,
                                                                   tmp_path: Path) -> None:
    operator.add_site("oak")
    agents = [register_agent(operator, "oak", n, tmp_path / n) for n in ("a", "b")]
    try:
        for a in agents:
            a.syncer.sync_once()
        v = operator.add_person("oak", "Ada", cards=["1234"]).version
        agents[0].syncer.sync_once()
        half = operator.call("VersionHistory", pb.VersionHistoryRequest(site="oak"))
        top = half.versions[0]  # type: ignore[attr-defined]
        assert (top.version, top.doors_total, top.doors_applied) == (v, 2, 1)
        assert top.converge_half_s >= 0 and top.converge_all_s == -1
        agents[1].syncer.sync_once()
        assert wait_for(lambda: operator.call(  # type: ignore[attr-defined]
            "VersionHistory", pb.VersionHistoryRequest(site="oak")).versions[0].doors_applied == 2)
        full = operator.call("VersionHistory", pb.VersionHistoryRequest(site="oak", limit=1))
        assert len(full.versions) == 1 and full.versions[0].converge_all_s >= 0  # type: ignore[attr-defined]
        assert full.versions[0].made_at > 0  # type: ignore[attr-defined]
    finally:
        for a in agents:
            a.close()


def test_unknown_site_is_not_found(hub, operator: Operator) -> None:
    for method, req in (("VersionHistory", pb.VersionHistoryRequest(site="elm")),
                        ("DecisionCounts", pb.DecisionCountsRequest(site="elm"))):
        with pytest.raises(grpc.RpcError) as err:
            operator.call(method, req)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND



def test_cli_shows_counts_and_history(front: Agent, run) -> None:  # type: ignore[no-untyped-def]
    import json

    hour = _this_hour()
    front.syncer.status_extra = lambda: {"decisions": [
        pb.DecisionHour(hour=hour, granted_face=4, refused_expired=2, shadow_would_refuse=1)]}
    assert front.syncer.heartbeat()
    r = run("site", "decisions", "oak", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert len(rows) == 1 and rows[0]["door"] == "front" and rows[0]["granted_face"] == 4
    assert rows[0]["refused_expired"] == 2 and rows[0]["shadow_would_refuse"] == 1
    table = run("site", "decisions", "oak", "--door", "front")
    assert table.exit_code == 0 and "2 expired" in table.output, table.output
    assert run("site", "decisions", "oak", "--since", "not-a-date").exit_code == 2
    missing = run("site", "decisions", "oak", "--door", "nope")
    assert missing.exit_code != 0 and "nope" in missing.output
    history = json.loads(run("site", "history", "oak", "--json").output)
    assert history[0]["version"] == 1 and history[0]["doors"] == 1 and history[0]["doors_applied"] == 1
    shown = run("site", "history", "oak")
    assert shown.exit_code == 0 and "1 of 1" in shown.output, shown.output
