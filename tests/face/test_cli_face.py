"""`doorkeeper face compare/eval` and `doorkeeper bench verify/gallery` through click."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from doorkeeper.tools.cli import cli


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.output


def test_compare_same_and_different(faces_dir: Path) -> None:
    code, out = _run("face", "compare", str(faces_dir / "obama/obama1.jpg"),
                     str(faces_dir / "obama/obama2.jpg"), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["match"] is True and result["similarity"] >= result["threshold"]
    assert result["face_a"]["picked"] == "largest" and len(result["face_a"]["bbox"]) == 4
    code, out = _run("face", "compare", str(faces_dir / "obama/obama1.jpg"),
                     str(faces_dir / "group/obama_and_biden.jpg"), "--json", "--threshold", "0.9")
    result = json.loads(out)
    assert code == 0 and result["threshold"] == 0.9 and result["match"] is False
    assert result["face_b"]["faces_found"] == 3


def test_compare_non_image_is_one_line_error(faces_dir: Path, tmp_path: Path) -> None:
    fake = tmp_path / "x.jpg"
    fake.write_text("hello")
    code, out = _run("face", "compare", str(fake), str(faces_dir / "obama/obama1.jpg"))
    assert code != 0 and "not an image" in out
    assert len(out.strip().splitlines()) == 1 and "Traceback" not in out
    blank = tmp_path / "blank.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(blank), np.full((200, 200, 3), 255, np.uint8))
    code, out = _run("face", "compare", str(blank), str(faces_dir / "obama/obama1.jpg"))
    assert code != 0 and "no face" in out and len(out.strip().splitlines()) == 1


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "pairs.csv"
    path.write_text("file_x,file_y,Decision\n" + "\n".join(rows) + "\n")
    return path


def test_eval_on_shared_pairs(faces_dir: Path, tmp_path: Path) -> None:
    pairs = _csv(tmp_path, [
        "obama/obama1.jpg,obama/obama3.jpg,Yes",
        "alex_lacamoire/alex1.jpg,alex_lacamoire/alex2.png,Yes",
        "obama/obama1.jpg,biden/biden1.jpg,No",
        "kit_harington/kit1.jpg,rose_leslie/rose1.jpg,No",
        "obama/obama1.jpg,kit_harington/kit2.jpg,Yes",  # mislabelled on purpose
    ])
    code, out = _run("face", "eval", "--pairs", str(pairs), "--images", str(faces_dir), "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["pairs"] == 5
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["far"] == 0.0 and result["frr"] == pytest.approx(1 / 3, abs=1e-5)
    assert [f["file_y"] for f in result["failed"]] == ["kit_harington/kit2.jpg"]
    assert -1.0 <= result["best_threshold"] <= 1.0
    assert (result["det_size"], result["quality_gates"]) == (320, "enrolment")
    assert result["failed_comparisons"] == 0


def test_eval_counts_a_photo_without_a_usable_face_as_a_failed_comparison(
        faces_dir: Path, tmp_path: Path) -> None:
    """No face, or a face the enrolment gates refuse, fails that pair and the run goes on."""
    import cv2
    import numpy as np

    images = tmp_path / "images"
    shutil.copytree(faces_dir / "obama", images / "obama")
    shutil.copytree(faces_dir / "group", images / "group")
    cv2.imwrite(str(images / "blank.png"), np.full((200, 200, 3), 255, np.uint8))
    pairs = _csv(tmp_path, [
        "obama/obama1.jpg,obama/obama3.jpg,Yes",
        "obama/obama1.jpg,blank.png,Yes",  # no face: a false reject
        "blank.png,obama/obama2.jpg,No",  # no face: no accept, but still a failed comparison
        "group/obama_and_biden.jpg,obama/obama2.jpg,Yes",  # several faces: the enrolment gate refuses
    ])
    code, out = _run("face", "eval", "--pairs", str(pairs), "--images", str(images), "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["pairs"] == 4 and result["failed_comparisons"] == 3
    assert result["accuracy"] == pytest.approx(0.25)
    assert result["frr"] == pytest.approx(2 / 3, abs=1e-5) and result["far"] == 0.0
    reasons = {u["file"]: u["reason"] for u in result["unusable_photos"]}
    assert set(reasons) == {"blank.png", "group/obama_and_biden.jpg"}
    assert reasons["blank.png"].startswith("no_face") and reasons["group/obama_and_biden.jpg"].startswith(
        "several_faces")
    code, out = _run("face", "eval", "--pairs", str(pairs), "--images", str(images), "--json",
                     "--det-size", "640")
    assert code == 0 and json.loads(out)["det_size"] == 640


@pytest.mark.parametrize("name", ["../faces/obama/obama1.jpg", "obama/../../etc/passwd",
                                  "/etc/passwd"])
def test_eval_refuses_paths_outside_images(faces_dir: Path, tmp_path: Path, name: str) -> None:
    pairs = _csv(tmp_path, [f"{name},obama/obama1.jpg,Yes"])
    code, out = _run("face", "eval", "--pairs", str(pairs), "--images", str(faces_dir / "obama"))
    assert code != 0 and "refused" in out and "Traceback" not in out


def test_eval_non_image_is_one_line_error(faces_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    pairs = _csv(tmp_path, ["a.jpg,a.jpg,Yes"])
    code, out = _run("face", "eval", "--pairs", str(pairs), "--images", str(images))
    assert code != 0 and len(out.strip().splitlines()) == 1 and "a.jpg" in out


def test_bench_commands_emit_their_keys(faces_dir: Path) -> None:
    code, out = _run("bench", "verify", "--json", "--frames", "2", "--gallery", "50", "--det-size", "320")
    assert code == 0, out
    result = json.loads(out)
    assert list(result["det_sizes"]) == ["320"] and result["frames"] == 2
    at_320 = result["det_sizes"]["320"]
    for side in ("ours", "insightface", "confirmed_decision"):
        assert at_320[side]["p50_ms"] > 0
    assert all(v.startswith("refused") for v in at_320["stranger_frame_decision"].values())
    code, out = _run("bench", "gallery", "--json", "--templates", "500", "--queries", "3",
                     "--persons", "100")
    assert code == 0, out
    result = json.loads(out)
    assert (result["search_templates"], result["rss_persons"]) == (500, 100)
    assert result["engine_and_gallery_rss_mb"] > 0
