"""A tiny, dependency-free ``sd_notify`` client (systemd ``Type=notify`` and ``WatchdogSec=``).

Under systemd the service manager puts the address of a datagram socket in ``$NOTIFY_SOCKET``
(a path, or an abstract name written with a leading ``@``); a service reports ``READY=1`` when
it is up, ``STOPPING=1`` when it begins to shut down, and, when ``WatchdogSec=`` is set, sends
``WATCHDOG=1`` more often than ``$WATCHDOG_USEC``, or systemd kills and restarts it.

The agent feeds the watchdog from its decision loop (:class:`Watchdog.kick` on every loop
iteration), so a hung loop (camera read, face engine, a deadlock) is noticed and the service is
restarted: a door that stops deciding is a door that does not open.

Everything here is a no-op returning False when not run under systemd (no ``$NOTIFY_SOCKET``),
and never raises for a failed send: a notification problem must not stop a door.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

MAX_STATUS_CHARS = 200  # a STATUS= line is shown by `systemctl status`; keep it short


def _address(env: Mapping[str, str]) -> str | None:
    """The socket address from ``$NOTIFY_SOCKET``, or None when absent or not a unix socket."""
    raw = env.get("NOTIFY_SOCKET", "")
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]  # Linux abstract namespace
    if raw.startswith("/"):
        return raw
    # systemd >= 253 may hand out vsock: addresses (VMs); doors are not VMs.
    log.debug("NOTIFY_SOCKET %r is not a unix socket address; notifications disabled", raw)
    return None


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification (``"READY=1"``, ``"WATCHDOG=1"`` ...); True when it was sent.

    False, without raising, when not under systemd or when the send fails (logged).
    """
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), address)
    except OSError as exc:
        log.warning("sd_notify %s failed: %s", state.split("=", 1)[0], exc)
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Tell systemd that start-up is complete (``Type=notify`` units wait for this)."""
    return notify("READY=1" + (f"\nSTATUS={_clean(status_text)}" if status_text else ""))


def watchdog() -> bool:
    """Feed the watchdog once; prefer :class:`Watchdog` in loops (rate limited)."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Tell systemd that a graceful shutdown has begun."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A one-line free-text status for ``systemctl status`` (newlines removed, capped)."""
    return notify(f"STATUS={_clean(text)}")


def _clean(text: str) -> str:
    # A newline would start a new assignment (e.g. a smuggled "READY=1"): flatten it.
    return " ".join(str(text).split())[:MAX_STATUS_CHARS]


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds systemd waits for a ``WATCHDOG=1``, or None when no watchdog applies to us.

    None when ``$WATCHDOG_USEC`` is absent, not a positive integer, or when ``$WATCHDOG_PID``
    is set and is not this process (the variables were inherited from a parent).
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


class Watchdog:
    """Feeds systemd's watchdog from a loop: call :meth:`kick` on every iteration.

    Sends ``WATCHDOG=1`` at most once per ``interval / 2`` (the first kick always sends), so a
    loop running at camera frame rate costs one datagram every few seconds. Disabled (every
    kick returns False) when there is no watchdog for this process. Thread-safe.
    """

    def __init__(
        self,
        interval: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[str], bool] | None = None,
    ) -> None:
        """``interval`` None: read it from ``$WATCHDOG_USEC``/``$WATCHDOG_PID`` (see
        :func:`watchdog_interval`). ``send`` defaults to :func:`notify` with ``env``."""
        self.interval = watchdog_interval(env) if interval is None else interval
        if self.interval is not None and self.interval <= 0:
            raise ValueError(f"watchdog interval must be positive, got {self.interval!r}")
        self._clock = clock
        self._send = send if send is not None else (lambda state: notify(state, env))
        self._last: float | None = None
        self._lock = threading.Lock()
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def kick(self) -> bool:
        """Send ``WATCHDOG=1`` if half the interval has passed since the last send; True if sent."""
        if self.interval is None:
            return False
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self.interval / 2:
                return False
            self._last = now
        if self._send("WATCHDOG=1"):
            self.sent += 1
            return True
        return False
