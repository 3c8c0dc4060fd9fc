"""The console's web application: security, sessions and the shared page machinery.

Every response carries a Content-Security-Policy that allows only the console's own
scripts, styles and images (no inline script, no inline style, no other origin), and
`Referrer-Policy: no-referrer` so the login URL never travels on. Every page needs a session
(`guarded`); every POST also needs the session's CSRF token. The pages themselves are in
`fleetpages`, `peoplepages`, `doorpages` and `auditpage`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from doorkeeper.tools.console.enrolment import FaceMaker, Imports
from doorkeeper.tools.console.fleetwatch import FleetWatch
from doorkeeper.tools.console.hubapi import HubAPI, HubError
from doorkeeper.tools.console.sessions import COOKIE, LoginRefused, Session, Sessions, csrf_ok

HERE = Path(__file__).resolve().parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
MAX_FORM_FILES = 5000  # a bulk import's folder of photos


class SecurityHeaders:
    """ASGI middleware: the headers above on every response; pages are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class Console:
    """What the pages share: the hub, the fleet poller, sessions, faces, imports, templates."""

    api: HubAPI
    watch: FleetWatch
    sessions: Sessions
    faces: FaceMaker
    imports: Imports
    templates: Jinja2Templates
    secure_cookie: bool = False

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        session: Session | None = request.scope.get("dk_session")
        base = {
            "csrf": session.csrf if session else "",
            "key_id": self.api.key_id,
            "hub": self.api.address,
            "flashes": session.take_flashes() if session else [],
        }
        return self.templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    async def page(self, request: Request, name: str, load: Callable[[], dict[str, Any]]) -> Response:
        """`name` rendered with what `load` reads from the hub (in a worker thread); a failed
        read is the refusal page with its readable sentence."""
        try:
            context = await run_in_threadpool(load)
        except HubError as exc:
            return self.refused(request, exc)
        return self.render(request, name, context)

    def refused(self, request: Request, exc: HubError, back: str = "/") -> Response:
        return self.render(request, "refused.html", {"message": str(exc), "back": back}, exc.http_status)

    def done(self, request: Request, message: str, to: str) -> Response:
        """A change made: say so on the next page (303, so a reload does not repeat it)."""
        session: Session = request.scope["dk_session"]
        session.flash("ok", message)
        self.watch.poke()
        return RedirectResponse(to, status_code=303)


Handler = Callable[[Request], Awaitable[Response]]


def guarded(console: Console, handler: Handler) -> Handler:
    """A page that needs a session; a POST also needs the session's CSRF token.

    Refusals change nothing: 401 without a (valid) session, 403 without the right token."""

    @functools.wraps(handler)
    async def page(request: Request) -> Response:
        session = console.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return console.templates.TemplateResponse(
                request,
                "login_needed.html",
                {"csrf": "", "flashes": [], "key_id": "", "hub": ""},
                status_code=401,
            )
        request.scope["dk_session"] = session
        if request.method == "POST":
            given = request.headers.get("x-csrf-token")
            if given is None:
                form = await request.form(max_files=MAX_FORM_FILES, max_fields=10_000)
                value = form.get("csrf")
                given = value if isinstance(value, str) else None
            if not csrf_ok(session, given):
                return console.render(
                    request,
                    "refused.html",
                    {
                        "message": "refused: this form is missing its security token (CSRF) or it is stale; "
                        "reload the page and try again",
                        "back": "/",
                    },
                    403,
                )
        return await handler(request)

    return page


def when(seconds: float | int | None) -> str:
    if not seconds:
        return "never"
    return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(seconds: float | int | None) -> str:
    if not seconds:
        return "never"
    delta = time.time() - float(seconds)
    if delta < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if delta >= size:
            return f"{int(delta // size)} {unit} ago"
    return f"{int(delta)} s ago"


def create_app(console: Console) -> Starlette:
    from doorkeeper.tools.console import auditpage, doorpages, fleetpages, peoplepages

    async def login(request: Request) -> Response:
        try:
            session = console.sessions.redeem(request.query_params.get("token", ""))
        except LoginRefused as exc:
            return console.templates.TemplateResponse(
                request,
                "login_needed.html",
                {"csrf": "", "flashes": [], "key_id": "", "hub": "", "refused": str(exc)},
                status_code=403,
            )
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            session.session_id,
            max_age=int(console.sessions.ttl_s),
            httponly=True,
            samesite="strict",
            secure=console.secure_cookie,
            path="/",
        )
        return response

    async def logout(request: Request) -> Response:
        console.sessions.end(request.scope["dk_session"].session_id)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    routes: list[Route | Mount] = [
        Route("/login", login, methods=["GET"]),
        Route("/logout", guarded(console, logout), methods=["POST"]),
    ]
    for module in (fleetpages, peoplepages, doorpages, auditpage):
        for path, handler, methods in module.routes(console):
            routes.append(Route(path, guarded(console, handler), methods=methods))
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    return Starlette(routes=routes, middleware=[])


def make_console(
    api: HubAPI,
    *,
    poll_s: float = 5.0,
    offline_after_s: float = 600.0,
    model_dir: str | None = None,
    secure_cookie: bool = False,
) -> Console:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["when"] = when
    templates.env.filters["ago"] = ago
    faces = FaceMaker(model_dir)
    return Console(
        api,
        FleetWatch(api, poll_s, offline_after_s),
        Sessions(),
        faces,
        Imports(api, faces),
        templates,
        secure_cookie,
    )


LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def asgi(console: Console, allowed_hosts: list[str] | None = None) -> ASGIApp:
    """The application with its security headers. With `allowed_hosts`, a request naming any
    other Host is refused (400): a web page whose name was rebound to 127.0.0.1 (DNS rebinding)
    cannot talk to a loopback console even without a session."""
    app: ASGIApp = create_app(console)
    if allowed_hosts is not None:
        app = TrustedHostMiddleware(app, allowed_hosts=allowed_hosts)
    return SecurityHeaders(app)
