"""The face engine: image decoding, SCRFD detection, alignment and ArcFace embedding.

Models are loaded through insightface's ``model_zoo`` on onnxruntime's CPU
provider with our own ``SessionOptions`` (one intra-op thread by default: the
door loop owns one core and must not fight the rest of the agent for others).

Contract of an embedding: float32, shape (512,), L2 norm 1, made by the model
named by ``FaceEngine.model_id``; cosine similarity is then a dot product.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from insightface.model_zoo import model_zoo
from insightface.utils import face_align
from PIL import Image, ImageOps, UnidentifiedImageError

from doorkeeper.wire.capped import TooLarge, read_capped
from doorkeeper.wire.limits import LIMITS

from .models import INSTALL_HINT, ModelError, ModelFiles, locate_models

# An enrolment photo larger than this is refused before it is decoded.
MAX_IMAGE_BYTES = LIMITS.max_image_file_bytes
MAX_IMAGE_PIXELS = LIMITS.max_image_pixels
MIN_IMAGE_SIDE = 16
_IMAGE_FORMATS = frozenset({"JPEG", "PNG", "BMP", "WEBP", "TIFF"})
EMBEDDING_DIM = 512
ALIGNED_SIZE = 112

# Measured on ../shared/faces (NOTES_FOR_LEAD.md): 320 finds every face and keeps
# genuine/impostor separation close to 640 at under a third of the cost.
DEFAULT_DET_SIZE = 320
# Enrolment is offline and photos vary in size: detect at the model's native 640.
ENROL_DET_SIZE = 640


class ImageError(ValueError):
    """A file or frame that is not a usable image (unreadable, not an image, truncated, huge)."""


@dataclass(frozen=True)
class Face:
    """One detected face: box (x1, y1, x2, y2), detector score, 5 landmarks (eyes, nose, mouth).

    ``index`` is the detector's rank for this frame (0 = highest score).
    """

    bbox: np.ndarray = field(repr=False)
    score: float
    kps: np.ndarray = field(repr=False)
    index: int

    @property
    def area(self) -> float:
        return float(max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1]))

    @property
    def inter_ocular(self) -> float:
        """Distance between the two eye landmarks, in source pixels."""
        return float(np.linalg.norm(self.kps[1] - self.kps[0]))

    def describe(self) -> dict[str, object]:
        """JSON-friendly description (box rounded to pixels)."""
        return {
            "index": self.index,
            "bbox": [round(float(v), 1) for v in self.bbox],
            "det_score": round(self.score, 4),
            "inter_ocular_px": round(self.inter_ocular, 1),
        }


@dataclass(frozen=True)
class EngineConfig:
    """How to load and run the models; every field has a door-terminal default."""

    model_dir: str | None = None
    detector_file: str | None = None
    recognizer_file: str | None = None
    det_size: int = DEFAULT_DET_SIZE
    det_thresh: float = 0.5
    intra_op_threads: int = 1
    inter_op_threads: int = 1


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Convert a decoded image array to 3-channel uint8 BGR.

    Accepts grayscale (HxW or HxWx1), BGR, BGRA (alpha composited over white),
    and 16-bit or float images (scaled to 8 bit). Raises ImageError otherwise.
    """
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise ImageError("empty image")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind == "f":
        peak = 1.0 if float(np.nanmax(image)) <= 1.0 else 255.0
        image = np.clip(np.nan_to_num(image) * (255.0 / peak), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        bgr = image[:, :, :3].astype(np.float32)
        return (bgr * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    raise ImageError(f"unsupported image shape {image.shape}")


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 BGR (EXIF orientation applied).

    Refused with ImageError, before decoding where possible: files over
    MAX_IMAGE_BYTES, formats other than JPEG/PNG/BMP/WebP/TIFF, more than
    MAX_IMAGE_PIXELS (checked from the header), sides under MIN_IMAGE_SIDE; and
    while decoding: truncated or corrupt data. The message names the file.
    """
    path = Path(path)
    try:
        data = read_capped(path, MAX_IMAGE_BYTES, "image")
    except TooLarge as exc:
        raise ImageError(str(exc)) from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    return decode_image(data, str(path))


def decode_image(data: bytes, path: str) -> np.ndarray:
    """`load_image` on bytes already in memory (an upload that never touches the disk);
    `path` only names the image in errors. The same refusals, and MAX_IMAGE_BYTES too."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{path}: over the {MAX_IMAGE_BYTES}-byte image limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in _IMAGE_FORMATS:
                    raise ImageError(f"{path}: {img.format} is not an accepted image format")
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{path}: {width}x{height} is over the {MAX_IMAGE_PIXELS} pixel limit"
                    )
                if min(width, height) < MIN_IMAGE_SIDE:
                    raise ImageError(f"{path}: {width}x{height} is too small to hold a face")
                img.load()  # raises on truncated data, unlike cv2.imdecode
                array = _pil_to_array(ImageOps.exif_transpose(img))
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not an image file") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{path}: truncated or corrupt image ({exc})") from exc
    return to_bgr(array)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img, dtype=np.uint16)
    if img.mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        peak = max(float(values.max()), 1.0)
        return (np.clip(values, 0, None) * (255.0 / peak)).astype(np.uint8)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]])
    if img.mode == "L":
        return np.asarray(img)
    rgb = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


class FaceEngine:
    """Detector + recognizer loaded once; safe to call from one thread at a time.

    Raises ModelError at construction when the files are missing or not loadable
    ONNX models of the expected kind, with a message that says what to install.
    """

    def __init__(self, config: EngineConfig | None = None, files: ModelFiles | None = None):
        self.config = config or EngineConfig()
        self.files = files or locate_models(
            self.config.model_dir,
            detector=self.config.detector_file,
            recognizer=self.config.recognizer_file,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.intra_op_threads
        options.inter_op_num_threads = self.config.inter_op_threads
        options.log_severity_level = 3
        self._detector = self._load(self.files.detector, options, "detection")
        self._recognizer = self._load(self.files.recognizer, options, "recognition")
        self._detector.prepare(
            -1, input_size=(self.config.det_size, self.config.det_size),
            det_thresh=self.config.det_thresh,
        )
        if tuple(self._recognizer.input_size) != (ALIGNED_SIZE, ALIGNED_SIZE):
            raise ModelError(
                f"{self.files.recognizer} takes {self._recognizer.input_size} input; "
                f"only {ALIGNED_SIZE}x{ALIGNED_SIZE} ArcFace models are supported"
            )

    @staticmethod
    def _load(path: Path, options: ort.SessionOptions, task: str) -> Any:
        try:
            model = model_zoo.get_model(
                str(path), providers=["CPUExecutionProvider"], sess_options=options
            )
        except Exception as exc:  # onnx/onnxruntime raise many unrelated types here
            raise ModelError(f"cannot load {task} model {path}: corrupt or not ONNX ({exc}); "
                             f"{INSTALL_HINT}") from exc
        if model is None or getattr(model, "taskname", None) != task:
            kind = getattr(model, "taskname", "unknown")
            raise ModelError(f"{path} is a {kind} model, not a {task} model; {INSTALL_HINT}")
        return model

    @property
    def model_id(self) -> str:
        """``"<recognition file name>:<sha256>"``: the id stamped on every template."""
        return self.files.model_id

    def detect(self, image: np.ndarray, det_size: int | None = None) -> list[Face]:
        """Faces in a BGR uint8 image, largest box first. Empty list when there is none."""
        size = det_size or self.config.det_size
        boxes, kpss = self._detector.detect(image, input_size=(size, size))
        if kpss is None:
            raise ModelError(f"{self.files.detector} gives no landmarks; a *_kps model is needed")
        faces = [
            Face(bbox=boxes[i, :4].copy(), score=float(boxes[i, 4]), kps=kpss[i].copy(), index=i)
            for i in range(boxes.shape[0])
        ]
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces

    @staticmethod
    def align(image: np.ndarray, face: Face) -> np.ndarray:
        """The 112x112 ArcFace crop of a face (insightface ``norm_crop``)."""
        with warnings.catch_warnings():
            # scikit-image 0.26 deprecates the estimate() call inside norm_crop.
            warnings.simplefilter("ignore", FutureWarning)
            return face_align.norm_crop(image, landmark=face.kps, image_size=ALIGNED_SIZE)

    def embed_aligned(self, aligned: np.ndarray) -> np.ndarray:
        """Embedding of one aligned crop: float32 (512,), unit L2 norm."""
        vector = np.asarray(self._recognizer.get_feat(aligned), dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        if vector.shape != (EMBEDDING_DIM,) or not np.isfinite(norm) or norm == 0.0:
            raise ModelError(f"recognition model returned an unusable embedding {vector.shape}")
        return vector / norm

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """Align then embed one face of an image."""
        return self.embed_aligned(self.align(image, face))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two unit-norm embeddings."""
    return float(np.dot(a, b))
