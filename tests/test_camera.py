"""Camera sources: bad frames are skipped and counted, live streams keep only the newest frame
and reconnect.

Real parts: image folders and files written into tmp_path, a real MJPG .avi written with
cv2.VideoWriter, and a real HTTP MJPEG stream served on 127.0.0.1 port 0 read through OpenCV's
FFmpeg backend (including a server-side disconnect and reconnect). A fake capture is used only
to make the newest-frame logic deterministic (when exactly frames arrive) and for a device
index, since no camera exists on this machine.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from doorkeeper.agent.camera import (
    BadFrame,
    Frame,
    FrameLimits,
    FrameSource,
    ImageDirectorySource,
    StreamSource,
    VideoFileSource,
    open_source,
)

WAIT = 30.0  # generous: the machine is shared; tests wait for events, never measure speed


def _color(value: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _jpeg(value: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", _color(value))
    assert ok
    return buf.tobytes()


def _wait_until(predicate, timeout: float = WAIT) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _drain(source: FrameSource) -> list[Frame]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a decompression-bomb shaped file."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk
            + zlib.crc32(chunk).to_bytes(4, "big"))


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    (d / "001_good.jpg").write_bytes(_jpeg(10))
    (d / "002_zero_bytes.jpg").write_bytes(b"")
    (d / "003_text.png").write_text("this is not a png\n")
    full = _jpeg(200)
    (d / "004_truncated_half.jpg").write_bytes(full[: len(full) // 2])
    # Only the EOI marker missing: cv2 would decode this to a plausible image.
    (d / "005_truncated_tail.jpg").write_bytes(full[:-2])
    cv2.imwrite(str(d / "006_gray.png"), np.full((48, 64), 90, np.uint8))
    cv2.imwrite(str(d / "007_rgba.png"), np.full((48, 64, 4), 90, np.uint8))
    cv2.imwrite(str(d / "008_too_wide.png"), np.zeros((8, 4097, 3), np.uint8))
    (d / "009_bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    cv2.imwrite(str(d / "010_16bit.png"), np.full((48, 64, 3), 1000, np.uint16))
    cv2.imwrite(str(d / "011_good.png"), _color(30))
    (d / "012_readme.txt").write_text("ignored: no image extension")
    (d / ".hidden.jpg").write_bytes(_jpeg(99))
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(_jpeg(77))
    os.symlink(outside, d / "013_escape.jpg")
    os.symlink(d / "001_good.jpg", d / "014_inside_link.jpg")
    cv2.imwrite(str(d / "015_good.bmp"), _color(50))
    cv2.imwrite(str(d / "016_good.webp"), _color(70), [cv2.IMWRITE_WEBP_QUALITY, 101])
    return d


def test_image_directory_skips_each_bad_file_and_keeps_order(image_dir: Path) -> None:
    source = open_source(str(image_dir))
    assert isinstance(source, ImageDirectorySource)
    frames = _drain(source)
    assert source.finished
    # good, good (via inside link), good, good in name order; each BGR uint8 HxWx3
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 30, 10, 50, 70]
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    assert all(f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3) for f in frames)
    assert source.frames == 5
    assert source.bad_frames == {
        BadFrame.EMPTY: 1,
        BadFrame.NOT_IMAGE: 1,
        BadFrame.TRUNCATED: 2,
        BadFrame.GRAYSCALE: 1,
        BadFrame.FOUR_CHANNEL: 1,
        BadFrame.TOO_LARGE: 2,
        BadFrame.WRONG_DTYPE: 1,
        BadFrame.OUTSIDE_DIR: 1,
    }
    assert source.read() is None  # finished stays finished


def test_bad_frames_are_logged_once_per_reason_not_per_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(25):
        (tmp_path / f"{i:03d}.jpg").write_bytes(b"")
    (tmp_path / "999.jpg").write_bytes(_jpeg(5))
    caplog.set_level("WARNING", logger="doorkeeper.agent.camera")
    source = open_source(str(tmp_path))
    assert len(_drain(source)) == 1
    assert source.bad_frames == {"empty": 25}
    warnings = [r for r in caplog.records if "bad frame" in r.getMessage()]
    assert len(warnings) == 2  # the first, and the 10th


def test_image_directory_loops_and_stops_when_nothing_is_good(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.jpg").write_bytes(_jpeg(10))
    (good / "b.jpg").write_bytes(_jpeg(20))
    source = open_source(str(good), loop=True)
    values = [int(source.read().image[0, 0, 0]) for _ in range(5)]  # type: ignore[union-attr]
    assert values == [10, 20, 10, 20, 10]
    assert not source.finished
    source.close()
    assert source.finished and source.read() is None

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    looping = open_source(str(bad), loop=True)
    assert looping.read() is None  # a folder of bad files must not spin forever
    assert looping.finished


def test_image_directory_fps_paces_frames(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg(i))
    source = open_source(str(tmp_path), fps=0.25)  # one frame per 4 s
    assert source.read() is not None
    assert source.read(timeout=0.0) is None  # the next one is not due for seconds
    assert source.read(timeout=WAIT) is not None  # waiting long enough gets it


def _drop(folder: Path, name: str, value: int) -> None:
    """Write as a hot-folder writer should: a dotfile first, then rename into place."""
    tmp = folder / f".{name}.part"
    tmp.write_bytes(_jpeg(value))
    os.replace(tmp, folder / name)


def test_hot_folder_plays_files_dropped_later_in_name_order(tmp_path: Path) -> None:
    _drop(tmp_path, "001.jpg", 10)
    source = open_source(f"hotfolder:{tmp_path}")
    assert isinstance(source, ImageDirectorySource) and source.watch
    assert int(source.read().image[0, 0, 0]) == 10  # type: ignore[union-attr]
    assert source.read(timeout=0.1) is None
    assert not source.finished  # a hot folder waits for more instead of ending
    (tmp_path / ".003.jpg.part").write_bytes(b"half a jp")  # being written: never read
    _drop(tmp_path, "003.jpg", 30)
    _drop(tmp_path, "002.jpg", 20)
    values = [int(source.read(timeout=WAIT).image[0, 0, 0]) for _ in range(2)]  # type: ignore[union-attr]
    assert values == [20, 30]
    _drop(tmp_path, "000_late.jpg", 5)  # sorts before what was already played
    _drop(tmp_path, "004.jpg", 40)
    assert int(source.read(timeout=WAIT).image[0, 0, 0]) == 40  # type: ignore[union-attr]
    assert source.late_files == 1
    assert source.bad_frames == {}
    assert [source.frames, source.finished] == [4, False]
    source.close()
    assert source.finished and source.read(timeout=1.0) is None


def test_hot_folder_read_waits_for_a_file_from_another_writer(tmp_path: Path) -> None:
    source = ImageDirectorySource(tmp_path, watch=True, rescan_s=0.01)
    writer = threading.Timer(0.2, _drop, args=(tmp_path, "a.jpg", 60))
    writer.start()
    try:
        frame = source.read(timeout=WAIT)
    finally:
        writer.join()
    assert frame is not None and int(frame.image[0, 0, 0]) == 60
    # a damaged file dropped later is skipped and counted; the folder keeps being watched
    (tmp_path / "b.jpg").write_bytes(b"")
    _drop(tmp_path, "c.jpg", 70)
    frame = source.read(timeout=WAIT)
    assert frame is not None and int(frame.image[0, 0, 0]) == 70
    assert source.bad_frames == {BadFrame.EMPTY: 1}


def test_hot_folder_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loop"):
        open_source(f"hotfolder:{tmp_path}", loop=True)
    with pytest.raises(ValueError, match="not a directory"):
        open_source(f"hotfolder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="not a directory"):
        open_source("hotfolder:")
    with pytest.raises(ValueError, match="both loop and watch"):
        ImageDirectorySource(tmp_path, loop=True, watch=True)
    with pytest.raises(ValueError, match="rescan_s"):
        ImageDirectorySource(tmp_path, watch=True, rescan_s=0)
    watched = open_source(str(tmp_path), watch=True, fps=5.0)
    assert isinstance(watched, ImageDirectorySource) and watched.watch
    watched.close()


def test_video_file_is_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(12):
        writer.write(_color(i * 20))
    writer.release()

    source = open_source(str(path))
    assert isinstance(source, VideoFileSource)
    frames = _drain(source)
    assert source.finished
    assert [f.seq for f in frames] == list(range(1, 13))
    # MJPG is lossy: compare with a tolerance, in order
    assert [round(float(f.image.mean()) / 20) for f in frames] == list(range(12))
    source.close()


def test_a_file_that_is_not_a_video_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "notes.avi"
    path.write_text("not a video")
    with pytest.raises(ValueError, match="cannot open"):
        open_source(str(path))


def test_open_source_dispatch_and_strict_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'fps'"):
        open_source("rtsp://cam/stream", fps=1.0)
    with pytest.raises(ValueError, match="'bogus'"):
        open_source(str(tmp_path), bogus=1)
    with pytest.raises(ValueError, match="scheme"):
        open_source("file:///etc/passwd")
    with pytest.raises(ValueError, match="no such"):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        FrameLimits(max_pixels=0)


# --- live streams ---------------------------------------------------------------------


class FakeCapture:
    """Behaves like cv2.VideoCapture on a live stream: read() blocks until a frame arrives,
    returns (False, None) after a disconnect, release() ends it."""

    def __init__(self, opened: bool = True) -> None:
        self.opened = opened
        self.queue: list[object] = []
        self.cond = threading.Condition()
        self.disconnected = False
        self.released = False

    def isOpened(self) -> bool:  # cv2's name
        return self.opened and not self.released

    def push(self, *images: object) -> None:
        with self.cond:
            self.queue.extend(images)
            self.cond.notify_all()

    def disconnect(self) -> None:
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def read(self) -> tuple[bool, object]:
        with self.cond:
            self.cond.wait_for(lambda: self.queue or self.disconnected or self.released, 1.0)
            if self.queue:
                return True, self.queue.pop(0)
            return False, None

    def release(self) -> None:
        with self.cond:
            self.released = True
            self.cond.notify_all()


class FakeOpener:
    """Hands out the given captures in order; afterwards, captures that fail to open."""

    def __init__(self, *captures: FakeCapture) -> None:
        self.captures = list(captures)
        self.calls: list[object] = []

    def __call__(self, target: object) -> FakeCapture:
        self.calls.append(target)
        return self.captures.pop(0) if self.captures else FakeCapture(opened=False)


def test_stream_hands_out_only_the_newest_frame_and_counts_dropped() -> None:
    cap = FakeCapture()
    cap.push(_color(1))
    source = StreamSource("rtsp://user:pw@cam.example/live", opener=FakeOpener(cap))
    try:
        assert "pw" not in source.label and "***" in source.label
        first = source.read(timeout=WAIT)
        assert first is not None and first.image[0, 0, 0] == 1
        cap.push(*(_color(v) for v in range(2, 7)))
        assert _wait_until(lambda: source.frames == 6)
        newest = source.read()
        assert newest is not None and newest.image[0, 0, 0] == 6 and newest.seq == 6
        assert source.dropped == 4  # frames 2..5 were never handed out
        assert source.read() is None  # no stale repeat
    finally:
        source.close()
    assert source.finished


def test_stream_skips_bad_frames_without_stopping() -> None:
    cap = FakeCapture()
    cap.push(_color(1))
    source = StreamSource(0, opener=FakeOpener(cap), limits=FrameLimits(max_width=100))
    try:
        assert source.read(timeout=WAIT) is not None
        cap.push(None, np.zeros((0, 0, 3), np.uint8), np.zeros((48, 64), np.uint8),
                 np.zeros((48, 64, 1), np.uint8), np.zeros((48, 64, 4), np.uint8),
                 np.zeros((48, 200, 3), np.uint8), np.zeros((48, 64, 3), np.float32),
                 _color(2))
        frame = source.read(timeout=WAIT)
        assert frame is not None and frame.image[0, 0, 0] == 2
        assert source.bad_frames == {"empty": 2, "grayscale": 2, "four_channel": 1,
                                     "too_large": 1, "wrong_dtype": 1}
        assert source.connected
    finally:
        source.close()


def test_stream_reconnects_with_backoff_after_a_disconnect() -> None:
    first, second = FakeCapture(), FakeCapture()
    first.push(_color(1))
    second.push(_color(2))
    # after the first drops: one capture that fails to open, then one that works
    opener = FakeOpener(first, FakeCapture(opened=False), second)
    source = StreamSource("http://cam.example/mjpg", opener=opener,
                          backoff_initial=0.01, backoff_max=0.05)
    try:
        assert source.read(timeout=WAIT).image[0, 0, 0] == 1  # type: ignore[union-attr]
        first.disconnect()
        assert _wait_until(lambda: source.reconnects == 1)
        frame = source.read(timeout=WAIT)
        assert frame is not None and frame.image[0, 0, 0] == 2
        assert len(opener.calls) == 3 and first.released
    finally:
        source.close()


def test_close_interrupts_reconnect_backoff() -> None:
    opener = FakeOpener()  # never opens
    source = StreamSource("rtsp://down.example/", opener=opener,
                          backoff_initial=30.0, backoff_max=60.0)
    assert _wait_until(lambda: len(opener.calls) >= 1)
    assert source.read(timeout=0.05) is None  # nothing, and no exception
    source.close(join_timeout=WAIT)
    assert not source._thread.is_alive()
    assert source.finished and source.last_error


def test_missing_device_index_never_raises() -> None:
    # Real cv2.VideoCapture on a device that does not exist on this machine.
    source = open_source("63", backoff_initial=0.05, backoff_max=0.1, timeout=1.0)
    try:
        assert source.read(timeout=0.2) is None
        assert not source.finished
    finally:
        source.close(join_timeout=WAIT)


class _MjpegServer:
    """A real HTTP MJPEG camera on 127.0.0.1:0. Connection n sends frames of value 10*n;
    the first connection ends after `frames_per_connection` frames (a disconnect)."""

    def __init__(self, frames_per_connection: int) -> None:
        self.connections = 0
        self.stop = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.connections += 1
                value = 10 * outer.connections
                limit = frames_per_connection if outer.connections == 1 else 10_000
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                jpeg = _jpeg(value)
                try:
                    for _ in range(limit):
                        if outer.stop.wait(0.02):
                            return
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n" % len(jpeg)
                                         + jpeg + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, *args: object) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/stream.mjpg"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mjpeg_server() -> Iterator[_MjpegServer]:
    if "FFMPEG:                      YES" not in cv2.getBuildInformation():
        pytest.skip("this OpenCV build has no FFmpeg backend for network streams")
    server = _MjpegServer(frames_per_connection=20)
    yield server
    server.close()


def test_real_http_mjpeg_stream_with_disconnect_and_reconnect(mjpeg_server: _MjpegServer) -> None:
    source = open_source(mjpeg_server.url, backoff_initial=0.05, backoff_max=0.5, timeout=5.0)
    assert isinstance(source, StreamSource)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 2 * WAIT
        while time.monotonic() < deadline and 20 not in seen:
            frame = source.read(timeout=1.0)
            if frame is not None:
                assert frame.image.shape == (48, 64, 3)
                seen.add(round(float(frame.image.mean())))
        assert 10 in seen and 20 in seen  # frames from before and after the server hung up
        assert source.reconnects >= 1
        assert mjpeg_server.connections >= 2
    finally:
        source.close(join_timeout=WAIT)
