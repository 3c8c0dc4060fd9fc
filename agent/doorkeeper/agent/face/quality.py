"""Quality gates: which faces may become templates, and which frames are worth matching.

Enrolment is strict and all-or-nothing: every photo must give exactly one clear,
sharp, large, frontal, uncut face, or no template at all is returned. Each
refusal is its own exception class so the CLI and the hub can say precisely why.

The verification-time gate (``check_frame``) is looser and never raises: a
refused frame only means the door waits for the next one.

Thresholds were calibrated on ../shared/faces (see NOTES_FOR_LEAD.md): every real
photo passes ENROL_POLICY, and a copy blurred with sigma 1.5 px in the aligned
crop, a face cut by the image edge, or a downscaled face fails it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from insightface.utils import face_align

from .engine import ALIGNED_SIZE, ENROL_DET_SIZE, Face, FaceEngine, ImageError, load_image


class EnrolmentError(Exception):
    """A photo cannot become a template. ``path`` names it; ``reason`` is a short code."""

    reason = "refused"

    def __init__(self, path: str | Path, detail: str):
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class UnreadableImageError(EnrolmentError):
    reason = "unreadable"


class NoFaceError(EnrolmentError):
    reason = "no_face"


class SeveralFacesError(EnrolmentError):
    reason = "several_faces"


class FaceTooSmallError(EnrolmentError):
    reason = "too_small"


class TooBlurredError(EnrolmentError):
    reason = "too_blurred"


class NotFrontalError(EnrolmentError):
    reason = "not_frontal"


class FaceCutOffError(EnrolmentError):
    reason = "cut_off"


@dataclass(frozen=True)
class QualityPolicy:
    """Limits for one use. ``several_faces_ratio`` None means: take the largest face."""

    min_inter_ocular_px: float
    min_sharpness: float
    max_yaw: float  # |nose offset from the eye midline| / inter-ocular distance
    max_roll_deg: float
    max_out_of_frame: float  # share of the aligned crop that lies outside the image
    several_faces_ratio: float | None


# Real shared photos: inter-ocular >= 24 px, sharpness >= 183, |yaw| <= 0.26
# (about 25 degrees), |roll| <= 14.5, out-of-frame 0. Partial faces: 0.28-0.32.
ENROL_POLICY = QualityPolicy(
    min_inter_ocular_px=20.0,
    min_sharpness=100.0,
    max_yaw=0.45,
    max_roll_deg=25.0,
    max_out_of_frame=0.10,
    several_faces_ratio=1.5,
)
VERIFY_POLICY = QualityPolicy(
    min_inter_ocular_px=16.0,
    min_sharpness=50.0,
    max_yaw=0.6,
    max_roll_deg=35.0,
    max_out_of_frame=0.25,
    several_faces_ratio=None,
)


@dataclass(frozen=True)
class FaceQuality:
    """The measured figures of one face."""

    inter_ocular_px: float
    sharpness: float
    yaw: float
    roll_deg: float
    out_of_frame: float


@dataclass(frozen=True)
class Template:
    """One enrolment template; only ``embedding`` and ``model_id`` leave the operator's machine."""

    model_id: str
    embedding: np.ndarray
    source: str
    face: Face
    quality: FaceQuality


@dataclass(frozen=True)
class FrameCheck:
    """Verification-time gate result: either a face and its crop, or a refusal reason."""

    face: Face | None
    aligned: np.ndarray | None
    quality: FaceQuality | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.reason is None


def pose(kps: np.ndarray) -> tuple[float, float]:
    """(yaw, roll) from 5 landmarks.

    roll: angle of the eye line, degrees. yaw: horizontal offset of the nose tip from
    the eye midpoint, in the de-rolled frame, divided by the inter-ocular distance
    (0 frontal; about 0.3 at 25-30 degrees of head turn with a typical nose depth).
    """
    left_eye, right_eye = kps[0], kps[1]
    delta = right_eye - left_eye
    iod = float(np.hypot(delta[0], delta[1]))
    if iod == 0.0:
        return math.inf, 0.0
    roll = math.degrees(math.atan2(float(delta[1]), float(delta[0])))
    along = delta / iod
    yaw = float(np.dot(kps[2] - (left_eye + right_eye) / 2.0, along)) / iod
    return yaw, roll


def out_of_frame(image_shape: tuple[int, ...], face: Face) -> float:
    """Share of the 112x112 aligned crop that falls outside the image (0..1)."""
    height, width = image_shape[:2]
    x1, y1, x2, y2 = face.bbox
    pad = 0.25 * max(x2 - x1, y2 - y1)
    if x1 - pad > 0 and y1 - pad > 0 and x2 + pad < width and y2 + pad < height:
        return 0.0  # the crop lies well inside; skip the warp
    return 1.0 - float(_valid_mask(image_shape, face).mean())


def _valid_mask(image_shape: tuple[int, ...], face: Face) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        matrix = face_align.estimate_norm(face.kps, ALIGNED_SIZE)
    ones = np.ones(image_shape[:2], dtype=np.uint8)
    return cv2.warpAffine(ones, matrix, (ALIGNED_SIZE, ALIGNED_SIZE), borderValue=0)


def sharpness(aligned: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of the grey aligned crop, over pixels inside the image.

    Measured on the aligned crop so that it does not depend on the photo's resolution.
    """
    grey = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
    laplacian = cv2.Laplacian(grey, cv2.CV_64F)
    if valid is not None and not valid.all():
        # Exclude the black border and its edge: it would look sharp.
        inside = cv2.erode(valid, np.ones((5, 5), np.uint8)).astype(bool)
        if inside.sum() < 100:
            return 0.0
        return float(laplacian[inside].var())
    return float(laplacian.var())


def measure(image: np.ndarray, face: Face, aligned: np.ndarray) -> FaceQuality:
    """All quality figures of one face."""
    yaw, roll = pose(face.kps)
    cut = out_of_frame(image.shape, face)
    valid = _valid_mask(image.shape, face) if cut > 0.0 else None
    return FaceQuality(
        inter_ocular_px=face.inter_ocular,
        sharpness=sharpness(aligned, valid),
        yaw=yaw,
        roll_deg=roll,
        out_of_frame=cut,
    )


def _refusal(quality: FaceQuality, policy: QualityPolicy) -> tuple[type[EnrolmentError], str] | None:
    """The first failed limit, as (error class, detail), or None when all pass."""
    if quality.inter_ocular_px < policy.min_inter_ocular_px:
        return FaceTooSmallError, (
            f"face too small: eyes {quality.inter_ocular_px:.0f} px apart, "
            f"at least {policy.min_inter_ocular_px:.0f} px needed"
        )
    if quality.out_of_frame > policy.max_out_of_frame:
        return FaceCutOffError, (
            f"face cut off by the image edge: {quality.out_of_frame:.0%} of it is outside, "
            f"at most {policy.max_out_of_frame:.0%} allowed"
        )
    if abs(quality.yaw) > policy.max_yaw or abs(quality.roll_deg) > policy.max_roll_deg:
        return NotFrontalError, (
            f"face too far from frontal: yaw {quality.yaw:+.2f} (limit {policy.max_yaw}), "
            f"roll {quality.roll_deg:+.0f} deg (limit {policy.max_roll_deg:.0f})"
        )
    if quality.sharpness < policy.min_sharpness:
        return TooBlurredError, (
            f"face too blurred: sharpness {quality.sharpness:.0f}, "
            f"at least {policy.min_sharpness:.0f} needed"
        )
    return None


def template_from_image(
    engine: FaceEngine, image: np.ndarray, source: str, policy: QualityPolicy = ENROL_POLICY,
    det_size: int = ENROL_DET_SIZE,
) -> Template:
    """One template from one decoded photo; raises an EnrolmentError subclass on refusal."""
    faces = engine.detect(image, det_size=det_size)
    if not faces:
        raise NoFaceError(source, "no face found")
    if len(faces) > 1 and policy.several_faces_ratio is not None:
        ratio = faces[0].area / max(faces[1].area, 1.0)
        if ratio < policy.several_faces_ratio:
            raise SeveralFacesError(
                source,
                f"{len(faces)} faces of similar size (largest only {ratio:.2f}x the next, "
                f"{policy.several_faces_ratio}x needed): use a photo of one person",
            )
    face = faces[0]
    aligned = engine.align(image, face)
    quality = measure(image, face, aligned)
    refusal = _refusal(quality, policy)
    if refusal is not None:
        error_class, detail = refusal
        raise error_class(source, detail)
    return Template(
        model_id=engine.model_id,
        embedding=engine.embed_aligned(aligned),
        source=source,
        face=face,
        quality=quality,
    )


def enrol(engine: FaceEngine, paths: Iterable[str | Path]) -> list[Template]:
    """Templates for every photo, or an EnrolmentError and nothing.

    Photos are decoded and gated in order; the first refusal is raised and no
    template of this call is returned (so nothing can be stored half-done).
    """
    templates: list[Template] = []
    for path in paths:
        try:
            image = load_image(path)
        except ImageError as exc:
            raise UnreadableImageError(path, str(exc).removeprefix(f"{path}: ")) from exc
        templates.append(template_from_image(engine, image, str(path)))
    if not templates:
        raise EnrolmentError("(none)", "no photo given")
    return templates


def check_frame(
    engine: FaceEngine, frame: np.ndarray, policy: QualityPolicy = VERIFY_POLICY
) -> FrameCheck:
    """Verification-time gate for one BGR frame; never raises for a bad face.

    Picks the main (largest) face, gates it with the looser VERIFY_POLICY, and
    returns its aligned crop for embedding. ``reason`` says why a frame was skipped.
    """
    faces = engine.detect(frame)
    if not faces:
        return FrameCheck(None, None, None, "no_face")
    ratio = policy.several_faces_ratio
    if len(faces) > 1 and ratio is not None and faces[0].area / max(faces[1].area, 1.0) < ratio:
        return FrameCheck(faces[0], None, None, "several_faces")
    face = faces[0]
    aligned = engine.align(frame, face)
    quality = measure(frame, face, aligned)
    refusal = _refusal(quality, policy)
    if refusal is not None:
        return FrameCheck(face, None, quality, refusal[0].reason)
    return FrameCheck(face, aligned, quality, None)
