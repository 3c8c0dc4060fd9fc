"""Optional anti-spoofing through insightface's ``Liveness`` addon.

The addon's ONNX file (80x80 RGB input, one live probability output) is not
shipped by any package here and is never downloaded: the operator supplies its
path. Without it liveness is OFF, and ``LivenessCheck.status`` says so in a line
the agent logs at start. A configured file that is missing or not a valid
liveness model stops the agent (``LivenessError``): silently running without the
protection the operator asked for would be worse than not starting.

Only the OFF path and the missing/corrupt-file errors are tested here; no
liveness model was available to test the ON path against real photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .engine import Face

DEFAULT_LIVENESS_THRESHOLD = 0.8  # the addon's own default
OFF_MESSAGE = (
    "liveness is OFF: no liveness model configured, so a photo or screen held up to the "
    "camera is not detected; set the liveness model path to turn it on"
)


class LivenessError(RuntimeError):
    """The configured liveness model is missing, unreadable or not a liveness model."""


@dataclass(frozen=True)
class LivenessStatus:
    enabled: bool
    message: str
    model_file: str | None


@dataclass(frozen=True)
class LivenessResult:
    """``status``: off, ok or input_rejected (face too close to the frame edge).

    ``is_live`` is None unless status is ok; a door treats anything but True as not live
    when liveness is enabled.
    """

    status: str
    is_live: bool | None
    score: float | None
    reason: str | None = None


class LivenessCheck:
    """Wraps ``insightface.addons.Liveness``; construct once at agent start."""

    def __init__(
        self,
        model_file: str | Path | None = None,
        *,
        threshold: float = DEFAULT_LIVENESS_THRESHOLD,
        intra_op_threads: int = 1,
    ) -> None:
        self._model: Any = None
        if model_file is None:
            self.status = LivenessStatus(False, OFF_MESSAGE, None)
            return
        path = Path(model_file).expanduser()
        if not path.is_file():
            raise LivenessError(f"liveness model {path} does not exist")
        from insightface.addons.liveness import Liveness  # only when configured

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3
        try:
            self._model = Liveness(
                str(path),
                threshold=threshold,
                providers=["CPUExecutionProvider"],
                sess_options=options,
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise LivenessError(
                f"liveness model {path} cannot be loaded (corrupt or not a liveness model): {exc}"
            ) from exc
        self.status = LivenessStatus(
            True, f"liveness is ON: model {path.name}, threshold {threshold}", str(path)
        )

    @property
    def enabled(self) -> bool:
        return self._model is not None

    def check(self, image: np.ndarray, face: Face) -> LivenessResult:
        """Liveness of one detected face in a BGR frame; status off when not enabled."""
        if self._model is None:
            return LivenessResult("off", None, None, "liveness is off")
        result = self._model.predict(image, face.kps)
        score = result.get("live_score")
        return LivenessResult(
            status=str(result["status"]),
            is_live=result.get("is_live"),
            score=None if score is None else float(score),
            reason=result.get("reason"),
        )
