"""Card numbers and PINs from a file or FIFO, one per line, fed to the door loop.

A line `card:04A2B19C` is a card, `pin:482913` a PIN; a plain line is a card (as before).

A stand-in for a hardware reader: a Wiegand or serial reader would call ``present`` the same
way. Every line is hostile input; the policy core decides what is a valid credential.
"""

from __future__ import annotations

import os
import select
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from doorkeeper.agent.doorloop.workers import LoopClosed

MAX_CREDENTIAL_LINE_BYTES = 256


def card_source(
    path: str | os.PathLike[str],
    present: Callable[[str], object],
    stop: threading.Event,
    *,
    poll_interval_s: float = 0.2,
) -> int:
    """Feed each line of a file or FIFO to ``present`` (``loop.present_card``/``present_pin``).

    A regular file is read to its end; a FIFO is read until ``stop`` (reopened whenever its
    writer closes). Lines are hostile: at most ``MAX_CREDENTIAL_LINE_BYTES`` of a line are
    kept (the policy then refuses an over-long one), bytes are decoded with replacement,
    surrounding whitespace is stripped and empty lines are ignored. Returns the number of
    lines presented. A real reader (Wiegand, serial) would call ``present`` the same way.
    """
    target = Path(path)
    fifo = stat.S_ISFIFO(os.stat(target).st_mode)
    presented = 0
    pending = b""
    overlong = False
    fd: int | None = None

    def emit(raw: bytes) -> None:
        nonlocal presented
        text = raw[:MAX_CREDENTIAL_LINE_BYTES].decode("utf-8", "replace").strip()
        if text:
            presented += 1
            try:
                present(text)
            except LoopClosed:
                stop.set()

    try:
        while not stop.is_set():
            if fd is None:
                fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK)
            ready, _, _ = select.select([fd], [], [], poll_interval_s)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if not chunk:  # end of file, or the FIFO's writer closed
                os.close(fd)
                fd = None
                if not fifo:
                    break
                stop.wait(poll_interval_s)
                continue
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if not overlong:
                    emit(line)
                overlong = False
            if len(pending) > MAX_CREDENTIAL_LINE_BYTES:
                if not overlong:
                    emit(pending)
                overlong, pending = True, b""
        if pending and not overlong and not stop.is_set():
            emit(pending)
    finally:
        if fd is not None:
            os.close(fd)
    return presented


def credential_dispatch(present_card: Callable[[str], object],
                        present_pin: Callable[[str], object]) -> Callable[[str], object]:
    """What `card_source` calls per line: `pin:` lines go to `present_pin`, `card:` and plain
    lines to `present_card` (the prefix is case-insensitive and removed)."""

    def present(line: str) -> object:
        kind, sep, value = line.partition(":")
        if sep and kind.strip().lower() == "pin":
            return present_pin(value.strip())
        if sep and kind.strip().lower() == "card":
            return present_card(value.strip())
        return present_card(line)

    return present
