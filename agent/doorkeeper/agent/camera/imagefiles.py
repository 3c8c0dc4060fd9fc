"""Checks on an image file's raw bytes, made before decoding: format, truncation and the
dimensions in its header, so that no pixel buffer is allocated for an oversized image.
"""

from __future__ import annotations

from doorkeeper.agent.camera.frames import BadFrame, FrameLimits

# TIFF is left out on purpose: its compressed strips can expand enormously and we cannot
# check its size cheaply before decoding. Every accepted format has its size checked first.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


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


def check_image_bytes(data: bytes, limits: FrameLimits) -> BadFrame | None:
    """Why the raw bytes of an image file are refused, or None when they may be decoded.

    Refused: empty data, a format other than JPEG, PNG, BMP or WebP (``NOT_IMAGE``), a
    JPEG without its end marker or a PNG without IEND (``TRUNCATED``), header dimensions over
    ``limits`` (``TOO_LARGE``). None does not promise that the bytes decode: the caller still
    checks the decoded image.
    """
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
