"""`doorkeeper demo`: the whole system, live, on this machine, in under two minutes.

Real: `doorkeeper hub serve` and three `doorkeeper agent run` processes on loopback (gRPC,
embedded SQLite, the real face models), every operator and data-owner step run as the same
`doorkeeper ...` command a person would type (logged to `commands.log`), door 3's network link
through a TCP proxy that the demo cuts and restores (`demoproxy.LinkProxy`).
Simulated: the cameras (image files dropped into each door's hot folder), the locks (the `sim`
door driver) and, without ``../shared/faces``, the faces in front of the doors: modified copies
of the enrolment crops from insightface's sample photo (said on screen).

The demo learns what happened only as a user would: from the agents' output lines (decisions,
whitelist swaps, loop statistics), `agent status --json`, `fleet --json`, `site list --json` and
the owner's `logs` commands. Each expectation is checked; the exit status is 0 only if all held,
and every failed one is named. Every process it started is stopped (SIGTERM, then SIGKILL) and
checked gone with psutil before it returns.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import math
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click
import cv2
import numpy as np
import psutil
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from doorkeeper.tools.demoproxy import LinkProxy

SITE = "oak"
DOORS = ("door-1", "door-2", "door-3")
PROXIED = "door-3"
STEPS = 8
CANVAS_W, CANVAS_H = 1280, 720
REPO = Path(__file__).resolve().parent.parent
# Frames must match their own person clearly and nobody else (door threshold: 0.40).
GENUINE_MIN, IMPOSTOR_MAX = 0.55, 0.30

# What the agents print (text logs; a JSON log line's "message" is searched the same way).
GRANT_RE = re.compile(r"Verification successful: door (?P<door>\S+), person (?P<person>\S+), "
                      r"(?P<cred>\w+); door .* \[(?P<details>[^\[\]]*)\]\s*$")
REFUSE_RE = re.compile(r"door (?P<door>\S+): (?P<result>denied|unknown|shadow) \((?P<reason>\w+)\) "
                       r"(?P<cred>\w+)(?: person (?P<person>\S+))? \[(?P<details>[^\[\]]*)\]\s*$")
GALLERY_RE = re.compile(r"door gallery: version (\d+) -> (\d+), (\d+) persons")
LOOP_RE = re.compile(r"door (\S+): loop stopped after (\d+) frames; decisions (\{[^}]*\}); "
                     r"p50 (\S+) ms, p99 (\S+) ms")
THREAD_DIED_RE = re.compile(r"Exception in thread (\S+?):?$")
SUCCESS = "Verification successful"


class DemoError(Exception):
    """A step could not go on; the message says what broke."""


# ---------------------------------------------------------------------------- the cast


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
        """(cast, notes). Raises DemoError when the minimum cast cannot be made."""
        from doorkeeper.agent.face.engine import load_image

        t1 = insightface_sample("t1.jpg")
        if t1 is None:
            raise DemoError("insightface's sample photo data/images/t1.jpg is missing from the "
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
            raise DemoError(f"only {len(enrolable)} of t1.jpg's faces pass the enrolment gates; 4 needed")
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
        notes: list[str] = []
        cast: list[Member] = []
        for m, make in pending:
            m.frames = make(enrolled)
            if m.frames:
                cast.append(m)
            else:
                notes.append(f"{m.label}: no door frame passed the checks; left out")
        roles = Counter(m.role for m in cast)
        if roles["resident"] < 3 or roles["newcomer"] < 1 or roles["stranger"] < 1:
            raise DemoError(f"not enough usable faces for the demo ({dict(roles)})")
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
            raise DemoError("the empty door frame shows a face")
        return _jpeg(self.background)

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

        check = check_frame(self.engine, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
        if not check.ok or check.aligned is None:
            return False
        emb = self.engine.embed_aligned(check.aligned)
        sims = {k: float(np.dot(emb, v)) for k, v in enrolled.items()}
        if own is not None and sims.get(own, -1.0) < GENUINE_MIN:
            return False
        return all(s < IMPOSTOR_MAX for k, s in sims.items() if k != own)

    def _modified_frames(self, crop: np.ndarray, own: str | None, enrolled: dict[str, np.ndarray],
                         scale: tuple[float, float] = (1.0, 1.7)) -> list[bytes]:
        out: list[bytes] = []
        for _ in range(self.n * 4):
            if len(out) >= self.n:
                break
            s = float(self.rng.uniform(*scale))
            img = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
            img = cv2.convertScaleAbs(img, alpha=float(self.rng.uniform(0.75, 1.25)),
                                      beta=float(self.rng.uniform(-30, 30)))
            jpeg = _jpeg(self._place(img, int(self.rng.uniform(-350, 350)), int(self.rng.uniform(-100, 60))))
            if self._fits(jpeg, own, enrolled):
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
            scale = min(CANVAS_W / img.shape[1], CANVAS_H / img.shape[0], 1.0)
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            jpeg = _jpeg(self._place(img, 0, 0))
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
        raise DemoError("could not encode a frame")
    return bytes(buf.tobytes())


# ---------------------------------------------------------------------------- processes


class Proc:
    """A child process whose output lines go to a log file and to ``on_line(stream, line)``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path,
                 on_line: Callable[[str, str], None] | None = None) -> None:
        self.name = name
        self.on_line = on_line
        self._log: IO[str] = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in wait)
        self._log_lock = threading.Lock()
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                                      text=True, encoding="utf-8", errors="replace", bufsize=1,
                                      start_new_session=True)  # Ctrl-C reaches the demo only
        self.pid = self.popen.pid
        self._readers = [threading.Thread(target=self._pump, args=(s, n), daemon=True, name=f"{name}-{n}")
                         for s, n in ((self.popen.stdout, "stdout"), (self.popen.stderr, "stderr"))]
        for t in self._readers:
            t.start()

    def _pump(self, stream: IO[str] | None, which: str) -> None:
        assert stream is not None
        for raw in stream:
            line = raw.rstrip("\n")
            with self._log_lock:
                if not self._log.closed:
                    self._log.write(f"[stdout] {line}\n" if which == "stdout" else f"{line}\n")
                    self._log.flush()
            if self.on_line is not None:
                try:
                    self.on_line(which, line)
                except Exception as exc:  # a parsing bug must not stop the pipe from draining
                    with self._log_lock:
                        self._log.write(f"# demo: could not parse line: {exc!r}\n")

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> str:
        """SIGTERM, then SIGKILL after ``timeout``; returns how it ended ("stopped by SIGTERM"
        means it exited with status 0 after SIGTERM, within the timeout)."""
        how = f"had exited (status {self.popen.poll()})"
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                code = self.popen.wait(timeout)
                how = "stopped by SIGTERM" if code == 0 else f"exited with status {code} after SIGTERM"
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
                how = f"KILLED: still running {timeout:.0f}s after SIGTERM"
        for t in self._readers:
            t.join(timeout=5)
        with self._log_lock:
            self._log.close()
        return how


@dataclass(frozen=True)
class Seen:
    """One decision as an agent printed it, and who the demo put in front of the door."""

    door: str
    result: str
    reason: str
    credential: str
    person_id: str
    similarity: float | None
    version: int | None
    latency_ms: float | None
    at: float
    shown: str = ""
    note: str = ""
    ok: bool = True


def _message(line: str) -> str:
    """The log message of a text or JSON log line."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(line).get("message", line))
    return line


def _details(text: str) -> tuple[float | None, int | None, float | None]:
    sim = re.search(r"similarity (-?[\d.]+)", text)
    ver = re.search(r"version (\d+)", text)
    ms = re.search(r"([\d.]+) ms", text)
    return (float(sim[1]) if sim else None, int(ver[1]) if ver else None, float(ms[1]) if ms else None)


class Door:
    """The demo's side of one door agent: its folders, its process and what it printed."""

    def __init__(self, name: str, work: Path) -> None:
        self.name = name
        self.data = work / "doors" / name
        self.camera = work / "cameras" / name
        self.camera.mkdir(parents=True)
        self.card_reader = work / "cameras" / f"{name}.cards"
        os.mkfifo(self.card_reader, 0o600)
        self.proc: Proc | None = None
        self.events: queue.Queue[Seen] = queue.Queue()
        self.decisions: list[Seen] = []
        self.stdout_grants = 0
        self.threads_died: list[str] = []  # "Exception in thread X" in its output: a worker is gone
        self.version = 0
        self.link = "direct"
        self.loop_stats: dict[str, Any] = {}
        self.started_at = 0.0
        self.first_view_at: float | None = None
        self._cond = threading.Condition()
        self._frame_no = 0

    def on_line(self, stream: str, line: str) -> None:
        msg = _message(line)
        if stream == "stdout":
            if SUCCESS in msg:
                self.stdout_grants += 1
            return
        if m := GALLERY_RE.search(msg):
            with self._cond:
                self.version = int(m[2])
                if self.first_view_at is None:
                    self.first_view_at = time.monotonic()
                self._cond.notify_all()
        elif m := GRANT_RE.search(msg):
            sim, ver, ms = _details(m["details"])
            self.events.put(Seen(m["door"], "granted", "ok", m["cred"], m["person"], sim, ver, ms,
                                 time.monotonic()))
        elif m := REFUSE_RE.search(msg):
            sim, ver, ms = _details(m["details"])
            self.events.put(Seen(m["door"], m["result"], m["reason"], m["cred"], m["person"] or "", sim, ver,
                                 ms, time.monotonic()))
        elif m := THREAD_DIED_RE.search(msg):
            self.threads_died.append(m[1])
        elif m := LOOP_RE.search(msg):
            self.loop_stats = {"frames": int(m[2]), "decisions": ast.literal_eval(m[3]),
                               "p50_ms": _num(m[4]), "p99_ms": _num(m[5])}

    def wait_version(self, version: int, timeout: float, alive: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.version < version:
                left = deadline - time.monotonic()
                if left <= 0 or not alive():
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def swipe(self, card: str, timeout: float = 10.0) -> None:
        """Hold a card to the reader: one line into the agent's card-reader FIFO."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.card_reader, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO: the agent is between two opens of its reader
                if time.monotonic() > deadline:
                    raise DemoError(f"{self.name}'s card reader is not being read") from None
                time.sleep(0.05)
        try:
            os.write(fd, f"{card}\n".encode())
        finally:
            os.close(fd)

    def drop(self, tag: str, jpeg: bytes) -> None:
        """Put a frame in front of the camera: written as a dotfile, renamed into place."""
        self._frame_no += 1
        name = f"{self._frame_no:06d}-{tag}.jpg"
        tmp = self.camera / f".{name}.part"
        tmp.write_bytes(jpeg)
        os.replace(tmp, self.camera / name)


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------- the demo


@dataclass
class Check:
    step: int
    what: str
    ok: bool


class Demo:
    def __init__(self, work: Path, console: Console, quick: bool) -> None:
        self.work = work
        self.console = console
        self.quick = quick
        self.pace = 0.0 if quick else 0.6  # pauses a human can follow; --quick drops them
        self.port = _free_port()
        self.hub_address = f"127.0.0.1:{self.port}"
        self.hub: Proc | None = None
        self.hub_up = False
        self.proxy: LinkProxy | None = None
        self.doors = {name: Door(name, work) for name in DOORS}
        self.cast: list[Member] = []
        self.labels: dict[str, str] = {}  # person id -> display label (agents know no names)
        self.checks: list[Check] = []
        self.timings: dict[str, Any] = {}
        self.seen: list[Seen] = []
        self.step_no = 0
        self.step_title = "starting"
        self.activity = ""
        self.activity_since = time.monotonic()
        self.started = time.monotonic()
        self.faces_dir = find_faces_dir()
        self.blank = b""  # the empty door frame (JPEG)
        self.target_version = 0  # the version every door must reach after the outage
        self.final_status: dict[str, dict[str, Any]] = {}
        self.uploaded: Counter[str] = Counter()
        (work / "logs").mkdir()
        self._cmdlog = work / "logs" / "commands.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOORKEEPER_")}
        env.update(DOORKEEPER_HUB=self.hub_address,
                   DOORKEEPER_OPERATOR_KEY=str(work / "hub" / "operator.key"),
                   PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.env = env
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task("starting", total=STEPS)

    # ------------------------------------------------------------------ plumbing
    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)  # a line stays one line in logs

    def busy(self, text: str) -> None:
        self.activity, self.activity_since = text, time.monotonic()

    def step(self, n: int, title: str) -> None:
        self.step_no, self.step_title = n, title
        self.progress.update(self.task, description=f"step {n}/{STEPS}: {title}", completed=n - 1)
        self.console.rule(f"[bold cyan]Step {n}/{STEPS} · {escape(title)}", align="left")

    def expect(self, ok: bool, what: str, failed: str | None = None) -> bool:
        """Record and show one expectation: ``what`` when it held, ``failed`` (or ``what``) if not."""
        text = what if ok or failed is None else failed
        self.checks.append(Check(self.step_no, text, ok))
        mark = "[green]✓[/]" if ok else "[bold red]✗ FAILED:[/]"
        self.say(f"  {mark} {escape(text)}")
        return ok

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.work)) if path.is_relative_to(self.work) else str(path)

    def spawn(self, name: str, *args: str | Path, on_line: Callable[[str, str], None] | None = None) -> Proc:
        """Start a long-running `doorkeeper ARGS` process (logged to logs/NAME.log)."""
        shown = "doorkeeper " + " ".join(self.rel(a) if isinstance(a, Path) else a for a in args)
        with open(self._cmdlog, "a", encoding="utf-8") as f:
            f.write(f"$ {shown} &   # output in logs/{name}.log\n")
        argv = [sys.executable, "-m", "doorkeeper.tools.cli", *map(str, args)]
        return Proc(name, argv, self.env, self.work, self.work / "logs" / f"{name}.log", on_line)

    def cli(self, *args: str | Path, check: bool = True,
            timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        """Run `doorkeeper ARGS` as its own process (absolute paths; shown relative)."""
        argv = [str(a) for a in args]
        shown = "doorkeeper " + " ".join(self.rel(a) if isinstance(a, Path) else a for a in args)
        self.busy(f"$ {shown}")
        result = subprocess.run([sys.executable, "-m", "doorkeeper.tools.cli", *argv], env=self.env,
                                cwd=self.work, capture_output=True, text=True, timeout=timeout, check=False)
        with open(self._cmdlog, "a", encoding="utf-8") as f:
            f.write(f"$ {shown}\n{result.stdout}{result.stderr}# exit {result.returncode}\n")
        if check and result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise DemoError(f"`{shown[:80]}` failed (exit {result.returncode}): {last}")
        return result

    def cli_json(self, *args: str | Path) -> Any:
        return json.loads(self.cli(*args).stdout)

    def last_line(self, result: subprocess.CompletedProcess[str]) -> str:
        lines = result.stdout.strip().splitlines()
        if not lines:
            raise DemoError(f"no output from `{' '.join(map(str, result.args[3:6]))}`")
        return lines[-1].strip()

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float,
             interval: float = 0.25) -> float | None:
        """Seconds until ``predicate()`` held, or None after ``timeout``."""
        self.busy(what)
        t0 = time.monotonic()
        while True:
            if predicate():
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(interval)

    def member(self, role: str, index: int = 0) -> Member:
        group = [m for m in self.cast if m.role == role]
        return group[index % len(group)]

    # ------------------------------------------------------------------ processes
    def start_hub(self) -> None:
        self.hub = self.spawn("hub", "hub", "serve", "--data", self.work / "hub",
                              "--listen", self.hub_address, "--beacon-interval", "2")
        listening = self.wait("waiting for the hub to listen",
                              lambda: _port_open(self.port) or not self.hub_proc.running, 30)
        if listening is None or not self.hub_proc.running:
            raise DemoError(f"the hub did not start on {self.hub_address} (see logs/hub.log)")
        self.hub_up = True

    @property
    def hub_proc(self) -> Proc:
        assert self.hub is not None
        return self.hub

    def start_agent(self, door: Door) -> None:
        door.started_at = time.monotonic()
        door.proc = self.spawn(door.name, "agent", "run", "--data", door.data,
                               "--camera", f"hotfolder:{door.camera}", "--door", "sim",
                               "--card-reader", door.card_reader, "--poll-interval", "2",
                               "--heartbeat-interval", "2", "--upload-interval", "2", on_line=door.on_line)

    def alive(self, door: Door) -> Callable[[], bool]:
        return lambda: door.proc is not None and door.proc.running

    def present(self, door_name: str, who: Member, want: str, note: str = "") -> Seen | None:
        """Two frames of ``who`` then an empty frame (or their card on the reader); returns
        the door's decision and checks it against ``want`` (granted to them, or refused)."""
        door = self.doors[door_name]
        while not door.events.empty():  # a decision nobody asked for: show it, do not count it
            stray = door.events.get_nowait()
            self.say(f"  [yellow]unexpected decision at {door_name}: {stray.result}[/]")
        if who.card:
            door.swipe(who.card)
        else:
            for jpeg in who.next_frames(2):
                door.drop(who.key, jpeg)
            door.drop("empty", self.blank)
        self.busy(f"{who.label} at {door_name}")
        timeout = 30.0
        deadline = time.monotonic() + timeout
        got: Seen | None = None
        while got is None and time.monotonic() < deadline:
            try:
                got = door.events.get(timeout=0.5)
            except queue.Empty:
                if not self.alive(door)():
                    break
        if got is None:
            self.expect(False, f"{door_name} decided nothing for {who.label} within {timeout:.0f}s")
            return None
        if want == "granted":
            ok = got.result == "granted" and got.person_id == who.person_id
        else:
            ok = got.result != "granted"
        seen = Seen(got.door, got.result, got.reason, got.credential, got.person_id, got.similarity,
                    got.version, got.latency_ms, got.at, who.label, note, ok)
        door.decisions.append(seen)
        self.seen.append(seen)
        said = self.labels.get(seen.person_id, "no match") if seen.result == "granted" else seen.reason
        colour = "green" if seen.result == "granted" else "red"
        sim = f"{seen.similarity:.2f}" if seen.similarity is not None else "-"
        lat = f"{seen.latency_ms:.0f} ms" if seen.latency_ms is not None else "-"
        mark = "[green]✓[/]" if ok else "[bold red]✗ FAILED (expected " + want + ")[/]"
        self.say(f"  {mark} {door_name}  {escape(who.label):<30} → [{colour}]{seen.result.upper():<7}[/] "
                 f"{escape(said):<16} sim {sim}  {lat:>6}  v{seen.version}  [dim]{escape(note)}[/]")
        self.checks.append(Check(self.step_no, f"{door_name}: {who.label} {want} ({note or 'decision'})", ok))
        if self.pace:
            time.sleep(self.pace)
        return seen

    def connected_apply(self, version: int, changed: float, why: str, timeout: float = 20.0) -> float:
        """Wait for door-1 and door-2 to decide on ``version``; the slower one's delay."""
        waits = []
        for name in ("door-1", "door-2"):
            door = self.doors[name]
            self.busy(f"waiting for {name} to apply v{version}")
            left = max(0.0, changed + timeout - time.monotonic())  # one deadline for both doors
            ok = door.wait_version(version, left, self.alive(door))
            waits.append(time.monotonic() - changed)
            self.expect(ok, f"{name} applied v{version} {waits[-1]:.1f}s after the change{why}",
                        f"{name} did not apply v{version} within {timeout:.0f}s of the change "
                        f"(still v{door.version}; logs/{name}.log)")
        return round(max(waits), 2)

    def statuses(self) -> dict[str, dict[str, Any]]:
        """`agent status --json` of every door, in parallel (reads the door's own files)."""
        def one(name: str) -> tuple[str, dict[str, Any]]:
            return name, self.cli_json("agent", "status", "--data", self.doors[name].data, "--json",
                                       "--timeout", "2")
        with ThreadPoolExecutor(len(DOORS)) as pool:
            return dict(pool.map(one, DOORS))

    def site(self) -> dict[str, Any]:
        rows = self.cli_json("site", "list", "--json")
        for row in rows:
            if row["name"] == SITE:
                return dict(row)
        raise DemoError(f"site {SITE} not in `site list`")

    def fleet(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in self.cli_json("fleet", "--site", SITE, "--json")}

    def status_table(self, statuses: dict[str, dict[str, Any]], site: dict[str, Any] | None) -> None:
        table = Table("door", "talks to", "hub reachable", "whitelist", "persons", "state digest",
                      "same as hub", title="agent status --json" + (" vs site list --json" if site else ""))
        for name, s in statuses.items():
            same = "-"
            if site is not None:
                ok = s["version"] == site["version"] and s["state_digest"] == site["state_digest"]
                same = "[green]yes[/]" if ok else "[red]no[/]"
            table.add_row(name, s["hub"] + (" (proxy)" if name == PROXIED else ""),
                          "[green]yes[/]" if s["hub_reachable"] else "[red]NO (offline)[/]",
                          f"v{s['version']}", str(s["persons"]), s["state_digest"][:16], same)
        if site is not None:
            table.add_row("[bold]hub", self.hub_address, "-", f"v{site['version']}", str(site["persons"]),
                          site["state_digest"][:16], "")
        self.console.print(table)

    # ------------------------------------------------------------------ the story
    def run(self) -> None:
        self.setup()
        self.enrol()
        self.verify()
        self.link()
        self.cut_and_change()
        self.hub_outage()
        self.restore()
        self.logs()
        self.shutdown()

    def setup(self) -> None:
        self.step(1, "hub, site, doors and residents")
        t0 = time.monotonic()
        self.cli("hub", "init", "--data", self.work / "hub")
        self.start_hub()
        self.say(f"  hub serving on {self.hub_address} (process {self.hub_proc.pid}, SQLite in hub/)")
        self.cli("site", "add", SITE)
        self.cli("site", "owner-key", "--site", SITE, "--out", self.work / "owner.key")
        self.say("  site [bold]oak[/] created; the data owner's log key pair is owner.key "
                 "(private, kept off the hub)")
        self.proxy = LinkProxy(self.hub_address).start()
        self.doors[PROXIED].link = "proxy"

        def register(name: str) -> None:
            token = self.last_line(self.cli("device", "add", "--site", SITE, "--name", name))
            address = self.proxy.address if name == PROXIED and self.proxy else self.hub_address
            self.cli("agent", "init", "--data", self.doors[name].data, "--token", token, "--hub", address)

        with ThreadPoolExecutor(len(DOORS)) as pool:
            list(pool.map(register, DOORS))
        self.say(f"  3 doors registered with one-time tokens; {PROXIED} through the demo's TCP proxy "
                 f"{self.proxy.address}")
        self.timings["setup_s"] = round(time.monotonic() - t0, 2)

    def enrol(self) -> None:
        self.busy("cropping faces, preparing door frames")
        t0 = time.monotonic()
        builder = CastBuilder(self.work, frames_per_member=3 if self.quick else 5)
        self.cast, notes = builder.build(self.faces_dir)
        self.blank = builder.blank_frame()
        del builder  # the demo's own face engine is not needed any more
        self.timings["cast_preparation_s"] = round(time.monotonic() - t0, 2)
        self.cast.append(Member("card", "Cleaner (card only)", "cardholder", "card 40123456, no face scan",
                                "-", card="40123456"))
        table = Table("who", "role", title="cast")
        table.add_column("enrolled from", overflow="fold")
        table.add_column("door frames", overflow="fold")
        for m in self.cast:
            role = {"newcomer": "added in step 4", "cardholder": "added in step 5"}.get(m.role, m.role)
            table.add_row(m.label, role, m.origin, f"{len(m.frames)} · {m.frames_from}" if m.frames else "-")
        self.console.print(table)
        for note in notes:
            self.say(f"  [yellow]note:[/] {escape(note)}")
        self.say(f"  photos and frames live only in {self.work}/photos and cameras/, never in the repository")
        residents = [m for m in self.cast if m.role == "resident"]
        t0 = time.monotonic()

        def add(m: Member) -> None:
            assert m.photo is not None
            m.person_id = self.last_line(self.cli("person", "add", "--site", SITE, "--name", m.label,
                                                  "--photo", m.photo))
            self.labels[m.person_id] = m.label

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(add, residents))
        took = time.monotonic() - t0
        self.timings["enrolment_s"] = round(took, 2)
        self.timings["enrolment_persons"] = len(residents)
        self.say(f"  enrolled {len(residents)} residents with `person add --photo` in {took:.1f}s "
                 "(templates computed here; photos never leave this machine)")
        self.expect(all(m.person_id for m in residents), "every resident has a person id")

    def verify(self) -> None:
        self.step(2, "three doors start and verify faces")
        site = self.site()
        for door in self.doors.values():
            self.start_agent(door)
        for door in self.doors.values():
            ok = door.wait_version(site["version"], 60, self.alive(door))
            self.expect(ok, f"{door.name} loaded whitelist v{site['version']} ({site['persons']} persons)",
                        f"{door.name} did not load whitelist v{site['version']} within 60s "
                        f"(logs/{door.name}.log)")
        firsts = {d.name: round((d.first_view_at or time.monotonic()) - d.started_at, 2)
                  for d in self.doors.values()}
        self.timings["first_sync_s"] = max(firsts.values())
        self.timings["first_sync_per_door_s"] = firsts
        per_door = ", ".join(f"{k} {v:.1f}s" for k, v in firsts.items())
        self.say(f"  agent start → first whitelist applied: {per_door} (includes loading the face models)")
        x, r1, r2 = self.member("resident", 0), self.member("resident", 1), self.member("resident", 2)
        s1, s2 = self.member("stranger", 0), self.member("stranger", 1)
        self.present("door-1", x, "granted")
        self.present("door-1", s1, "refused", "not enrolled")
        self.present("door-2", r1, "granted")
        self.present("door-2", s2, "refused", "not enrolled")
        self.present("door-3", x, "granted", "via proxy")
        self.present("door-3", r2, "granted", "via proxy")

    def link(self) -> None:
        self.step(3, "door-3's link runs through a proxy the demo controls")
        assert self.proxy is not None
        st = self.statuses()
        self.status_table(st, self.site())
        self.expect(st[PROXIED]["hub"] == self.proxy.address,
                    f"{PROXIED} knows the hub as {self.proxy.address}")
        self.expect(all(s["hub_reachable"] for s in st.values()), "every door reaches the hub")
        self.expect(self.proxy.live_connections > 0,
                    f"{PROXIED} holds {self.proxy.live_connections} live connection(s) through the proxy")

    def cut_and_change(self) -> None:
        self.step(4, f"cut {PROXIED}'s link; revoke a resident and add one at the hub")
        assert self.proxy is not None
        old = self.site()
        n = self.proxy.cut()
        self.doors[PROXIED].link = "CUT"
        self.say(f"  [bold red]link cut[/]: {n} live connection(s) reset; new ones refused")
        x, newcomer = self.member("resident", 0), self.member("newcomer")
        assert newcomer.photo is not None
        self.cli("person", "remove", x.person_id)
        self.say(f"  revoked {x.label} (`person remove`)")
        newcomer.person_id = self.last_line(self.cli("person", "add", "--site", SITE,
                                                     "--name", newcomer.label, "--photo", newcomer.photo))
        self.labels[newcomer.person_id] = newcomer.label
        changed = time.monotonic()
        site = self.site()
        self.target_version = site["version"]
        self.say(f"  added {newcomer.label} (`person add --photo`); "
                 f"site oak v{old['version']} → v{site['version']}")
        self.timings["propagation_s"] = self.connected_apply(site["version"], changed, "")
        st = self.statuses()
        self.status_table(st, site)
        self.expect(not st[PROXIED]["hub_reachable"], f"{PROXIED} says the hub is unreachable (offline)")
        self.expect(st[PROXIED]["version"] == old["version"],
                    f"{PROXIED} keeps its last whitelist v{st[PROXIED]['version']}")
        fleet = self.fleet()
        self.expect(not fleet[PROXIED]["in_sync"] and all(fleet[d]["in_sync"] for d in ("door-1", "door-2")),
                    f"`fleet` (what doors reported): door-1/2 in sync at v{site['version']}, "
                    f"{PROXIED} still reports v{fleet[PROXIED]['reported_version']}")
        self.present("door-1", x, "refused", "revoked")
        self.present("door-2", newcomer, "granted", "newly added")
        self.present("door-3", x, "granted", "OFFLINE: last whitelist still admits the revoked resident")
        self.present("door-3", newcomer, "refused", "OFFLINE: does not know the newcomer yet")

    def hub_outage(self) -> None:
        self.step(5, "stop the hub; doors keep deciding; restart it; one more change")
        t0 = time.monotonic()
        how = self.hub_proc.stop(timeout=20)
        self.hub_up = False
        self.timings["hub_stop_s"] = round(time.monotonic() - t0, 2)
        self.expect(how == "stopped by SIGTERM", f"hub {how} in {self.timings['hub_stop_s']:.1f}s "
                    "(graceful: in-flight calls finish)")
        down = time.monotonic()
        self.present("door-1", self.member("resident", 1), "granted", "hub down")
        self.present("door-2", self.member("stranger", 0), "refused", "hub down")
        self.present("door-3", self.member("resident", 2), "granted", "hub down, link cut")
        st = self.cli_json("agent", "status", "--data", self.doors["door-1"].data, "--json", "--timeout", "1")
        self.expect(not st["hub_reachable"], "door-1 says the hub is unreachable while it is down")
        self.timings["hub_down_s"] = round(time.monotonic() - down, 2)
        restart_wall = time.time()
        t0 = time.monotonic()
        self.start_hub()
        self.say(f"  hub restarted (process {self.hub_proc.pid}) on the same address and database")
        since = math.ceil(restart_wall)

        def back() -> bool:
            f = self.fleet()
            return all(f[d]["last_seen"] >= since and f[d]["in_sync"] for d in ("door-1", "door-2"))

        took = self.wait("waiting for door-1 and door-2 to report to the new hub process", back, 45, 0.5)
        self.expect(took is not None, "door-1 and door-2 reported in sync to the restarted hub"
                    + (f" {time.monotonic() - t0:.1f}s after the restart" if took is not None else ""))
        self.timings["hub_reconnect_s"] = round(time.monotonic() - t0, 2)
        card = self.member("cardholder")
        card.person_id = self.last_line(self.cli("person", "add", "--site", SITE, "--name", card.label,
                                                 "--card", card.card))
        self.labels[card.person_id] = card.label
        changed = time.monotonic()
        site = self.site()
        self.target_version = site["version"]
        self.say(f"  added {card.label} (`person add --card`, no photo); site oak now v{site['version']}")
        self.timings["propagation_after_restart_s"] = self.connected_apply(
            site["version"], changed, " (its sync survived the hub restart)")
        self.present("door-1", card, "granted", "card; declined face scanning")
        self.present("door-3", card, "refused", "OFFLINE: card not on its whitelist yet")

    def restore(self) -> None:
        self.step(6, f"restore {PROXIED}'s link; every door converges")
        assert self.proxy is not None
        self.proxy.restore()
        self.doors[PROXIED].link = "proxy"
        t0 = time.monotonic()
        self.busy(f"waiting for {PROXIED} to catch up")
        ok = self.doors[PROXIED].wait_version(self.target_version, 45, self.alive(self.doors[PROXIED]))
        took = time.monotonic() - t0
        self.timings["convergence_after_outage_s"] = round(took, 2)
        self.expect(ok, f"{PROXIED} applied v{self.target_version} {took:.1f}s after the link came back",
                    f"{PROXIED} did not apply v{self.target_version} within 45s of the link coming back "
                    f"(still v{self.doors[PROXIED].version}; logs/{PROXIED}.log)")
        if ok:
            self.wait("waiting for every door to report in sync",
                      lambda: all(r["in_sync"] for r in self.fleet().values()), 30, 0.5)
        site = self.site()
        st = self.statuses()
        self.final_status = st
        self.status_table(st, site)
        for name, s in st.items():
            held = f"v{s['version']}, digest {s['state_digest'][:12]}"
            self.expect(s["version"] == site["version"] and s["state_digest"] == site["state_digest"]
                        and s["hub_reachable"], f"{name}: {held} = the hub's",
                        f"{name} holds {held}, the hub v{site['version']}, "
                        f"digest {site['state_digest'][:12]}")
        self.present("door-3", self.member("resident", 0), "refused", "revocation arrived")
        self.present("door-3", self.member("newcomer"), "granted", "newcomer arrived")
        self.present("door-3", self.member("cardholder"), "granted", "card holder arrived")

    def logs(self) -> None:
        self.step(7, "entry logs: upload, pull, decrypt and verify with the owner key")
        last = max(s.at for s in self.seen)
        want = {name: len(d.decisions) for name, d in self.doors.items()}

        def uploaded() -> bool:
            f = self.fleet()
            return all(f[name]["logs_watermark"] >= n for name, n in want.items())

        took = self.wait("waiting for the doors to upload their entry logs", uploaded, 45, 0.5)
        self.timings["upload_s"] = round(time.monotonic() - last, 2)
        self.expect(took is not None, f"the hub holds every door's records ({sum(want.values())}) "
                    f"{self.timings['upload_s']:.1f}s after the last decision")
        export = self.work / "oak.dklogs"
        t0 = time.monotonic()
        self.cli("logs", "pull", "--site", SITE, "--out", export)
        owner = self.work / "owner.key"
        rows = json.loads(self.cli("logs", "decrypt", "--owner-key", owner, export, "--json").stdout)
        verify = self.cli("logs", "verify", "--owner-key", self.work / "owner.key", export, check=False)
        self.timings["logs_pull_decrypt_verify_s"] = round(time.monotonic() - t0, 2)
        names = {d: n for n, d in ((n, s["device_id"]) for n, s in self.final_status.items())}
        door3 = [r for r in rows if names.get(r["device_id"]) == PROXIED]
        title = (f"logs decrypt --owner-key owner.key oak.dklogs: {len(rows)} entries, "
                 f"{PROXIED}'s {len(door3)} shown")
        table = Table("door", "seq", "decision", "credential", "person (owner's view)", "similarity",
                      "whitelist", "reason", title=title)
        for r in sorted(door3, key=lambda r: int(r["seq"])):
            table.add_row(names.get(r["device_id"], r["device_id"][:8]), str(r["seq"]), r["decision"],
                          r["credential"], self.labels.get(r["person_id"], "-"), f"{r['similarity']:.2f}",
                          f"v{r['whitelist_version']}", r["reason"])
        self.console.print(table)
        for line in verify.stdout.strip().splitlines():
            device = line.split(" device ")[-1].split(" ")[0] if " device " in line else ""
            self.say(f"  {escape(line.replace(device, names.get(device, device)) if device else line)}")
        self.uploaded = Counter(names.get(r["device_id"], "?") for r in rows)
        logged = Counter((names.get(r["device_id"], "?"), r["decision"], r["person_id"]) for r in rows)
        shown = Counter((s.door, s.result, s.person_id) for s in self.seen)
        self.expect(logged == shown,
                    f"the owner's log has exactly the {len(self.seen)} decisions the doors printed",
                    f"the owner's log ({len(rows)} entries) differs from what the doors printed "
                    f"({len(self.seen)} decisions)")
        gaps = [ln for ln in verify.stdout.splitlines() if not ln.endswith(" 0 gaps")]
        self.expect(verify.returncode == 0 and not gaps and verify.stdout.count("OK device") == len(DOORS),
                    "logs verify: every chain OK, 0 gaps")

    def shutdown(self) -> None:
        self.step(8, "stop everything; summary")
        self.stop_all(report=True)

    def stop_all(self, report: bool = False) -> None:
        """Agents first (their final upload needs the hub), then the hub, then the proxy."""
        doors = [d for d in self.doors.values() if d.proc is not None]
        with ThreadPoolExecutor(max(1, len(doors))) as pool:
            hows = dict(zip([d.name for d in doors], pool.map(lambda d: d.proc.stop(15), doors), strict=True))
        hub_how = self.hub.stop(20) if self.hub is not None else "not started"
        self.hub_up = False
        if self.proxy is not None:
            self.proxy.close()
        if report:
            for name, how in hows.items():
                self.expect(how == "stopped by SIGTERM", f"{name} {how}")
            self.expect(hub_how == "stopped by SIGTERM", f"hub {hub_how}")
            for d in doors:
                self.expect(d.stdout_grants == sum(1 for s in d.decisions if s.result == "granted"),
                            f"{d.name} printed {d.stdout_grants} '{SUCCESS}' lines, one per grant")
                self.expect(not d.threads_died, f"{d.name}: no agent thread died",
                            f"{d.name}: agent thread(s) {', '.join(d.threads_died)} died with an "
                            f"exception (traceback in logs/{d.name}.log)")

    # ------------------------------------------------------------------ display
    def render(self) -> RenderableType:
        table = Table("door", "link", "whitelist", "in front of the door", "door says", "similarity",
                      "latency", "granted", "refused")
        for name, d in self.doors.items():
            last = d.decisions[-1] if d.decisions else None
            link = d.link if self.hub_up else f"{d.link}, hub down"
            link_style = "red" if "CUT" in link or "down" in link else "green"
            said = "-"
            if last is not None:
                said = (f"[green]GRANTED {escape(self.labels.get(last.person_id, ''))}[/]"
                        if last.result == "granted" else f"[red]{last.result.upper()}[/]")
            sim = f"{last.similarity:.2f}" if last and last.similarity is not None else "-"
            lat = f"{last.latency_ms:.0f} ms" if last and last.latency_ms is not None else "-"
            table.add_row(name, f"[{link_style}]{link}[/]", f"v{d.version}",
                          escape(last.shown) if last else "-", said, sim, lat,
                          str(sum(1 for s in d.decisions if s.result == "granted")),
                          str(sum(1 for s in d.decisions if s.result != "granted")))
        activity = Text(f"  {self.activity}  ({time.monotonic() - self.activity_since:.1f}s)", style="dim")
        return Group(self.progress, activity, table)

    def summary(self) -> None:
        self.progress.update(self.task, completed=STEPS)
        table = Table("door", "link", "version", "digest", "granted", "denied", "unknown", "logs uploaded",
                      "loop p50 / p99", title="summary")
        for name, d in self.doors.items():
            st = self.final_status.get(name, {})
            results = Counter(s.result for s in d.decisions)
            loop = d.loop_stats
            table.add_row(name, "proxy" if name == PROXIED else "direct", f"v{st.get('version', d.version)}",
                          st.get("state_digest", "")[:12], str(results["granted"]), str(results["denied"]),
                          str(results["unknown"]), str(self.uploaded[name]),
                          f"{loop.get('p50_ms')} / {loop.get('p99_ms')} ms" if loop else "-")
        self.console.print(table)
        lat = sorted(s.latency_ms for s in self.seen if s.latency_ms is not None and s.credential == "face")
        if lat:
            self.timings["verify_latency_p50_ms"] = round(statistics.median(lat), 1)
            self.timings["verify_latency_max_ms"] = round(lat[-1], 1)
        loops = [d.loop_stats.get("p50_ms") for d in self.doors.values() if d.loop_stats]
        self.timings["loop_frame_p50_ms"] = [x for x in loops if x is not None]
        self.timings["decisions"] = len(self.seen)
        self.timings["total_s"] = round(time.monotonic() - self.started, 1)
        t = Table("timing", "value", title="timings")
        labels = [
            ("enrolment_s", "enrolment (`person add --photo`, parallel)", "s"),
            ("first_sync_s", "agent start → first whitelist applied (slowest door)", "s"),
            ("verify_latency_p50_ms", "verification latency p50 (frame → decision)", "ms"),
            ("propagation_s", "whitelist change → connected doors applied", "s"),
            ("hub_stop_s", "hub graceful stop", "s"),
            ("hub_reconnect_s", "hub restart → doors reporting in sync", "s"),
            ("propagation_after_restart_s", "change after the restart → connected doors applied", "s"),
            ("convergence_after_outage_s", f"{PROXIED} link restored → converged", "s"),
            ("upload_s", "last decision → every entry log at the hub", "s"),
            ("logs_pull_decrypt_verify_s", "logs pull + decrypt + verify", "s"),
            ("total_s", "whole demo", "s"),
        ]
        for key, label, unit in labels:
            if key in self.timings:
                t.add_row(label, f"{self.timings[key]} {unit}")
        self.console.print(t)


def _sweep(work: Path) -> list[str]:
    """Processes whose command line or working directory is inside ``work``: ours, left over.
    Only descendants of this process are killed; any other match is only reported."""
    me = psutil.Process()
    mine = {p.pid for p in me.children(recursive=True)}
    left: list[str] = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if p.pid == me.pid:
            continue
        cmdline = " ".join(p.info.get("cmdline") or [])
        if str(work) in cmdline or (p.info.get("cwd") or "").startswith(str(work)):
            left.append(f"{p.pid}: {cmdline[:120]}")
            if p.pid in mine:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
    return left


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM to the demo unwinds like Ctrl-C, so its children are stopped too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command()
@click.option("--keep", is_flag=True,
              help="Keep the demo directory (logs, databases, frames) and print its path.")
@click.option("--quick", is_flag=True, help="No pauses and fewer frames (the same steps; for CI).")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run in this (new or empty) directory instead of a temporary one.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the timings as JSON on stdout (the show goes to stderr).")
def demo(keep: bool, quick: bool, work_dir: Path | None, as_json: bool) -> None:
    """The whole system live on loopback: a hub, three doors, residents, a cut link, a hub restart,
    convergence and the owner's logs. Exit status 0 only if every step's expectation held."""
    console = Console(stderr=as_json, highlight=False)
    if not console.is_terminal:
        console.width = 120  # a log file or CI: wide enough that the tables do not wrap
    created = False
    if work_dir is not None:
        work_dir = work_dir.resolve()
        if work_dir.exists() and any(work_dir.iterdir()):
            raise click.UsageError(f"--dir {work_dir} is not empty")
        created = not work_dir.exists()
        work_dir.mkdir(parents=True, exist_ok=True)
        work = work_dir
    else:
        work = Path(tempfile.mkdtemp(prefix="doorkeeper-demo-"))
        created = True
    console.print(f"[bold]doorkeeper demo[/] in {work}" + (" (quick)" if quick else ""))
    d = Demo(work, console, quick)
    error: str | None = None
    interrupted = False
    live = Live(console=console, get_renderable=d.render, refresh_per_second=4, transient=True) \
        if console.is_terminal else contextlib.nullcontext()
    with _terminate_as_interrupt():
        try:
            with live:
                try:
                    d.run()
                except DemoError as exc:
                    error = f"step {d.step_no} ({d.step_title}): {exc}"
                except subprocess.TimeoutExpired as exc:
                    error = f"step {d.step_no} ({d.step_title}): a command took over {exc.timeout:.0f}s"
                except Exception as exc:  # a bug in the demo itself: say where, keep the evidence
                    (work / "logs" / "demo-error.log").write_text(traceback.format_exc())
                    error = (f"step {d.step_no} ({d.step_title}): {type(exc).__name__}: {exc} "
                             "(traceback in logs/demo-error.log)")
                finally:
                    d.stop_all()
        except KeyboardInterrupt:
            interrupted = True
            d.stop_all()
            error = "interrupted"
    left = _sweep(work)
    d.step_no = STEPS
    if error is None:
        d.expect(not left, "no process left running" + (f": {', '.join(left)}" if left else ""))
        d.summary()
    elif left:
        console.print(f"[red]processes were left running and were killed: {left}[/]")
    failed = [c for c in d.checks if not c.ok]
    ok = error is None and not failed
    if as_json:
        click.echo(json.dumps({"ok": ok, "quick": quick, "faces_dir": str(d.faces_dir or ""),
                               "timings": d.timings, "error": error,
                               "failed": [f"step {c.step}: {c.what}" for c in failed],
                               "checks": len(d.checks)}, indent=2, sort_keys=True))
    if keep or not ok:
        console.print(f"demo directory kept: {work} (logs/ has every process's output and commands.log "
                      "every command)")
    else:
        if created:
            shutil.rmtree(work, ignore_errors=True)
        else:  # --dir was empty: leave it empty
            for child in work.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    if interrupted:
        console.print("[bold red]demo interrupted[/]; every process it started has been stopped")
    elif error is not None:
        console.print(f"[bold red]demo FAILED at {escape(error)}[/]")
    for c in failed:
        console.print(f"[bold red]demo FAILED: step {c.step}: {escape(c.what)}[/]")
    if ok:
        console.print(f"[bold green]demo OK[/]: {len(d.checks)} expectations held "
                      f"in {d.timings.get('total_s')}s")
    if interrupted:
        sys.exit(130)
    sys.exit(0 if ok else 1)
