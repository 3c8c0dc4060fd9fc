"""Image folder camera source: the images of one folder in name order, for tests, demos and
replay; as a *hot folder* it plays files dropped into the folder as they arrive.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import cv2
import numpy as np

from doorkeeper.agent.camera.frames import BadFrame, Frame, FrameLimits, SourceBase, check_image
from doorkeeper.agent.camera.imagefiles import IMAGE_EXTENSIONS, check_image_bytes

log = logging.getLogger("doorkeeper.agent.camera")


class ImageDirectorySource(SourceBase):
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
        reason = check_image_bytes(data, self.limits)
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

