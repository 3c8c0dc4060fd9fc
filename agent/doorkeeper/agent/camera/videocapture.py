"""Camera sources read through OpenCV's ``VideoCapture``: a video file, played in full, and a
live device or RTSP/HTTP stream, grabbed by a background thread that keeps only the newest
frame and reconnects with backoff.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np
import tenacity

from doorkeeper.agent.camera.frames import Frame, FrameLimits, SourceBase, check_image

log = logging.getLogger("doorkeeper.agent.camera")


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


class VideoFileSource(SourceBase):
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


class StreamSource(SourceBase):
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

