"""Bulk enrolment from CSV against a real hub: per-row results, one version per batch, reruns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from doorkeeper.tools.cli.bulk import Row, batches
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import both_stores

HEADER = "name,card,pin,photo,template_file,valid_from,valid_until,doors,consent\n"


def _photos(tmp_path: Path, faces_dir: Path) -> Path:
    """Copies in a scratch folder (the shared photos stay where they are, never in the repo)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for rel in ("obama/obama1.jpg", "obama/obama2.jpg", "biden/biden1.jpg", "group/two_people.jpg"):
        shutil.copy(faces_dir / rel, photos / Path(rel).name)
    cv2.imwrite(str(photos / "wall.jpg"), np.full((480, 640, 3), 128, dtype=np.uint8))  # no face
    np.save(photos / "t1.npy", np.random.default_rng(1).standard_normal(512).astype(np.float32))
    (tmp_path / "secret.npy").write_bytes(b"outside the photo folder")
    return photos


@both_stores
def test_import_reports_each_row_and_a_rerun_changes_nothing(  # type: ignore[no-untyped-def]
        run, hub, faces_dir: Path, tmp_path: Path) -> None:
    run("site", "add", "oak")
    run("device", "add", "--site", "oak", "--name", "front")
    photos = _photos(tmp_path, faces_dir)
    rows = [
        "Barack,,,obama1.jpg,,,,,\"Barack, signed form, ref 1\"",
        "Joe,04A2B19C,,biden1.jpg,,2026-01-01,2099-12-31,front,Joe form 2",
        "Wall,,,wall.jpg,,,,,consent 3",  # no face
        "Pair,,,two_people.jpg,,,,,consent 4",  # two faces
        "Gary,0099AA11,,,,,,garage,",  # unknown door
        "Mal,../../etc/passwd,,,,,,,",  # malformed card
        "Impostor,,,obama2.jpg,,,,,consent 7",  # the same face as row 2 of the file
        "Tia,,,,t1.npy,,,,consent 8",
        "Cara,0011BB22,482913;1357,,,,,,",  # card and PIN, no face, no consent needed
        "Sneaky,,,,../secret.npy,,,,consent 10",  # leaves the photo folder
        "Late,0022CC33,,,,,2020-01-01,,",  # validity already over
        "NoConsent,,,obama1.jpg,,,,,",  # a face without consent
    ]
    csv_path = tmp_path / "residents.csv"
    csv_path.write_text(HEADER + "\n".join(rows) + "\n")
    before = hub.hub.store.get_site("oak").version
    r = run("person", "import", "--site", "oak", str(csv_path), "--photos", str(photos))
    assert r.exit_code == 1, r.output  # some rows were refused
    lines = {int(x.split()[1]): x for x in r.stdout.splitlines() if x.startswith("row ")}
    assert len(lines) == len(rows)
    outcome = {n: lines[n].split(": ")[1].split()[0] for n in lines}
    assert [n for n, o in outcome.items() if o == "imported"] == [2, 3, 9, 10]
    assert "no face" in lines[4].lower() or "face" in lines[4].lower()
    assert "face" in lines[5].lower() and lines[5].split(": ")[1].startswith("refused")
    assert "unknown door 'garage'" in lines[6]
    assert "card" in lines[7].lower() and "etc/passwd" not in lines[7]  # refused, not echoed
    assert "face matches an earlier row" in lines[8] and lines[8].endswith("(row 2)")
    assert "outside" in lines[11] and "in the past" in lines[12] and "consent" in lines[13]
    site = hub.hub.store.get_site("oak")
    assert site.version == before + 1 and site.person_count == 4  # one batch, one version
    assert hub.hub.store.list_audit()[0].action == "person.import"

    again = run("person", "import", "--site", "oak", str(csv_path), "--photos", str(photos), "--json")
    assert again.exit_code == 1
    report = json.loads(again.stdout)
    assert (report["imported"], report["skipped"], report["refused"]) == (0, 4, 8)
    assert hub.hub.store.get_site("oak") == site  # the rerun changed nothing
    listed = json.loads(run("person", "list", "--site", "oak", "--json").stdout)
    assert sorted(p["name"] for p in listed) == ["Barack", "Cara", "Joe", "Tia"]


def test_a_bad_file_is_one_line_and_exit_2(run, hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("site", "add", "oak")
    bad = tmp_path / "bad.csv"
    bad.write_text("fullname,card\nAnn,1234\n")
    r = run("person", "import", "--site", "oak", str(bad))
    assert r.exit_code == 2 and "columns must include name" in r.stderr and "Traceback" not in r.output


def test_rows_travel_in_batches_that_fit_one_call() -> None:
    rows = [Row(i, f"p{i}", {}, pb.AddPersonRequest(name=f"p{i}", cards=[f"{i:08d}"])) for i in range(10)]
    rows.append(Row(99, "refused", {}))  # no request: not sent
    groups = list(batches(rows, max_rows=4))
    assert [len(g) for g in groups] == [4, 4, 2]
    by_bytes = list(batches(rows, max_rows=100, max_bytes=60))
    assert sum(len(g) for g in by_bytes) == 10 and len(by_bytes) > 1
    assert all(sum(r.request.ByteSize() + 8 for r in g if r.request) <= 60 for g in by_bytes)
