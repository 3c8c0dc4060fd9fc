"""A loopback TCP proxy whose link the demo can cut and restore (a simulated network outage).

`LinkProxy` listens on 127.0.0.1 (port 0 by default) and relays every connection to one
upstream address, byte for byte, with two pump threads per connection. It knows nothing of
gRPC: to the door agent behind it, `cut()` looks like a cable pulled out (live connections
are reset, new ones are accepted and reset at once), `restore()` like the cable put back.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the peer sees the link fail, not a clean goodbye.

    Either step may find the socket already gone (the other pump closed it): that is the
    state we want, so those OSErrors are expected."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a pump thread blocked in recv()
    sock.close()


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    cut_connections: int = 0
    upstream_failures: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class _Link:
    """One relayed connection: client <-> upstream."""

    def __init__(self, proxy: LinkProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self._closed = False
        self._lock = threading.Lock()
        self._done = 0

    def start(self) -> None:
        for src, dst, up in ((self.client, self.upstream, True), (self.upstream, self.client, False)):
            threading.Thread(target=self._pump, args=(src, dst, up), daemon=True,
                             name=f"proxy-{'up' if up else 'down'}").start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)
                self.proxy._count(len(data), up)
            try:
                dst.shutdown(socket.SHUT_WR)  # half-close: pass the EOF on
            except OSError:
                self.close()
        except OSError:
            self.close()
        with self._lock:
            self._done += 1
            both = self._done == 2
        if both:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _reset(self.client)
        _reset(self.upstream)
        self.proxy._forget(self)


class LinkProxy:
    """Relay 127.0.0.1:<port> to ``upstream`` ("HOST:PORT") until ``close()``.

    ``cut()`` resets every live connection and refuses new ones until ``restore()``; both
    are idempotent and thread-safe. An upstream that cannot be reached (e.g. the hub is
    restarting) closes that one client connection, as a router would.
    """

    def __init__(self, upstream: str, listen_port: int = 0, connect_timeout_s: float = 2.0) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(port))
        self.connect_timeout_s = connect_timeout_s
        self.stats = ProxyStats()
        self._cut = False
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", listen_port))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def live_connections(self) -> int:
        with self._lock:
            return len(self._links)

    def start(self) -> LinkProxy:
        self._thread.start()
        return self

    def cut(self) -> int:
        """Take the link down; returns how many live connections were reset."""
        with self._lock:
            self._cut = True
            links = list(self._links)
        for link in links:
            link.close()
        with self._lock:
            self.stats.cut_connections += len(links)
        return len(links)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.warning("proxy %s: accept failed", self.address, exc_info=True)
                continue
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            refuse = self._cut
            if refuse:
                self.stats.refused += 1
        if refuse:
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=self.connect_timeout_s)
        except OSError:
            with self._lock:
                self.stats.upstream_failures += 1
            _reset(client)
            return
        upstream.settimeout(None)
        client.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(self, client, upstream)
        with self._lock:
            if self._cut:  # cut while we were connecting
                self.stats.refused += 1
                refuse = True
            else:
                self._links.add(link)
                self.stats.accepted += 1
        if refuse:
            link.close()
            return
        link.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _count(self, n: int, up: bool) -> None:
        with self._lock:
            if up:
                self.stats.bytes_up += n
            else:
                self.stats.bytes_down += n
