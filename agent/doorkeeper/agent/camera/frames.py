"""Frames and the contract every camera source keeps; the parts all sources share.

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

The sources themselves live in :mod:`~doorkeeper.agent.camera.imagefolder` and
:mod:`~doorkeeper.agent.camera.videocapture`; callers import everything from
:mod:`doorkeeper.agent.camera`, which also opens a source from its spec.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np

# How a camera spec names its kind; here (not in camera.py) so the config loader can check a
# spec without importing OpenCV.
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
HOT_FOLDER_PREFIX = "hotfolder:"
DEVICE_INDEX = r"[0-9]{1,3}"

# Every camera module logs under one name, so a log filter on the camera keeps working.
log = logging.getLogger("doorkeeper.agent.camera")


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


@dataclass
class SourceStats:
    """Good, dropped and bad-frame counts of one source; logs bad frames sparingly."""

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


class SourceBase:
    """Counters and the parts of the FrameSource protocol every source shares."""

    def __init__(self, label: str, limits: FrameLimits | None) -> None:
        self.label = label
        self.limits = limits or FrameLimits()
        self._stats = SourceStats(label)
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

    def __enter__(self) -> SourceBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the source and release what it holds; every source overrides it."""
        raise NotImplementedError

