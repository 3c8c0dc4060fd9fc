"""People end to end against a real hub: list, show, update, remove, consent, duplicate faces."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from doorkeeper.tools.cli.human import parse_when
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import both_stores, random_template


def _template_file(path: Path, seed: int) -> str:
    np.save(path, np.random.default_rng(seed).standard_normal(512).astype(np.float32))
    return str(path)


@both_stores
def test_people_are_listed_shown_updated_and_removed(run, hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("site", "add", "oak").exit_code == 0
    r = run("person", "add", "--site", "oak", "--name", "Bob Ray", "--pin", "482913", "--door", "front")
    assert r.exit_code == 2 and "unknown door 'front'" in r.stderr  # a misspelt door is not accepted
    for door in ("front", "garage"):
        run("device", "add", "--site", "oak", "--name", door)
    r = run("person", "add", "--site", "oak", "--name", "Ann Lee", "--template-file",
            _template_file(tmp_path / "a.npy", 1), "--consent", "Ann Lee, signed form, ref F-17",
            "--card", "04A2B19C", "--valid-until", "2099-12-31")
    assert r.exit_code == 0, r.output
    ann = r.stdout.strip().splitlines()[-1]
    bob = run("person", "add", "--site", "oak", "--name", "Bob Ray", "--pin", "482913",
              "--door", "front").stdout.strip().splitlines()[-1]

    listed = json.loads(run("person", "list", "--site", "oak", "--json").stdout)
    by_id = {p["person_id"]: p for p in listed}
    assert by_id[ann]["name"] == "Ann Lee" and by_id[ann]["templates"] == 1 and by_id[ann]["cards"] == 1
    assert by_id[ann]["consent"] == "Ann Lee, signed form, ref F-17"
    assert by_id[ann]["valid_until"] == parse_when("2099-12-31", end_of_day=True)
    assert by_id[bob]["pins"] == 1 and by_id[bob]["templates"] == 0 and by_id[bob]["doors"] == ["front"]
    table = run("person", "list", "--site", "oak").output
    assert "Ann Lee" in table and "face (1), card (1)" in table and "PIN (1)" in table
    assert "2100-01-01 00:00" in table  # the end of the day given, in local time
    searched = json.loads(run("person", "list", "--site", "oak", "--search", "bob", "--json").stdout)
    assert [p["person_id"] for p in searched] == [bob]

    shown = run("person", "show", ann).output
    assert "signed form, ref F-17" in shown and "face (1), card (1)" in shown and ann in shown
    assert run("person", "show", "Bob Ray", "--site", "oak", "--json").exit_code == 0

    version = hub.hub.store.get_site("oak").version
    r = run("person", "update", ann, "--valid-from", "2026-01-01T08:00+08:00", "--door", "front",
            "--door", "garage", "--schedule", "mon-fri 07:00-19:00", "--pin", "1357")
    assert r.exit_code == 0, r.output
    assert hub.hub.store.get_site("oak").version == version + 1  # one change, one version
    after = json.loads(run("person", "show", ann, "--json").stdout)
    assert after["valid_from"] == parse_when("2026-01-01T08:00+08:00")
    assert after["valid_until"] == by_id[ann]["valid_until"]  # untouched parts stay
    assert after["doors"] == ["front", "garage"] and after["pins"] == 1 and after["cards"] == 1
    assert after["templates"] == 1 and after["schedules"][0]["weekdays_mask"] == 0b11111

    # by name: unique names only
    assert run("person", "add", "--site", "oak", "--name", "Bob Ray", "--card", "0077AB12").exit_code == 0
    r = run("person", "remove", "Bob Ray", "--site", "oak")
    assert r.exit_code == 2 and "2 persons are named" in r.stderr
    assert hub.hub.store.get_site("oak").person_count == 3
    assert run("person", "remove", bob).exit_code == 0
    assert run("person", "remove", "Bob Ray", "--site", "oak").exit_code == 0
    assert run("person", "remove", "Ann Lee", "--site", "oak").exit_code == 0
    assert hub.hub.store.get_site("oak").person_count == 0
    r = run("person", "remove", "Ann Lee", "--site", "oak")
    assert r.exit_code == 2 and "no person named exactly" in r.stderr


@both_stores
def test_a_face_needs_consent_and_a_card_does_not(hub, operator) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    before = hub.hub.store.get_site("oak")
    template = random_template(np.random.default_rng(5))
    with pytest.raises(grpc.RpcError) as err:
        operator.call("AddPerson", pb.AddPersonRequest(site="oak", name="Cy", templates=[template]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "consent" in err.value.details()
    assert hub.hub.store.get_site("oak") == before
    pid = operator.call("AddPerson", pb.AddPersonRequest(site="oak", name="Cy", cards=["1234"])).person_id
    # adding a face later needs consent too; giving it then is enough
    before = hub.hub.store.get_site("oak")
    with pytest.raises(grpc.RpcError) as err:
        operator.call("UpdatePerson", pb.UpdatePersonRequest(person_id=pid, add_templates=[template]))
    assert "consent" in err.value.details()
    assert hub.hub.store.get_site("oak") == before
    version = before.version
    operator.call("UpdatePerson", pb.UpdatePersonRequest(person_id=pid, add_templates=[template],
                                                         consent="Cy, in person, ref 9"))
    assert hub.hub.store.get_site("oak").version == version + 1
    info = operator.call("GetPerson", pb.GetPersonRequest(person_id=pid))
    assert info.templates == 1 and info.consent == "Cy, in person, ref 9"
    # the audit keeps the fact, never the biometric
    operator.remove_person(pid)
    trail = hub.hub.store.list_audit()
    assert trail[0].action == "person.remove" and pid in trail[0].detail
    assert not any(template.vector[:16].hex() in e.detail for e in trail)


@both_stores
def test_duplicate_faces_are_refused_naming_the_person_unless_allowed(run, hub, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    run("site", "add", "oak")
    r = run("person", "add", "--site", "oak", "--name", "Barack", "--photo",
            str(faces_dir / "obama" / "obama1.jpg"), "--consent", "Barack, form 1")
    assert r.exit_code == 0, r.output
    first = r.stdout.strip().splitlines()[-1]
    before = hub.hub.store.get_site("oak")
    r = run("person", "add", "--site", "oak", "--name", "Impostor", "--photo",
            str(faces_dir / "obama" / "obama2.jpg"), "--consent", "form 2")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "matches Barack" in r.stderr and first in r.stderr and "--allow-duplicate-face" in r.stderr
    assert hub.hub.store.get_site("oak") == before
    # another person's face goes in; the same face under a second name only when allowed, audited
    assert run("person", "add", "--site", "oak", "--name", "Joe", "--photo",
               str(faces_dir / "biden" / "biden1.jpg"), "--consent", "Joe, form 3").exit_code == 0
    r = run("person", "add", "--site", "oak", "--name", "Barack twin", "--photo",
            str(faces_dir / "obama" / "obama2.jpg"), "--consent", "form 4", "--allow-duplicate-face")
    assert r.exit_code == 0, r.output
    entry = hub.hub.store.list_audit()[0]
    assert entry.action == "person.add" and f"duplicate-face-allowed matches={first}" in entry.detail
    twin = json.loads(run("person", "show", r.stdout.strip().splitlines()[-1], "--json").stdout)
    assert twin["duplicate_of"] == [first]
