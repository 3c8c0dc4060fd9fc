"""Who may use the console: a one-time login token, session cookies and CSRF tokens.

No I/O here. The console prints one login URL at start (as Jupyter does); its token is
exchanged, once, for a session id carried by an HttpOnly, SameSite=Strict cookie. Every
change (a POST) also carries the session's CSRF token, compared in constant time. Unknown
cookies, spent or wrong tokens and missing CSRF tokens are refused; none of them changes
any state here.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "dk_console"
SESSION_TTL_S = 12 * 3600


class LoginRefused(Exception):
    """The login token is wrong, or was already used."""


@dataclass
class Session:
    session_id: str
    csrf: str
    created: float
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, message), shown once

    def flash(self, kind: str, message: str) -> None:
        self.flashes.append((kind, message))

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out


class Sessions:
    """The console's login token and live sessions (in memory: a restart logs everyone out)."""

    def __init__(self, clock: Callable[[], float] = time.time, ttl_s: float = SESSION_TTL_S) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._token: str | None = secrets.token_urlsafe(32)
        self._sessions: dict[str, Session] = {}

    def login_token(self) -> str:
        """The one-time token to print at start; refused once spent."""
        with self._lock:
            if self._token is None:
                raise LoginRefused("the login token was already used")
            return self._token

    def new_login_token(self) -> str:
        """A fresh one-time token (the console's own command line asks for one)."""
        with self._lock:
            self._token = secrets.token_urlsafe(32)
            return self._token

    def redeem(self, token: str) -> Session:
        """Exchange the login token for a new session; a second use, or any other text, is refused."""
        with self._lock:
            current = self._token
            if current is None or not hmac.compare_digest(token.encode(), current.encode()):
                raise LoginRefused(
                    "this login link is not valid or was already used; restart the console for a new one"
                )
            self._token = None
            session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock())
            self._sessions[session.session_id] = session
            return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, forged or expired)."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self.clock() - session.created > self.ttl_s:
                del self._sessions[session_id]
                return None
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


def csrf_ok(session: Session, given: str | None) -> bool:
    """Whether `given` is this session's CSRF token (constant-time)."""
    return bool(given) and hmac.compare_digest(str(given).encode(), session.csrf.encode())
