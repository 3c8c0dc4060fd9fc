"""The demo's cast: who stands in front of the doors, and the camera frames that show them.

Enrolment photos are the faces of insightface's sample photo t1.jpg (cropped, turned upright)
and, when ``../shared/faces`` is there, real photos of Obama and Kit Harington; strangers are
Biden, the t1.jpg faces the enrolment gates refuse and insightface's Tom Hanks sample. Door
frames are 1280x720 JPEGs on a plain corridor background, each one checked with the door's own
gates (it must match its own person clearly and nobody else) before it is used. Two more
members are NOT checked that way (role "unchecked-resident" and "unchecked-stranger"): their
frames go to the door as they are, so recognition itself can fail the demo.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

CANVAS_W, CANVAS_H = 1280, 720
REPO = Path(__file__).resolve().parents[4]  # tools/doorkeeper/tools/<pkg>/<module>.py
# Frames must match their own person clearly and nobody else (door threshold: 0.40).
GENUINE_MIN, IMPOSTOR_MAX = 0.55, 0.30


class CastError(Exception):
    """The cast cannot be made (a sample photo missing, too few usable faces); the message says why."""


@dataclass
class Member:
    """Someone who stands in front of a door. ``role``: resident, newcomer or stranger."""

    key: str
    label: str
    role: str
    origin: str
    frames_from: str
    photo: Path | None = None  # enrolment photo (residents and the newcomer)
    card: str = ""  # card number, for a resident who declined face scanning
    embedding: np.ndarray | None = field(default=None, repr=False)
    frames: list[bytes] = field(default_factory=list, repr=False)  # JPEG, 1280x720
    person_id: str = ""
    same_as: str = ""  # unchecked members: the key of the enrolled member they show
    _turn: int = 0

    def next_frames(self, n: int) -> list[bytes]:
        out = [self.frames[(self._turn + i) % len(self.frames)] for i in range(n)]
        self._turn += n
        return out


def find_faces_dir() -> Path | None:
    """../shared/faces: DOORKEEPER_FACES_DIR when set (even if empty: then none), else next to
    the repository or the working directory."""
    env = os.environ.get("DOORKEEPER_FACES_DIR")
    candidates = [Path(env)] if env is not None else [
        REPO.parent / "shared" / "faces", Path.cwd().parent / "shared" / "faces",
        Path.cwd() / "shared" / "faces"]
    for c in candidates:
        if c.is_dir() and any((c / d).is_dir() for d in ("obama", "kit_harington", "biden")):
            return c
    return None


def insightface_sample(name: str) -> Path | None:
    """A sample image shipped inside the installed insightface package (never downloaded)."""
    spec = importlib.util.find_spec("insightface")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "data" / "images" / name
        if path.is_file():
            return path
    return None


class CastBuilder:
    """Crops t1.jpg's faces, computes their templates the way `person add` does, and makes
    door frames; every frame is checked with the door's own gates before it is used."""

    def __init__(self, work: Path, frames_per_member: int) -> None:
        from doorkeeper.agent.face.engine import EngineConfig, FaceEngine

        self.engine = FaceEngine(EngineConfig())
        self.dir = work / "photos"
        self.dir.mkdir(parents=True)
        self.n = frames_per_member
        self.rng = np.random.default_rng(2024)
        self.background = _background()

    def build(self, faces_dir: Path | None) -> tuple[list[Member], list[str]]:
        """(cast, notes). Raises CastError when the minimum cast cannot be made."""
        from doorkeeper.agent.face.engine import load_image

        t1 = insightface_sample("t1.jpg")
        if t1 is None:
            raise CastError("insightface's sample photo data/images/t1.jpg is missing from the "
                            "installed package; reinstall insightface")
        image = load_image(t1)
        faces = sorted(self.engine.detect(image, det_size=640), key=lambda f: float(f.bbox[0]))
        enrolable: list[tuple[int, Path, np.ndarray]] = []
        refused: list[tuple[int, np.ndarray]] = []
        for i, face in enumerate(faces):
            crop = _upright_crop(image, face)
            path = self.dir / f"t1-face{i + 1}.png"
            cv2.imwrite(str(path), crop)
            if self._template(path) is not None:
                enrolable.append((i, path, crop))
            else:
                refused.append((i, crop))
        if len(enrolable) < 4:
            raise CastError(f"only {len(enrolable)} of t1.jpg's faces pass the enrolment gates; 4 needed")
        # (member, how to make its frames once every enrolled template is known)
        pending: list[tuple[Member, Callable[[dict[str, np.ndarray]], list[bytes]]]] = []

        def photos(folder: Path, names: Sequence[str], own: str | None
                   ) -> Callable[[dict[str, np.ndarray]], list[bytes]]:
            return lambda enrolled: self._photo_frames([folder / n for n in names], own, enrolled)

        def copies(crop: np.ndarray, own: str | None, scale: tuple[float, float] = (1.0, 1.7)
                   ) -> Callable[[dict[str, np.ndarray]], list[bytes]]:
            return lambda enrolled: self._modified_frames(crop, own, enrolled, scale)

        if faces_dir is not None:
            for key, label, role, folder, enrol, frames in (
                ("obama", "Obama", "resident", "obama", "obama1.jpg",
                 ("obama2.jpg", "obama3.jpg", "obama4.jpg")),
                ("kit", "Kit Harington", "newcomer", "kit_harington", "kit1.jpg", ("kit2.jpg", "kit3.jpg")),
            ):
                photo = faces_dir / folder / enrol
                if photo.is_file() and self._template(photo) is not None:
                    m = Member(key, label, role, f"../shared/faces/{folder}/{enrol}",
                               f"{', '.join(frames)}: other real photos", photo=photo)
                    pending.append((m, photos(faces_dir / folder, frames, key)))
        have_newcomer = any(m.role == "newcomer" for m, _ in pending)
        letters = "ABCDEFGH"
        for n, (i, path, crop) in enumerate(enrolable):
            role = "newcomer" if n == len(enrolable) - 1 and not have_newcomer else "resident"
            m = Member(f"t1-{i + 1}", f"Resident {letters[n]}", role,
                       f"t1.jpg face {i + 1} (cropped, upright)", "modified copies of the crop", photo=path)
            pending.append((m, copies(crop, m.key)))
        for m, _ in pending:
            assert m.photo is not None
            m.embedding = self._template(m.photo)
        enrolled = {m.key: m.embedding for m, _ in pending if m.embedding is not None}
        # Strangers: Biden (real photos), the t1 faces the enrolment gates refuse, Tom Hanks.
        if faces_dir is not None and (faces_dir / "biden").is_dir():
            pending.append((Member("biden", "Biden (stranger)", "stranger", "-", "biden1-2.jpg: real photos"),
                            photos(faces_dir / "biden", ("biden1.jpg", "biden2.jpg"), None)))
        for n, (i, crop) in enumerate(refused):
            pending.append((Member(f"t1-{i + 1}", f"Stranger {letters[len(enrolable) + n]}", "stranger", "-",
                                   f"t1.jpg face {i + 1} (fails enrolment gates): modified copies"),
                            copies(crop, None)))
        hanks = insightface_sample("Tom_Hanks_54745.png")
        if hanks is not None:
            stranger = Member("hanks", "Stranger (Tom_Hanks_54745.png)", "stranger", "-",
                              "insightface sample, scaled copies")
            pending.append((stranger, copies(load_image(hanks), None, (2.6, 3.4))))
        pending += self._unchecked(faces_dir if any(m.key == "obama" for m, _ in pending) else None,
                                   enrolable, hanks)
        notes: list[str] = []
        cast: list[Member] = []
        for m, make in pending:
            m.frames = make(enrolled)
            if m.frames:
                cast.append(m)
            else:
                notes.append(f"{m.label}: no door frame passed the checks; left out")
        roles = Counter(m.role for m in cast)
        if roles["resident"] < 3 or roles["newcomer"] < 1 or roles["stranger"] < 1 or \
                roles["unchecked-resident"] < 1 or roles["unchecked-stranger"] < 1:
            raise CastError(f"not enough usable faces for the demo ({dict(roles)})")
        if faces_dir is None:
            notes.append("../shared/faces not found (or DOORKEEPER_FACES_DIR has no face folders): residents "
                         "come from insightface's t1.jpg alone, and their door frames are MODIFIED COPIES "
                         "of their enrolment crops (scaled, shifted, brightness changed, on a 1280x720 "
                         "canvas), so similarities are higher than a real camera gives")
        else:
            notes.append(f"faces from {faces_dir}: Obama and Kit Harington are verified on other real photos "
                         "than the one enrolled; t1.jpg residents' door frames are modified copies of their "
                         "enrolment crops (similarity near 1)")
        return cast, notes

    def blank_frame(self) -> bytes:
        if self.engine.detect(self.background):
            raise CastError("the empty door frame shows a face")
        return _jpeg(self.background)

    def _unchecked(self, faces_dir: Path | None, enrolable: list[tuple[int, Path, np.ndarray]],
                   hanks: Path | None) -> list[tuple[Member, Callable[[dict[str, np.ndarray]], list[bytes]]]]:
        """A resident and a stranger whose frames are NOT checked against the enrolled templates
        (only that the photo decodes): the door's own decision is what the demo then checks."""
        from doorkeeper.agent.face.engine import load_image

        out: list[tuple[Member, Callable[[dict[str, np.ndarray]], list[bytes]]]] = []
        if faces_dir is not None and (faces_dir / "obama" / "obama4.jpg").is_file():
            grant = Member("obama-unchecked", "Obama (unchecked frame)", "unchecked-resident", "-",
                           "obama4.jpg as it is: not checked", same_as="obama")
            out.append((grant, lambda _: self._as_is([faces_dir / "obama" / "obama4.jpg"])))
        elif enrolable:
            i, _, crop = enrolable[0]
            grant = Member(f"t1-{i + 1}-unchecked", "Resident A (unchecked frames)", "unchecked-resident",
                           "-", "modified copies of the crop: not checked", same_as=f"t1-{i + 1}")
            out.append((grant, lambda _: self._modified_frames(crop, None, {}, check=False)))
        stranger_photo = faces_dir / "lin_manuel_miranda" / "lin1.png" if faces_dir is not None else None
        if stranger_photo is not None and stranger_photo.is_file():
            out.append((Member("lin-unchecked", "Lin-Manuel Miranda (unchecked stranger)",
                               "unchecked-stranger", "-", "lin1.png as it is: not checked"),
                        lambda _: self._as_is([stranger_photo])))
        elif hanks is not None:
            image = load_image(hanks)
            out.append((Member("hanks-unchecked", "Tom Hanks (unchecked stranger)", "unchecked-stranger", "-",
                               "scaled copies: not checked"),
                        lambda _: self._modified_frames(image, None, {}, (2.6, 3.4), check=False)))
        return out

    def _as_is(self, paths: Sequence[Path]) -> list[bytes]:
        """The photos on the door background, with no check at all."""
        from doorkeeper.agent.face.engine import load_image

        return [_jpeg(self._place(_fit_canvas(load_image(p)), 0, 0)) for p in paths]

    # -- internals
    def _template(self, path: Path) -> np.ndarray | None:
        """The embedding `person add --photo` computes, or None when its gates refuse the photo."""
        from doorkeeper.agent.face.engine import ImageError, load_image
        from doorkeeper.agent.face.quality import EnrolmentError, template_from_image

        try:
            return template_from_image(self.engine, load_image(path), str(path)).embedding
        except (EnrolmentError, ImageError):
            return None

    def _fits(self, jpeg: bytes, own: str | None, enrolled: dict[str, np.ndarray]) -> bool:
        """The door would decide on this frame (as it decodes the file), and decide right."""
        from doorkeeper.agent.face.quality import check_frame

        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return False
        check = check_frame(self.engine, image)
        if not check.ok or check.aligned is None:
            return False
        emb = self.engine.embed_aligned(check.aligned)
        sims = {k: float(np.dot(emb, v)) for k, v in enrolled.items()}
        if own is not None and sims.get(own, -1.0) < GENUINE_MIN:
            return False
        return all(s < IMPOSTOR_MAX for k, s in sims.items() if k != own)

    def _modified_frames(self, crop: np.ndarray, own: str | None, enrolled: dict[str, np.ndarray],
                         scale: tuple[float, float] = (1.0, 1.7), check: bool = True) -> list[bytes]:
        out: list[bytes] = []
        for _ in range(self.n * 4):
            if len(out) >= self.n:
                break
            s = float(self.rng.uniform(*scale))
            img = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
            img = cv2.convertScaleAbs(img, alpha=float(self.rng.uniform(0.75, 1.25)),
                                      beta=float(self.rng.uniform(-30, 30)))
            jpeg = _jpeg(self._place(img, int(self.rng.uniform(-350, 350)), int(self.rng.uniform(-100, 60))))
            if not check or self._fits(jpeg, own, enrolled):
                out.append(jpeg)
        return out

    def _photo_frames(self, paths: Sequence[Path], own: str | None,
                      enrolled: dict[str, np.ndarray]) -> list[bytes]:
        from doorkeeper.agent.face.engine import ImageError, load_image

        out: list[bytes] = []
        for p in paths:
            try:
                img = load_image(p)
            except ImageError:
                continue
            jpeg = _jpeg(self._place(_fit_canvas(img), 0, 0))
            if self._fits(jpeg, own, enrolled):
                out.append(jpeg)
        return out

    def _place(self, img: np.ndarray, dx: int, dy: int) -> np.ndarray:
        """``img`` pasted on the door background, centred plus (dx, dy), kept inside the frame."""
        canvas = self.background.copy()
        h, w = min(img.shape[0], CANVAS_H), min(img.shape[1], CANVAS_W)
        x = min(max(0, (CANVAS_W - w) // 2 + dx), CANVAS_W - w)
        y = min(max(0, (CANVAS_H - h) // 2 + dy), CANVAS_H - h)
        canvas[y:y + h, x:x + w] = img[:h, :w]
        return canvas


def _fit_canvas(img: np.ndarray) -> np.ndarray:
    scale = min(CANVAS_W / img.shape[1], CANVAS_H / img.shape[0], 1.0)
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def _background() -> np.ndarray:
    """A plain corridor: vertical grey-blue gradient with a darker door frame. No face in it."""
    ramp = np.linspace(70, 150, CANVAS_H, dtype=np.float32)[:, None]
    canvas = np.empty((CANVAS_H, CANVAS_W, 3), np.uint8)
    for c, gain in enumerate((1.05, 1.0, 0.9)):
        canvas[:, :, c] = np.clip(ramp * gain, 0, 255).astype(np.uint8)
    cv2.rectangle(canvas, (300, 40), (980, 719), (55, 50, 45), 18)
    return canvas


def _upright_crop(image: np.ndarray, face: Any, margin: float = 1.0) -> np.ndarray:
    """The face turned so its eyes are level (t1.jpg has tilted heads), with a margin."""
    (lx, ly), (rx, ry) = face.kps[0], face.kps[1]
    angle = math.degrees(math.atan2(float(ry - ly), float(rx - lx)))
    cx, cy = float(face.bbox[0] + face.bbox[2]) / 2, float(face.bbox[1] + face.bbox[3]) / 2
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    h, w = image.shape[:2]
    upright = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    half = max(float(face.bbox[2] - face.bbox[0]), float(face.bbox[3] - face.bbox[1])) * margin
    y0, y1 = int(max(0.0, cy - half)), int(min(float(h), cy + half))
    x0, x1 = int(max(0.0, cx - half)), int(min(float(w), cx + half))
    return np.ascontiguousarray(upright[y0:y1, x0:x1])


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise CastError("could not encode a frame")
    return bytes(buf.tobytes())
