"""Gallery contract: model ids never mix, threshold and margin, add/remove, int8 path exact."""

from __future__ import annotations

import numpy as np
import pytest

from doorkeeper.agent.face import gallery as gallery_module
from doorkeeper.agent.face.gallery import Gallery


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, 512)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_other_model_templates_are_skipped_and_explained() -> None:
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 3)
    gallery = Gallery.build("w600k_mbf.onnx:aaa", [
        ("ann", "w600k_mbf.onnx:aaa", vectors[0]),
        ("bob", "glintr100.onnx:bbb", vectors[1]),
        ("cy", "glintr100.onnx:bbb", vectors[2]),
    ])
    assert len(gallery) == 1
    assert gallery.skipped == {"glintr100.onnx:bbb": 2}
    [message] = gallery.skip_messages()
    assert "not comparable" in message and "glintr100.onnx:bbb" in message
    assert gallery.search(vectors[1]).person_id is None


def test_margin_refuses_two_close_people() -> None:
    rng = np.random.default_rng(1)
    base, noise = _unit(rng, 2)
    twin = base + 0.05 * noise
    twin /= np.linalg.norm(twin)
    gallery = Gallery("m", threshold=0.4, margin=0.05)
    gallery.add("ann", "m", base)
    gallery.add("twin", "m", twin)
    match = gallery.search(base)
    assert not match.accepted and match.reason == "ambiguous"
    assert match.score == pytest.approx(1.0, abs=1e-5)
    assert match.margin == pytest.approx(match.score - match.second_best_score)
    gallery.remove_person("twin")
    match = gallery.search(base)
    assert match.accepted and match.person_id == "ann" and match.second_best_score == -1.0


def test_threshold_and_empty_gallery() -> None:
    rng = np.random.default_rng(2)
    a, b = _unit(rng, 2)
    gallery = Gallery("m", threshold=0.4)
    assert gallery.search(a).reason == "empty_gallery"
    gallery.add("ann", "m", a)
    match = gallery.search(b)
    assert not match.accepted and match.reason == "below_threshold"


def test_bad_embedding_refused() -> None:
    gallery = Gallery("m")
    with pytest.raises(ValueError):
        gallery.add("ann", "m", np.zeros(512, dtype=np.float32))
    with pytest.raises(ValueError):
        gallery.add("ann", "m", np.ones(128, dtype=np.float32))


def test_int8_search_matches_exact_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """The coarse int8 pass plus rescoring finds the exhaustive search's person, with scores
    within float16 rounding of the float32 ones (large galleries store float16 rows)."""
    monkeypatch.setattr(gallery_module, "INT8_MIN_TEMPLATES", 100)
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 600)
    gallery = Gallery.build("m", ((f"p{i // 2}", "m", v) for i, v in enumerate(vectors)),
                            expected=16)  # also exercises growth
    for i in range(0, 600, 37):
        probe = 0.8 * vectors[i] + 0.6 * _unit(rng, 1)[0]
        scores = vectors @ probe
        match = gallery.search(probe)
        assert match.person_id == f"p{i // 2}"
        assert match.score == pytest.approx(float(scores.max()), abs=2e-4)
        others = np.delete(scores, [2 * (i // 2), 2 * (i // 2) + 1])
        assert match.second_best_score == pytest.approx(float(others.max()), abs=2e-4)
    assert gallery.remove_person("p10") == 2
    assert gallery.search(vectors[20]).person_id != "p10"
    gallery.add("p10", "m", vectors[20])
    assert gallery.search(vectors[20]).person_id == "p10"


def test_large_gallery_holds_float16_rows_and_int8_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the int8 threshold a template costs 2 bytes per value plus 1 for its int8 code
    (not 4 + 1): the door's whitelist view stays small on a large site."""
    monkeypatch.setattr(gallery_module, "INT8_MIN_TEMPLATES", 100)
    vectors = _unit(np.random.default_rng(4), 300)
    gallery = Gallery.build("m", ((f"p{i}", "m", v) for i, v in enumerate(vectors)), expected=300)
    gallery.search(vectors[0])  # builds the int8 index
    assert gallery.nbytes <= 300 * 512 * 3 + 300 * 8
    small = Gallery.build("m", ((f"p{i}", "m", v) for i, v in enumerate(vectors[:50])), expected=50)
    assert small.search(vectors[7]).score == pytest.approx(1.0, abs=1e-6)  # float32 rows: exact
