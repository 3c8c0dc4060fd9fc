"""The operator CLI against a real hub: last-line outputs, one-line errors, nothing stored on refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from doorkeeper.tools.cli import cli


def test_ids_and_tokens_are_alone_on_the_last_line(run, hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("site", "add", "oak").exit_code == 0
    r = run("device", "add", "--site", "oak", "--name", "front")
    assert r.exit_code == 0 and r.stdout.strip().splitlines()[-1].startswith("dk1-")
    np.save(tmp_path / "t.npy", np.random.default_rng(1).standard_normal(512).astype(np.float32))
    r = run("person", "add", "--site", "oak", "--name", "Ann", "--template-file", str(tmp_path / "t.npy"),
            "--consent", "Ann, signed form, ref 1")
    assert r.exit_code == 0, r.output
    person_id = r.stdout.strip().splitlines()[-1]
    assert len(person_id) == 32
    record = hub.hub.store.get_site("oak")
    assert record.person_count == 1


def test_enrolment_refusals_are_one_line_and_store_nothing(run, hub, faces_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("site", "add", "oak")
    before = hub.hub.store.get_site("oak")
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    cases = [
        [str(faces_dir / "obama" / "obama1.jpg"), str(text)],  # one bad photo spoils the command
        [str(faces_dir / "group" / "two_people.jpg")],
        [str(tmp_path / "missing.jpg")],
    ]
    for photos in cases:
        args = ["person", "add", "--site", "oak", "--name", "Bob", "--consent", "Bob, form 2"]
        for p in photos:
            args += ["--photo", p]
        r = run(*args)
        assert r.exit_code != 0
        assert "Traceback" not in r.output
        assert len([x for x in r.stderr.splitlines() if x.strip()]) <= 2, r.stderr
    assert hub.hub.store.get_site("oak") == before


def test_unknown_site_and_unreachable_hub_are_one_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("device", "add", "--site", "nowhere", "--name", "front")
    assert r.exit_code == 2 and "not found" in r.stderr and "Traceback" not in r.output
    runner = CliRunner()
    r = runner.invoke(cli, ["site", "list"], env={"DOORKEEPER_HUB": "127.0.0.1:1",
                                                  "DOORKEEPER_OPERATOR_KEY": str(tmp_path / "none.key")})
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_agent_sync_and_status_commands(run, hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    from tests.harness import random_template, register_agent

    operator.add_site("oak")
    operator.add_person("oak", templates=[random_template(np.random.default_rng(3))])
    register_agent(operator, "oak", "front", tmp_path / "a").close()
    runner = CliRunner()
    r = runner.invoke(cli, ["agent", "sync", "--data", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output  # 0 = in sync
    r = runner.invoke(cli, ["agent", "status", "--data", str(tmp_path / "a"), "--json"])
    status = json.loads(r.stdout)
    site = hub.hub.store.get_site("oak")
    assert (status["version"], status["persons"], status["state_digest"]) == (
        site.version, 1, site.state_digest.hex())
    assert status["hub_reachable"] is True and status["last_sync_ok"] and status["stale"] is False
    hub.stop()
    r = runner.invoke(cli, ["agent", "sync", "--data", str(tmp_path / "a"), "--attempts", "1"])
    assert r.exit_code == 1
    r = runner.invoke(cli, ["agent", "status", "--data", str(tmp_path / "a"), "--json", "--timeout", "0.5"])
    status = json.loads(r.stdout)
    assert status["hub_reachable"] is False and status["version"] == site.version
