"""Real parts for tests: a hub on a loopback port, operators and agents talking gRPC to it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from doorkeeper.agent.sync.hubclient import ADMIN, HubClient
from doorkeeper.agent.sync.identity import AgentFiles, init_agent
from doorkeeper.agent.sync.syncer import Syncer
from doorkeeper.agent.sync.whitelist import LocalWhitelist
from doorkeeper.hub.server import Hub, init_hub, serve
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from doorkeeper.wire import templates as tmpl

MODEL_ID = "test-model.onnx:" + "0" * 64

# A test taking the `hub` fixture, run once on SQLite and once on PostgreSQL.
both_stores = pytest.mark.parametrize("hub", ["sqlite", "postgresql"], indirect=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def random_template(rng: np.random.Generator, model_id: str = MODEL_ID) -> pb.Template:
    return tmpl.encode(rng.standard_normal(512).astype(np.float32), model_id)


class HubThread:
    """A real hub (gRPC over a loopback socket, SQLite file) in a background thread."""

    def __init__(self, data_dir: Path, port: int = 0, beacon_interval_s: float = 1.0,
                 tls: tuple[Path, Path] | None = None, store_url: str | None = None,
                 watch_max_age_s: tuple[float, float] | None = None,
                 rollout_check_s: float | None = None, reconcile_s: float = 30.0,
                 rollout_offline_after_s: int = 300) -> None:
        self.data_dir = data_dir
        self.rollout_check_s = rollout_check_s
        self.watch_max_age_s = watch_max_age_s
        self.tls = tls
        if not (data_dir / "keys").exists():
            init_hub(data_dir, store_url)
        self.hub = Hub.open(data_dir, store_url=store_url, pool_size=4, reconcile_s=reconcile_s,
                            rollout_offline_after_s=rollout_offline_after_s)
        self.port = port
        self.beacon_interval_s = beacon_interval_s
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def got_port(p: int) -> None:
                self.port = p
                self._ready.set()

            cert, key = self.tls or (None, None)
            extra: dict[str, object] = {}
            if self.watch_max_age_s:
                extra["watch_max_age_s"] = self.watch_max_age_s
            if self.rollout_check_s is not None:
                extra["rollout_check_s"] = self.rollout_check_s
            await serve(self.hub, f"127.0.0.1:{self.port}", cert, key, stop=self._stop,
                        beacon_interval_s=self.beacon_interval_s, on_port=got_port, **extra)  # type: ignore[arg-type]

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test through .error
            self.error = exc
            self._ready.set()

    def start(self) -> HubThread:
        self._thread.start()
        if not self._ready.wait(15) or self.error:
            raise RuntimeError(f"hub did not start: {self.error}")
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        self.hub.close()


@dataclass
class Operator:
    address: str
    key_file: Path

    def client(self) -> HubClient:
        from nacl.signing import SigningKey

        key = SigningKey(keys.read_private(self.key_file))
        return HubClient(self.address, keys.key_id(bytes(key.verify_key)), key)

    def call(self, method: str, request: object) -> object:
        with self.client() as c:
            return c.call(ADMIN + method, request)

    def add_site(self, name: str, **kw: object) -> pb.SiteInfo:
        return self.call("AddSite", pb.AddSiteRequest(name=name, **kw))  # type: ignore[return-value]

    def add_device(self, site: str, name: str, ttl: int = 3600) -> pb.AddDeviceResponse:
        return self.call("AddDevice", pb.AddDeviceRequest(site=site, name=name, token_ttl_s=ttl))  # type: ignore[return-value]

    def add_person(self, site: str, name: str = "Resident", **kw: object) -> pb.AddPersonResponse:
        if kw.get("templates"):
            kw.setdefault("consent", "test resident, signed form T-1")
        return self.call("AddPerson", pb.AddPersonRequest(site=site, name=name, **kw))  # type: ignore[return-value]

    def remove_person(self, person_id: str) -> pb.RemovePersonResponse:
        return self.call("RemovePerson", pb.RemovePersonRequest(person_id=person_id))  # type: ignore[return-value]


@dataclass
class Agent:
    files: AgentFiles
    whitelist: LocalWhitelist
    syncer: Syncer
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        self.syncer.close()
        self.whitelist.close()


def register_agent(operator: Operator, site: str, name: str, data_dir: Path) -> Agent:
    token = operator.add_device(site, name).token
    init_agent(data_dir, operator.address, token)
    return open_agent(data_dir)


def open_agent(data_dir: Path) -> Agent:
    files = AgentFiles(data_dir)
    whitelist = LocalWhitelist(files.whitelist, files.storage_key())
    return Agent(files, whitelist, Syncer(files, whitelist))


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Wait for an event (never a speed assertion: the timeout is generous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def doorkeeper_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "doorkeeper", *args]


def spawn_hub(data_dir: Path, port: int, *extra: str) -> subprocess.Popen:  # type: ignore[type-arg]
    """A hub in its own process (for kill -9 tests)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        doorkeeper_cmd("hub", "serve", "--data", str(data_dir), "--listen", f"127.0.0.1:{port}",
                       "--beacon-interval", "1", *extra),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    ok = wait_for(lambda: _port_open(port) or proc.poll() is not None, timeout=30)
    if not ok or proc.poll() is not None:
        raise RuntimeError(f"hub process failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return proc


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
