"""A round-robin TCP balancer on loopback, for tests with several hub replicas.

The smallest honest stand-in for the L4 balancer of a deployment: each accepted
connection goes to the next backend that accepts a TCP connection (a dead one is
skipped), and bytes are relayed both ways until either side closes. A gRPC channel
is one long TCP connection, so it stays on one replica until that connection ends;
after a replica dies the agent's reconnect lands on a live one.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading

log = logging.getLogger("tests.balancer")


class Balancer:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self._next = itertools.cycle(range(len(backends)))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.routed: list[int] = []  # backend port of each accepted connection
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _connect(self) -> socket.socket | None:
        for _ in range(len(self.backends)):
            port = self.backends[next(self._next)]
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
            upstream.settimeout(None)
            self.routed.append(port)
            return upstream
        return None

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                s.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError as exc:  # either side went away: end both directions below
        log.debug("relay ended: %s", exc)
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue
