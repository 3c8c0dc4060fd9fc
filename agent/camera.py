"""Camera sources for the verification loop: device, RTSP/HTTP stream, video file, image folder.

Contract shared by every source (see :class:`FrameSource`):

* ``read(timeout)`` returns the next good :class:`Frame`, or ``None`` when there is no new
  frame right now (or the source is finished). It never raises into the decision loop.
* Bad frames (empty, grayscale, 4-channel, enormous, wrong dtype, truncated or non-image file,
  a symlink leading out of the image folder) are skipped and counted per reason in
  ``bad_frames``; each reason is logged once when first seen and then only at 10, 100, 1000...
  occurrences, never once per frame.
* Live sources (device index, RTSP/HTTP) grab in a background thread that keeps only the newest
  frame, so a decision is never made on a stale buffered frame; frames replaced before anyone
  read them are counted in ``dropped``. A lost stream is reopened with exponential backoff,
  jitter and a cap (tenacity) until ``close()``.

Untrusted sizes are checked before decoding: image files are capped in bytes and their
PNG/JPEG header dimensions are checked before any pixel buffer is allocated.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np
import tenacity

log = logging.getLogger(__name__)

# TIFF is left out on purpose: its compressed strips can expand enormously and we cannot
# check its size cheaply before decoding. Every accepted format has its size checked first.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


class BadFrame(StrEnum):
    """Why a frame or image file was skipped; the keys of ``FrameSource.bad_frames``."""

    EMPTY = "empty"  # None, zero-size array, zero-byte file
    GRAYSCALE = "grayscale"  # 2-D or single channel
    FOUR_CHANNEL = "four_channel"  # BGRA / RGBA
    BAD_SHAPE = "bad_shape"  # any other channel count or rank
    TOO_LARGE = "too_large"  # over the pixel / side / file-size cap
    WRONG_DTYPE = "wrong_dtype"  # not uint8 (e.g. 16-bit PNG, float)
    TRUNCATED = "truncated"  # JPEG without EOI, PNG without IEND
    NOT_IMAGE = "not_image"  # content is not a known image format, or does not decode
    OUTSIDE_DIR = "outside_dir"  # symlink resolving outside the image folder
    UNREADABLE = "unreadable"  # OS error opening/reading the file, not a regular file


@dataclass(frozen=True)
class FrameLimits:
    """Caps applied to every frame; defaults allow 4K cameras and refuse anything over 16 MP."""

    max_width: int = 4096
    max_height: int = 4096
    max_pixels: int = 4096 * 4096
    max_file_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height", "max_pixels", "max_file_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"FrameLimits.{name} must be a positive int, got {value!r}")

    def size_ok(self, width: int, height: int) -> bool:
        """True when a width x height image is within the caps."""
        return (
            0 < width <= self.max_width
            and 0 < height <= self.max_height
            and width * height <= self.max_pixels
        )


@dataclass(frozen=True)
class Frame:
    """One good frame: BGR uint8 HxWx3 image plus when and where it was captured.

    ``monotonic`` is ``time.monotonic()`` at grab time (use it for ages and intervals: the wall
    clock of a terminal can be hours off after a power cut); ``wall`` is ``time.time()`` for
    records. ``seq`` counts good frames of this source from 1; a gap means frames were dropped.
    """

    image: np.ndarray
    monotonic: float
    wall: float
    source: str
    seq: int


@runtime_checkable
class FrameSource(Protocol):
    """What the verification loop uses; see the module docstring for the contract."""

    label: str

    @property
    def finished(self) -> bool: ...

    @property
    def frames(self) -> int: ...

    @property
    def bad_frames(self) -> Mapping[str, int]: ...

    @property
    def dropped(self) -> int: ...

    def read(self, timeout: float = 0.0) -> Frame | None: ...

    def close(self) -> None: ...


def check_image(image: Any, limits: FrameLimits) -> BadFrame | None:
    """Return why ``image`` is not a usable BGR uint8 HxWx3 frame, or None when it is."""
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        return BadFrame.EMPTY
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return BadFrame.GRAYSCALE
    if image.ndim != 3:
        return BadFrame.BAD_SHAPE
    if image.shape[2] == 4:
        return BadFrame.FOUR_CHANNEL
    if image.shape[2] != 3:
        return BadFrame.BAD_SHAPE
    if not limits.size_ok(int(image.shape[1]), int(image.shape[0])):
        return BadFrame.TOO_LARGE
    if image.dtype != np.uint8:
        return BadFrame.WRONG_DTYPE
    return None


# --- image file sniffing: cheap checks on the raw bytes, before decoding -----------------

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment of a JPEG, or None if not found."""
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        seg_len = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF_MARKERS and i + 9 <= n:
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        if seg_len < 2:
            return None
        i += 2 + seg_len
    return None


def _sniff(data: bytes, limits: FrameLimits) -> BadFrame | None:
    """Classify raw file bytes before decoding: format, truncation and header dimensions."""
    if not data:
        return BadFrame.EMPTY
    if data[:3] == b"\xff\xd8\xff":
        # A complete JPEG ends with EOI (FFD9); tolerate a little trailing padding that some
        # cameras append. cv2 would otherwise return a half-grey image or None.
        if b"\xff\xd9" not in data[-64:]:
            return BadFrame.TRUNCATED
        size = _jpeg_size(data)
        if size is not None and not limits.size_ok(*size):
            return BadFrame.TOO_LARGE
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return BadFrame.TRUNCATED
        width = int.from_bytes(data[16:20], "big")
        height = int.from_bytes(data[20:24], "big")
        if not limits.size_ok(width, height):
            return BadFrame.TOO_LARGE
        if b"IEND" not in data[-16:]:
            return BadFrame.TRUNCATED
        return None
    if data[:2] == b"BM":
        if len(data) < 26:
            return BadFrame.TRUNCATED
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = abs(int.from_bytes(data[22:26], "little", signed=True))  # negative = top-down
        return None if limits.size_ok(width, height) else BadFrame.TOO_LARGE
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp_size(data)
        if size is None:
            return BadFrame.TRUNCATED
        return None if limits.size_ok(*size) else BadFrame.TOO_LARGE
    return BadFrame.NOT_IMAGE


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP's first chunk header (VP8, VP8L or VP8X), or None."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                int.from_bytes(data[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


# --- shared counting ------------------------------------------------------------------


def redact_url(spec: str) -> str:
    """The URL with any password replaced, safe for labels and logs."""
    parts = urlsplit(spec)
    if parts.password is None:
        return spec
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass
class _Stats:
    label: str
    frames: int = 0
    dropped: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bad_frame(self, reason: BadFrame, detail: str = "") -> None:
        with self.lock:
            self.bad[reason.value] += 1
            count = self.bad[reason.value]
        # First occurrence, then 10, 100, 1000...: enough to notice, never a log flood.
        if count == 1 or (count >= 10 and str(count).rstrip("0") == "1"):
            log.warning(
                "camera %s: skipped bad frame (%s)%s; %d so far",
                self.label, reason.value, f": {detail}" if detail else "", count,
            )

    def summary(self) -> None:
        if self.bad:
            log.info("camera %s: %d frames, bad frames %s, dropped %d",
                     self.label, self.frames, dict(self.bad), self.dropped)


class _SourceBase:
    """Counters and the parts of the FrameSource protocol every source shares."""

    def __init__(self, label: str, limits: FrameLimits | None) -> None:
        self.label = label
        self.limits = limits or FrameLimits()
        self._stats = _Stats(label)
        self._finished = False

    @property
    def finished(self) -> bool:
        """True once the source will produce no more frames (end of file/folder, or closed)."""
        return self._finished

    @property
    def frames(self) -> int:
        """Good frames produced so far."""
        return self._stats.frames

    @property
    def bad_frames(self) -> Mapping[str, int]:
        """Copy of the skipped-frame counts by :class:`BadFrame` reason."""
        with self._stats.lock:
            return dict(self._stats.bad)

    @property
    def dropped(self) -> int:
        """Good frames replaced by a newer one before the loop read them (live sources)."""
        return self._stats.dropped

    def _make_frame(self, image: np.ndarray) -> Frame:
        self._stats.frames += 1
        return Frame(image=image, monotonic=time.monotonic(), wall=time.time(),
                     source=self.label, seq=self._stats.frames)

    def __enter__(self) -> _SourceBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]


# --- image directory ------------------------------------------------------------------


class ImageDirectorySource(_SourceBase):
    """Images of one folder in sorted name order; for tests, demos and replay.

    Only regular files with an image extension directly in the folder are considered (no
    recursion, dotfiles ignored). A symlink is followed only when it resolves inside the
    folder. ``loop`` restarts at the first file after the last; ``fps`` paces ``read`` so
    frames are not handed out faster than that (None = as fast as asked).

    ``watch`` makes it a *hot folder*: the source never finishes by itself; once the files
    present are read, the folder is listed again (every ``rescan_s`` while ``read`` waits)
    and files whose names sort after the last one read are played in name order. A file
    dropped with a name sorting before that is never played (counted in ``late_files``).
    Writers should write under a dotfile name and rename it into place, so that a
    half-written file is never read (one that is anyway is skipped as a bad frame).
    ``watch`` and ``loop`` exclude each other.
    """

    def __init__(self, directory: str | os.PathLike[str], *, loop: bool = False,
                 fps: float | None = None, limits: FrameLimits | None = None,
                 label: str | None = None, watch: bool = False, rescan_s: float = 0.05) -> None:
        root = Path(directory)
        super().__init__(label or f"{'hotfolder' if watch else 'dir'}:{root.name}", limits)
        self.root = root.resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(f"camera source {directory!s} is not a directory")
        if fps is not None and not (0 < fps <= 1000):
            raise ValueError(f"fps must be in (0, 1000], got {fps!r}")
        if watch and loop:
            raise ValueError("a camera folder cannot both loop and watch for new files")
        if not (isinstance(rescan_s, int | float) and 0.001 <= rescan_s <= 60):
            raise ValueError(f"rescan_s must be seconds in [0.001, 60], got {rescan_s!r}")
        self.loop = loop
        self.watch = watch
        self.late_files = 0
        self._rescan_s = float(rescan_s)
        self._last_name: str | None = None
        self._interval = 1.0 / fps if fps else 0.0
        self._next_due = 0.0
        self._names = self._list()
        self._index = 0
        self._yielded_in_pass = 0
        if not self._names and not watch:
            log.warning("camera %s: no image files in %s", self.label, self.root)

    def _list(self, quiet: bool = False) -> list[str]:
        names: list[str] = []
        ignored = 0
        for entry in os.scandir(self.root):
            if entry.name.startswith("."):
                continue
            if Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                names.append(entry.name)
            elif not entry.is_dir(follow_symlinks=False):
                ignored += 1
        if ignored and not quiet:
            log.info("camera %s: ignoring %d files without an image extension",
                     self.label, ignored)
        return sorted(names)

    def _load(self, name: str) -> np.ndarray | None:
        path = self.root / name
        try:
            real = path.resolve(strict=True)
        except OSError as exc:
            self._stats.bad_frame(BadFrame.UNREADABLE, f"{name}: {exc.strerror}")
            return None
        if not real.is_relative_to(self.root):
            self._stats.bad_frame(BadFrame.OUTSIDE_DIR, name)
            return None
        try:
            # O_NOFOLLOW on the resolved path: a link swapped in after the check is refused.
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            self._stats.bad_frame(BadFrame.UNREADABLE, f"{name}: {exc.strerror}")
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                self._stats.bad_frame(BadFrame.UNREADABLE, f"{name}: not a regular file")
                return None
            if info.st_size > self.limits.max_file_bytes:
                self._stats.bad_frame(BadFrame.TOO_LARGE, f"{name}: {info.st_size} bytes")
                return None
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(self.limits.max_file_bytes + 1)
        except OSError as exc:
            self._stats.bad_frame(BadFrame.UNREADABLE, f"{name}: {exc.strerror}")
            return None
        finally:
            os.close(fd)
        reason = _sniff(data, self.limits)
        if reason is not None:
            self._stats.bad_frame(reason, name)
            return None
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        reason = check_image(image, self.limits)
        if reason is not None:
            # A file that sniffed as an image but does not decode is damaged, not empty.
            self._stats.bad_frame(BadFrame.NOT_IMAGE if image is None else reason, name)
            return None
        return image

    def read(self, timeout: float = 0.0) -> Frame | None:
        """Next good image in name order; None when finished (or the pacing is not yet due).

        A hot folder (``watch``) waits up to ``timeout`` seconds for a new file, then
        returns None without finishing."""
        if self._finished:
            return None
        if self._interval:
            wait = self._next_due - time.monotonic()
            if wait > timeout:
                return None
            if wait > 0:
                time.sleep(wait)
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._finished:
            if self._index >= len(self._names):
                if self.watch:
                    if self._rescan():
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    time.sleep(min(self._rescan_s, remaining))
                    continue
                # Loop only when the last pass produced something, or we would spin forever.
                if self.loop and self._yielded_in_pass:
                    self._index = 0
                    self._yielded_in_pass = 0
                else:
                    self._finished = True
                    self._stats.summary()
                    return None
            name = self._names[self._index]
            self._index += 1
            self._last_name = name
            image = self._load(name)
            if image is not None:
                self._yielded_in_pass += 1
                self._next_due = time.monotonic() + self._interval
                return self._make_frame(image)
        return None

    def _rescan(self) -> bool:
        """Hot folder: queue the files that sort after the last one read; True if any."""
        try:
            names = self._list(quiet=True)
        except OSError as exc:  # folder removed or unreadable: wait, it may come back
            self._stats.bad_frame(BadFrame.UNREADABLE, f"{self.root}: {exc.strerror}")
            return False
        last = self._last_name
        fresh = [n for n in names if last is None or n > last]
        known = set(self._names)
        late = sum(1 for n in names[: len(names) - len(fresh)] if n not in known)
        if late:
            self.late_files += late
            log.warning("camera %s: %d new files sort before %s and are not played",
                        self.label, late, last)
        self._names = names
        self._index = len(names) - len(fresh)  # names are sorted: the fresh ones come last
        return bool(fresh)

    def close(self) -> None:
        """Mark finished; idempotent."""
        self._finished = True


# --- capture based sources --------------------------------------------------------------


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` the sources use (lets tests inject a fake)."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, Any]: ...

    def release(self) -> None: ...


Opener = Callable[[str | int], Capture]


def default_opener(target: str | int, timeout_s: float = 5.0) -> Capture:
    """Open ``target`` with OpenCV: FFmpeg with open/read timeouts for URLs and files."""
    if isinstance(target, int):
        cap = cv2.VideoCapture(target)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap
    ms = int(timeout_s * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)


class VideoFileSource(_SourceBase):
    """Every frame of a video file in order (no dropping: a file is never stale)."""

    def __init__(self, path: str | os.PathLike[str], *, limits: FrameLimits | None = None,
                 label: str | None = None, opener: Opener | None = None) -> None:
        p = Path(path)
        super().__init__(label or f"file:{p.name}", limits)
        self._cap: Capture | None = (opener or default_opener)(str(p))
        if not self._cap.isOpened():
            self._cap.release()
            self._cap = None
            raise ValueError(f"camera source {p.name}: cannot open as a video file")

    def read(self, timeout: float = 0.0) -> Frame | None:
        """Next good frame; None and ``finished`` at the end of the file or on a read error."""
        while self._cap is not None:
            try:
                ok, image = self._cap.read()
            except cv2.error as exc:
                log.warning("camera %s: read failed: %s", self.label, exc)
                ok, image = False, None
            if not ok:
                self.close()
                return None
            reason = check_image(image, self.limits)
            if reason is None:
                return self._make_frame(image)
            self._stats.bad_frame(reason)
        return None

    def close(self) -> None:
        """Release the file; idempotent."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
            self._stats.summary()
        self._finished = True


class _StreamLost(Exception):
    """The stream could not be opened or stopped delivering frames."""


class StreamSource(_SourceBase):
    """A live source (device index or RTSP/HTTP URL) read by a background grab thread.

    The thread keeps only the newest good frame; ``read`` hands it out at most once. On loss the
    stream is reopened with exponential backoff plus jitter, capped at ``backoff_max`` seconds;
    a reconnect counts as successful only once a frame arrives, so a server that accepts and
    immediately drops the connection is backed off too. Nothing raises into ``read``.
    """

    def __init__(self, target: str | int, *, label: str | None = None,
                 limits: FrameLimits | None = None, opener: Opener | None = None,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 read_failures_before_reconnect: int = 3, timeout: float = 5.0) -> None:
        shown = redact_url(target) if isinstance(target, str) else f"device:{target}"
        super().__init__(label or shown, limits)
        if not (0 < backoff_initial <= backoff_max):
            raise ValueError("backoff_initial must be > 0 and <= backoff_max")
        if read_failures_before_reconnect < 1:
            raise ValueError("read_failures_before_reconnect must be >= 1")
        self._target = target
        self._opener: Opener = opener or (lambda t: default_opener(t, timeout))
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_read_failures = read_failures_before_reconnect
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._cap: Capture | None = None
        self.connected = False
        self.reconnects = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"grab-{self.label}", daemon=True)
        self._thread.start()

    # -- grab thread --

    def _open_and_prime(self) -> tuple[Capture, np.ndarray]:
        """One connection attempt: open and read the first good frame, or raise _StreamLost."""
        if self._stop.is_set():
            raise _StreamLost("stopped")
        try:
            cap = self._opener(self._target)
        except Exception as exc:  # any opener failure is a connection failure
            raise _StreamLost(f"open failed: {exc}") from exc
        if not cap.isOpened():
            cap.release()
            raise _StreamLost("could not open")
        for _ in range(self._max_read_failures):
            ok, image = self._safe_read(cap)
            if not ok:
                continue
            reason = check_image(image, self.limits)
            if reason is None:
                return cap, image
            self._stats.bad_frame(reason)
        cap.release()
        raise _StreamLost("opened but delivered no frame")

    @staticmethod
    def _safe_read(cap: Capture) -> tuple[bool, Any]:
        try:
            return cap.read()
        except cv2.error:
            return False, None

    def _connect(self) -> tuple[Capture, np.ndarray] | None:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_StreamLost),
            # exponential from backoff_initial, capped, plus jitter so that a fleet of
            # terminals does not reconnect to a recovered NVR in lockstep
            wait=tenacity.wait_exponential(multiplier=self._backoff_initial,
                                           max=self._backoff_max)
            + tenacity.wait_random(0, self._backoff_initial),
            stop=tenacity.stop_when_event_set(self._stop),
            sleep=self._sleep,
            before_sleep=self._log_retry,
        )
        try:
            return retrying(self._open_and_prime)
        except (tenacity.RetryError, _StreamLost):
            return None  # stopped while reconnecting

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)  # close() interrupts the backoff at once

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.last_error = str(exc)
        delay = state.next_action.sleep if state.next_action else 0.0
        level = logging.WARNING if state.attempt_number in (1, 10, 100) else logging.DEBUG
        log.log(level, "camera %s: %s; retry %d in %.1fs",
                self.label, exc, state.attempt_number, delay)

    def _publish(self, image: np.ndarray) -> None:
        frame = self._make_frame(image)
        with self._cond:
            if self._latest is not None:
                self._stats.dropped += 1
            self._latest = frame
            self._cond.notify_all()

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            connected = self._connect()
            if connected is None:
                break
            cap, image = connected
            self._cap = cap
            self.connected = True
            if not first:
                self.reconnects += 1
                log.warning("camera %s: reconnected", self.label)
            first = False
            self._publish(image)
            failures = 0
            while not self._stop.is_set():
                ok, image = self._safe_read(cap)
                if not ok:
                    failures += 1
                    if failures >= self._max_read_failures:
                        break
                    continue
                failures = 0
                reason = check_image(image, self.limits)
                if reason is not None:
                    self._stats.bad_frame(reason)
                    continue
                self._publish(image)
            self.connected = False
            self._cap = None
            cap.release()
            if not self._stop.is_set():
                self.last_error = "stream lost"
                log.warning("camera %s: stream lost, reconnecting", self.label)

    # -- loop side --

    def read(self, timeout: float = 0.0) -> Frame | None:
        """The newest frame not yet returned, waiting up to ``timeout`` s; None if none came."""
        with self._cond:
            if self._latest is None and timeout > 0 and not self._finished:
                self._cond.wait(timeout)
            frame, self._latest = self._latest, None
        return frame

    def close(self, join_timeout: float = 10.0) -> None:
        """Stop the grab thread and release the capture; idempotent.

        A blocked ``cap.read()`` returns within the capture's read timeout; the thread is a
        daemon so a wedged driver cannot keep the process alive.
        """
        self._stop.set()
        self._finished = True
        with self._cond:
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(join_timeout)
        self._stats.summary()


# --- factory ----------------------------------------------------------------------------

_URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
HOT_FOLDER_PREFIX = "hotfolder:"
_COMMON_OPTS = {"limits", "label"}
_OPTS = {
    ImageDirectorySource: _COMMON_OPTS | {"loop", "fps", "watch", "rescan_s"},
    VideoFileSource: _COMMON_OPTS | {"opener"},
    StreamSource: _COMMON_OPTS | {"opener", "backoff_initial", "backoff_max",
                                  "read_failures_before_reconnect", "timeout"},
}


def open_source(spec: str, **opts: Any) -> FrameSource:
    """Open the camera source named by ``spec``.

    * ``"0"``, ``"2"`` (digits): a local device index -> :class:`StreamSource`
    * ``rtsp://``, ``rtsps://``, ``http://``, ``https://``: a network stream ->
      :class:`StreamSource`
    * an existing directory: :class:`ImageDirectorySource` (options ``loop``, ``fps``,
      ``watch``)
    * ``hotfolder:DIR``: an existing directory watched for new files
      (:class:`ImageDirectorySource` with ``watch=True``; options ``fps``, ``rescan_s``)
    * an existing file: :class:`VideoFileSource`

    Every source accepts ``limits`` (:class:`FrameLimits`) and ``label``. An option that the
    chosen source does not take raises ``ValueError`` naming it; so does a spec that is none
    of the above (e.g. ``file://`` or a missing path).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("camera source must be a non-empty string")
    spec = spec.strip()
    if spec.startswith(HOT_FOLDER_PREFIX):
        folder = spec[len(HOT_FOLDER_PREFIX):]
        if not folder or not os.path.isdir(folder):
            raise ValueError(f"camera source {spec!r}: {folder!r} is not a directory")
        unknown = sorted(set(opts) - (_OPTS[ImageDirectorySource] - {"loop", "watch"}))
        if unknown:
            raise ValueError(f"camera option {unknown[0]!r} is not valid for a hot folder")
        return ImageDirectorySource(folder, watch=True, **opts)
    kind: type[_SourceBase]
    if re.fullmatch(r"[0-9]{1,3}", spec) or spec.lower().startswith(_URL_SCHEMES):
        kind = StreamSource
    elif "://" in spec:
        raise ValueError(f"camera source: unsupported URL scheme in {redact_url(spec)!r}")
    elif os.path.isdir(spec):
        kind = ImageDirectorySource
    elif os.path.isfile(spec):
        kind = VideoFileSource
    else:
        raise ValueError(f"camera source {spec!r}: no such device, URL, directory or file")
    unknown = sorted(set(opts) - _OPTS[kind])
    if unknown:
        raise ValueError(f"camera option {unknown[0]!r} is not valid for {kind.__name__}")
    if kind is StreamSource:
        device = re.fullmatch(r"[0-9]{1,3}", spec)
        return StreamSource(int(spec) if device else spec, **opts)
    if kind is ImageDirectorySource:
        return ImageDirectorySource(spec, **opts)
    return VideoFileSource(spec, **opts)
