"""Door relays driven by an external command or an HTTP request.

Both take everything they send from the configuration; nothing from a face, card, QR code or
the network is ever put into an argv or URL. The one substitution is ``{seconds}``, replaced by
the validated unlock duration (a number, formatted by us), so a relay with its own timer can
be told how long to stay open: that timer, inside the relay, is what keeps the door
fail-secure if the agent dies mid-unlock (our relock timer dies with the process).

Failures (non-zero exit, timeout, missing program, HTTP error or unreachable relay) raise
DoorError inside the driver, which the shared timer logic logs and counts; a failed unlock
leaves the door considered locked and a failed lock is retried.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from .base import DEFAULT_MAX_UNLOCK_SECONDS, DoorConfigError, DoorError, TimedDoor

log = logging.getLogger("doorkeeper.agent.doors")

SECONDS_PLACEHOLDER = "{seconds}"
MAX_ARGV = 64
MAX_ARG_CHARS = 4096
MAX_RESPONSE_BYTES = 4096


def _fill(text: str, seconds: float | None) -> str:
    # Plain replace, never str.format: config text must not be able to reach attributes.
    if seconds is None:
        return text
    return text.replace(SECONDS_PLACEHOLDER, f"{seconds:g}")


def check_argv(option: str, argv: object) -> list[str]:
    """Validate an argv list from config; ``option`` names it in errors. The program must exist
    (absolute path, or found on PATH, resolved now so PATH cannot change it later)."""
    if isinstance(argv, str) or not isinstance(argv, Sequence) or not argv:
        raise DoorConfigError(f"{option}: must be a non-empty list of strings (an argv, no shell)")
    if len(argv) > MAX_ARGV:
        raise DoorConfigError(f"{option}: more than {MAX_ARGV} arguments")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str) or "\x00" in arg or len(arg) > MAX_ARG_CHARS:
            raise DoorConfigError(f"{option}[{i}]: must be a string without NUL, "
                                  f"at most {MAX_ARG_CHARS} characters")
    program = shutil.which(argv[0])
    if program is None:
        raise DoorConfigError(f"{option}[0]: program {argv[0]!r} not found or not executable")
    return [program, *argv[1:]]


class CommandDoor(TimedDoor):
    """Runs ``unlock`` / ``lock`` argv lists (``shell=False``) with a timeout."""

    kind = "command"

    def __init__(self, name: str, *, unlock: Sequence[str], lock: Sequence[str],
                 timeout: float = 5.0,
                 max_unlock_seconds: float = DEFAULT_MAX_UNLOCK_SECONDS) -> None:
        super().__init__(name, max_unlock_seconds=max_unlock_seconds)
        self.unlock_argv = check_argv(f"doors.{name}.unlock", unlock)
        self.lock_argv = check_argv(f"doors.{name}.lock", lock)
        self.timeout = timeout
        self._start()

    def _actuate(self, locked: bool, seconds: float | None) -> None:
        argv = [_fill(a, seconds) for a in (self.lock_argv if locked else self.unlock_argv)]
        action = "lock" if locked else "unlock"
        try:
            done = subprocess.run(argv, shell=False, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DoorError(f"{action} command timed out after {self.timeout:g}s") from exc
        except OSError as exc:
            raise DoorError(f"{action} command could not run: {exc.strerror}") from exc
        if done.returncode != 0:
            err = done.stderr[:200].decode("utf-8", "replace").strip()
            raise DoorError(f"{action} command exited {done.returncode}: {err!r}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A relay that redirects is misconfigured; never follow it elsewhere."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def check_url(option: str, url: object) -> str:
    """An http(s) URL with a host, from config; ``option`` names it in errors."""
    if not isinstance(url, str) or any(c in url for c in "\r\n\x00 "):
        raise DoorConfigError(f"{option}: must be an http:// or https:// URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DoorConfigError(f"{option}: must be an http:// or https:// URL with a host")
    return url


class HttpDoor(TimedDoor):
    """Sends ``method`` requests to ``unlock_url`` / ``lock_url``; any non-2xx is a failure.

    Environment proxies are ignored (the relay is on the local network) and redirects are
    refused. ``headers`` (e.g. an auth token) and optional ``unlock_body`` / ``lock_body``
    come from config; ``{seconds}`` may appear in the unlock URL and body.
    """

    kind = "http"

    def __init__(self, name: str, *, unlock_url: str, lock_url: str, method: str = "POST",
                 timeout: float = 3.0, headers: Mapping[str, str] | None = None,
                 unlock_body: str | None = None, lock_body: str | None = None,
                 max_unlock_seconds: float = DEFAULT_MAX_UNLOCK_SECONDS) -> None:
        super().__init__(name, max_unlock_seconds=max_unlock_seconds)
        prefix = f"doors.{name}"
        self.unlock_url = check_url(f"{prefix}.unlock_url", unlock_url)
        self.lock_url = check_url(f"{prefix}.lock_url", lock_url)
        if method not in ("POST", "GET", "PUT"):
            raise DoorConfigError(f"{prefix}.method: must be POST, GET or PUT")
        if method == "GET" and (unlock_body is not None or lock_body is not None):
            raise DoorConfigError(f"{prefix}.method: GET cannot send unlock_body/lock_body")
        self.method = method
        self.timeout = timeout
        self.headers = dict(headers or {})
        for key, value in self.headers.items():
            if not isinstance(key, str) or not isinstance(value, str) or any(
                    c in key + value for c in "\r\n\x00"):
                raise DoorConfigError(f"{prefix}.headers: {key!r} must map a string to a "
                                      "string without line breaks")
        self.unlock_body = unlock_body
        self.lock_body = lock_body
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
        self._start()

    def _actuate(self, locked: bool, seconds: float | None) -> None:
        url = _fill(self.lock_url if locked else self.unlock_url, seconds)
        body = self.lock_body if locked else self.unlock_body
        data = _fill(body, seconds).encode() if body is not None else None
        if data is None and self.method != "GET":
            data = b""
        request = urllib.request.Request(url, data=data, method=self.method,  # noqa: S310
                                         headers=self.headers)
        action = "lock" if locked else "unlock"
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(MAX_RESPONSE_BYTES)
                status = response.status
        except urllib.error.HTTPError as exc:
            raise DoorError(f"{action} request got HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DoorError(f"{action} request failed: {reason}") from exc
        if not 200 <= status < 300:
            raise DoorError(f"{action} request got HTTP {status}")
