"""Files that survive a power cut once the call that wrote them returns.

A rename is only durable once its directory is fsynced, and a new file's name only once its
parent directory is: without that, a cut right after `hub init` left only `*.tmp` key files
and no `.pub` files at all (tests/powerloss/test_key_files.py). Every key, certificate, token
and state file goes through `write_atomic`: temp file, fsync, rename, fsync the directory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make the entries of `directory` (creations, renames, unlinks) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path, mode: int = 0o777) -> None:
    """`mkdir -p` whose every new directory is durable in its parent when this returns."""
    directory = Path(directory)
    missing = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            path.mkdir(mode=mode)
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` all or nothing, durably: temp file, fsync, rename, fsync directory.

    A cut at any moment leaves either the old file or the new one, never a mix or neither
    (once the directory already existed durably).
    """
    path = Path(path)
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow a key file's mode
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
