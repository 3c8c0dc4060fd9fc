"""Enrol one identity from a real photo; its other photos match, strangers are refused."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from doorkeeper.agent.face.engine import FaceEngine, load_image
from doorkeeper.agent.face.gallery import DEFAULT_MARGIN, DEFAULT_THRESHOLD, Gallery
from doorkeeper.agent.face.quality import check_frame, enrol

IDENTITIES = ("obama", "biden", "kit_harington", "rose_leslie", "alex_lacamoire",
              "lin_manuel_miranda")


def _probe(engine: FaceEngine, path: Path):  # type: ignore[no-untyped-def]
    check = check_frame(engine, load_image(path))
    assert check.ok, f"{path.name}: {check.reason}"
    assert check.aligned is not None
    return engine.embed_aligned(check.aligned)


def test_enrolled_resident_matches_own_photos_and_strangers_are_refused(
    engine: FaceEngine, faces_dir: Path
) -> None:
    [template] = enrol(engine, [faces_dir / "obama" / "obama1.jpg"])
    assert template.model_id == engine.model_id
    assert template.embedding.shape == (512,)
    gallery = Gallery(engine.model_id)
    gallery.add("obama", template.model_id, template.embedding)
    for path in sorted((faces_dir / "obama").iterdir()):
        if path.name == "obama1.jpg":
            continue
        match = gallery.search(_probe(engine, path))
        assert match.accepted and match.person_id == "obama", (path.name, match)
    for name in IDENTITIES[1:]:
        for path in sorted((faces_dir / name).iterdir()):
            match = gallery.search(_probe(engine, path))
            assert not match.accepted and match.person_id is None, (path.name, match)
            assert match.reason == "below_threshold"


def test_default_threshold_separates_every_shared_pair(
    engine: FaceEngine, faces_dir: Path
) -> None:
    """Zero false accepts and zero false rejects on ../shared/faces, enrolled vs door path."""
    templates = {}
    probes = {}
    for name in IDENTITIES:
        for path in sorted((faces_dir / name).iterdir()):
            [template] = enrol(engine, [path])
            templates[path] = (name, template.embedding)
            probes[path] = (name, _probe(engine, path))
    worst_genuine, worst_impostor = 1.0, -1.0
    for a, b in itertools.permutations(templates, 2):
        score = float(templates[a][1] @ probes[b][1])
        if templates[a][0] == probes[b][0]:
            worst_genuine = min(worst_genuine, score)
        else:
            worst_impostor = max(worst_impostor, score)
    assert worst_genuine >= DEFAULT_THRESHOLD > worst_impostor
    assert worst_genuine - worst_impostor > DEFAULT_MARGIN


def test_several_templates_per_person_take_the_best(engine: FaceEngine, faces_dir: Path) -> None:
    photos = [faces_dir / "alex_lacamoire" / "alex1.jpg", faces_dir / "alex_lacamoire" / "alex3.jpg"]
    gallery = Gallery(engine.model_id)
    for template in enrol(engine, photos):
        gallery.add("alex", template.model_id, template.embedding)
    [biden] = enrol(engine, [faces_dir / "biden" / "biden1.jpg"])
    gallery.add("biden", biden.model_id, biden.embedding)
    match = gallery.search(_probe(engine, faces_dir / "alex_lacamoire" / "alex2.png"))
    assert match.accepted and match.person_id == "alex"
    assert gallery.remove_person("alex") == 2
    assert not gallery.search(_probe(engine, faces_dir / "alex_lacamoire" / "alex2.png")).accepted


@pytest.mark.parametrize("photo", ["unusual/rgba_32bit.png", "obama/obama-240p.jpg"])
def test_awkward_but_valid_photos_enrol(engine: FaceEngine, faces_dir: Path, photo: str) -> None:
    [template] = enrol(engine, [faces_dir / photo])
    assert template.embedding.shape == (512,)
