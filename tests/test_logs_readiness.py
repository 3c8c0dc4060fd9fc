"""The data owner's cut-over list (issue 14, item 6, owner side): from a real export pulled from a
real hub, by name, residents that shadow-mode doors would have refused and residents never seen."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from click.testing import CliRunner

from doorkeeper.agent.sync.service import SyncService
from doorkeeper.tools.cli import cli
from doorkeeper.tools.cli.logs import cut_over, generate_owner_key
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.entrylog import Entry
from tests.harness import register_agent

T0 = 1_795_000_000_000  # unix ms


def _export(hub, operator, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:  # type: ignore[no-untyped-def]
    """A site with six residents, one door in shadow mode that decided about them, and the
    export the owner pulls. Returns (export, owner key, name -> person id)."""
    operator.add_site("oak", utc_offset="+08:00")
    owner = generate_owner_key(tmp_path / "owner.key")
    operator.call("SetOwnerKey", pb.SetOwnerKeyRequest(site="oak", public_key=owner.public_key))
    ids = {name: operator.add_person("oak", name, cards=[f"CARD000{i}"]).person_id
           for i, name in enumerate(["Ann", "Bo", "Cy", "Di", "Ed", "Fay"], start=1)}
    register_agent(operator, "oak", "front", tmp_path / "a").close()
    service = SyncService(tmp_path / "a")
    try:
        assert service.syncer.sync_once().ok
        entries = [
            # Ann: one would-be grant, then a would-be refusal (her validity ended).
            Entry(door="front", decision="shadow", credential="card", person_id=ids["Ann"], shadow=True),
            Entry(door="front", decision="denied", credential="face", person_id=ids["Ann"], similarity=0.62,
                  reason="expired", shadow=True),
            Entry(door="front", decision="shadow", credential="face", person_id=ids["Bo"], similarity=0.7,
                  shadow=True),
            # Di was refused by an enforcing door: seen, but not a shadow-mode finding.
            Entry(door="front", decision="denied", credential="card", person_id=ids["Di"],
                  reason="outside_schedule"),
            # An unrecognised face close to Ed, one far from Fay (a stranger), one naming nobody.
            Entry(door="front", decision="unknown", credential="face", person_id=ids["Ed"], similarity=0.33,
                  reason="low_similarity", shadow=True),
            Entry(door="front", decision="unknown", credential="face", person_id=ids["Fay"], similarity=0.08,
                  reason="low_similarity", shadow=True),
            Entry(door="front", decision="unknown", credential="face", similarity=0.05,
                  reason="low_similarity", shadow=True),
        ]
        for i, e in enumerate(entries):
            service.record(dataclasses.replace(e, wall_time_ms=T0 + i * 60_000))
        assert service.upload().records_acked == len(entries)
    finally:
        service.close()
    export = tmp_path / "oak.dklogs"
    runner = CliRunner()
    env = {"DOORKEEPER_HUB": hub.address, "DOORKEEPER_OPERATOR_KEY": str(hub.data_dir / "operator.key")}
    r = runner.invoke(cli, ["logs", "pull", "--site", "oak", "--out", str(export)], env=env)
    assert r.exit_code == 0, r.output
    return export, tmp_path / "owner.key", ids


def test_logs_readiness_names_who_would_be_refused_and_who_was_never_seen(
        hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    export, owner_key, ids = _export(hub, operator, tmp_path)
    runner = CliRunner()
    r = runner.invoke(cli, ["logs", "readiness", "--owner-key", str(owner_key), str(export), "--json"])
    assert r.exit_code == 3, r.output  # somebody is listed
    doc = json.loads(r.stdout)
    assert (doc["site_name"], doc["entries"], doc["unrecognised_faces"]) == ("oak", 7, 2)
    assert doc["from"].endswith("+08:00") and doc["from"] < doc["to"]
    assert [(p["name"], p["person_id"], p["refused"], p["shadow_decisions"], p["reasons"], p["as_nearest"])
            for p in doc["would_refuse"]] == [
        ("Ann", ids["Ann"], 1, 2, {"expired": 1}, 0),
        ("Ed", ids["Ed"], 1, 1, {"low_similarity": 1}, 1),
    ]
    never = [(p["name"], p["person_id"]) for p in doc["never_seen"]]
    assert never == [("Cy", ids["Cy"]), ("Fay", ids["Fay"])]
    r = runner.invoke(cli, ["logs", "readiness", "--owner-key", str(owner_key), str(export)])
    assert r.exit_code == 3
    assert "Ann: refused 1 of 2 at front (expired x1)" in r.stdout
    assert "2 resident(s) never seen in this period:" in r.stdout and f"Cy  ({ids['Cy']})" in r.stdout
    # A lower bar for unrecognised faces takes the stranger's nearest resident as seen.
    r = runner.invoke(cli, ["logs", "readiness", "--owner-key", str(owner_key), str(export), "--json",
                            "--near-similarity", "0.05"])
    doc = json.loads(r.stdout)
    assert [p["name"] for p in doc["would_refuse"]] == ["Ann", "Ed", "Fay"]
    assert [p["name"] for p in doc["never_seen"]] == ["Cy"]
    # Someone else's key opens neither the entries nor the roster.
    generate_owner_key(tmp_path / "other.key")
    r = runner.invoke(cli, ["logs", "readiness", "--owner-key", str(tmp_path / "other.key"), str(export)])
    assert r.exit_code == 1 and "roster" in r.output


def test_nobody_listed_is_exit_zero() -> None:
    roster = pb.Roster(site_id="s", site_name="oak", persons=[pb.RosterEntry(person_id="p1", name="Ann")])
    seen = [pb.LogEntry(door="front", decision="shadow", person_id="p1", shadow=True, wall_time_ms=T0)]
    c = cut_over(seen, roster)
    assert (c.would_refuse, c.never_seen, c.unrecognised, c.first_ms) == ([], [], 0, T0)
    c = cut_over([], roster)
    assert c.never_seen == [("p1", "Ann")] and c.first_ms == 0
