"""Reading a file that someone else chose, with a cap that holds whatever the file is.

`stat()` says 0 bytes for /dev/zero, a FIFO or a /proc file, so a size check before
`read_bytes()` does not bound the read: `read_capped` reads at most cap + 1 bytes and refuses
the file when it got them.
"""

from __future__ import annotations

import os
from pathlib import Path

_BLOCK = 1 << 20


class TooLarge(ValueError):
    """The file holds more than its cap; nothing beyond cap + 1 bytes was read."""


def read_capped(path: str | os.PathLike[str], cap: int, what: str = "file") -> bytes:
    """The whole content of ``path``, at most ``cap`` bytes.

    Raises TooLarge (one line naming the file and the cap) when it holds more, and OSError
    when it cannot be opened or read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        chunks: list[bytes] = []
        remaining = cap + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, _BLOCK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    if remaining <= 0:
        raise TooLarge(f"{Path(path)}: {what} is over the {cap} byte limit")
    return b"".join(chunks)
