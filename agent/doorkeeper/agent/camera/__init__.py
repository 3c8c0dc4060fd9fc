"""Camera sources for the verification loop: device, RTSP/HTTP stream, video file, image folder.

This is the module callers import: :func:`open_source` picks and opens a source from its spec,
and the frame types and sources are re-exported from where they live:

* :mod:`~doorkeeper.agent.camera.frames`: :class:`Frame`, :class:`FrameLimits`, :class:`BadFrame`,
  the :class:`FrameSource` contract every source keeps (read there), :func:`check_image`.
* :mod:`~doorkeeper.agent.camera.imagefiles`: checks on an image file's raw bytes before decoding.
* :mod:`~doorkeeper.agent.camera.imagefolder`: :class:`ImageDirectorySource` (also the hot folder).
* :mod:`~doorkeeper.agent.camera.videocapture`: :class:`VideoFileSource` and :class:`StreamSource`
  (device index or network stream: newest-frame grab thread, reconnect with backoff).

Untrusted sizes are checked before decoding: image files are capped in bytes and their
PNG/JPEG header dimensions are checked before any pixel buffer is allocated.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from doorkeeper.agent.camera.frames import (
    DEVICE_INDEX,
    HOT_FOLDER_PREFIX,
    URL_SCHEMES,
    BadFrame,
    Frame,
    FrameLimits,
    FrameSource,
    SourceBase,
    check_image,
)
from doorkeeper.agent.camera.imagefiles import IMAGE_EXTENSIONS
from doorkeeper.agent.camera.imagefolder import ImageDirectorySource
from doorkeeper.agent.camera.videocapture import (
    Capture,
    Opener,
    StreamSource,
    VideoFileSource,
    default_opener,
    redact_url,
)

__all__ = [
    "HOT_FOLDER_PREFIX",
    "IMAGE_EXTENSIONS",
    "BadFrame",
    "Capture",
    "Frame",
    "FrameLimits",
    "FrameSource",
    "ImageDirectorySource",
    "Opener",
    "StreamSource",
    "VideoFileSource",
    "check_image",
    "default_opener",
    "open_source",
    "redact_url",
]

_COMMON_OPTS = {"limits", "label"}
_OPTS = {
    ImageDirectorySource: _COMMON_OPTS | {"loop", "fps", "watch", "rescan_s"},
    VideoFileSource: _COMMON_OPTS | {"opener"},
    StreamSource: _COMMON_OPTS | {"opener", "backoff_initial", "backoff_max",
                                  "read_failures_before_reconnect", "timeout"},
}


class NoCamera:
    """The frame source of a door without a camera (cards and PINs only): never a frame."""

    label = "no camera"

    def __init__(self) -> None:
        self._closed = threading.Event()

    @property
    def finished(self) -> bool:
        return False

    @property
    def frames(self) -> int:
        return 0

    @property
    def bad_frames(self) -> dict[str, int]:
        return {}

    @property
    def dropped(self) -> int:
        return 0

    def read(self, timeout: float = 0.0) -> None:
        self._closed.wait(timeout)
        return None

    def close(self) -> None:
        self._closed.set()


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
    kind: type[SourceBase]
    device = re.fullmatch(DEVICE_INDEX, spec) is not None
    if device or spec.lower().startswith(URL_SCHEMES):
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
        return StreamSource(int(spec) if device else spec, **opts)
    if kind is ImageDirectorySource:
        return ImageDirectorySource(spec, **opts)
    return VideoFileSource(spec, **opts)
