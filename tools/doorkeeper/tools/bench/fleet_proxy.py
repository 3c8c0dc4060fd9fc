"""A round-robin TCP balancer on loopback for `doorkeeper bench fleet`.

Each accepted connection goes to the next hub replica in turn and is piped both ways
byte for byte (an L4 balancer, as a cloud TCP load balancer or `kube-proxy`: one gRPC
connection stays on one replica for its whole life, which is why the hub ends watch
streams after a maximum age). Run as ``python -m doorkeeper.tools.bench.fleet_proxy JSON``
with ``{"port": P, "backends": ["127.0.0.1:5001", ...]}``; prints one line when it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from typing import Any

from doorkeeper.tools.bench.fleet_doors import raise_fd_limit

READ_BYTES = 256 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_BYTES):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass  # the other side went away: close ours too (below)
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


class Balancer:
    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self._next = itertools.cycle(range(len(backends)))
        self.connections = [0] * len(backends)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = next(self._next)
        host, port = self.backends[index].rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()  # the client sees a reset and reconnects, as behind a real balancer
            return
        self.connections[index] += 1
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.connections[index] -= 1


async def main(args: dict[str, Any]) -> None:
    raise_fd_limit()
    if args.get("core") is not None:
        os.sched_setaffinity(0, {args["core"]})
    balancer = Balancer(args["backends"])
    await asyncio.start_server(balancer.handle, "127.0.0.1", args["port"], backlog=4096)  # serves until exit
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"listening": args["port"]}), flush=True)
    await stop.wait()
    # Connections are cut here, as a balancer that goes away cuts them; the pipes' tasks need
    # no goodbye (and asyncio would print one traceback per cancelled connection).
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
