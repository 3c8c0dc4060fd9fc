"""Wiring of the hub: one place builds the store, domain, services and server."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import gc
import ipaddress
import logging
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from doorkeeper.hub.auth import Authenticator, AuthInterceptor
from doorkeeper.hub.devices import Devices
from doorkeeper.hub.edge import EdgeInterceptor, Refusals
from doorkeeper.hub.hubkeys import HubKeys
from doorkeeper.hub.lane import StoreLane
from doorkeeper.hub.logs import LogIngest
from doorkeeper.hub.logservice import LogService
from doorkeeper.hub.notify import SiteNotifier
from doorkeeper.hub.pg_store import PgChangeListener, PgHubStore, PgLogStore, is_postgres_url
from doorkeeper.hub.publisher import DEFAULT_BUNDLE_TTL_S, Publisher
from doorkeeper.hub.service import WATCH_MAX_AGE_S, AdminService, DeviceSyncService
from doorkeeper.hub.sqlite_store import SqliteHubStore
from doorkeeper.hub.store import HubStore, Operator
from doorkeeper.hub.whitelist import Whitelist
from doorkeeper.runtime import sdnotify
from doorkeeper.runtime.metrics import HubMetrics, SiteRollout
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.v1 import doorkeeper_pb2_grpc as rpc
from doorkeeper.wire import durable, keys
from doorkeeper.wire.capped import read_capped
from doorkeeper.wire.limits import LIMITS

log = logging.getLogger("doorkeeper.hub")

PUBLIC_METHODS = {
    "/doorkeeper.v1.DeviceSync/Register",
    "/doorkeeper.v1.DeviceSync/Challenge",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    # Reflection describes only the public contract (the .proto), nothing about the hub's data.
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}

# Every service health answers for ("" is the hub as a whole); all SERVING once started.
SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name for name in ("DeviceSync", "Admin"))
HEALTH_SERVICES = ("", *SERVICE_NAMES)

# Python's cyclic garbage collector collects its young generation every 700 net allocations
# by default: a hub holding thousands of doors allocates that many in well under a
# millisecond during a change, and `bench fleet` found 19 % of the hub's CPU in collections
# (2.7 of 14.0 s, 1,000 doors). A young collection every 50,000 allocations still frees the
# cycles a request leaves behind young; the start-up heap is frozen (never scanned again).
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """For a `hub serve` process (not for a hub embedded in another program or a test run)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# Calls gRPC holds for the hub before shedding any: above the doors one replica serves.
MAX_PENDING_CALLS = 20_000

# Keepalive: the server pings idle connections and permits the agents' pings
# (every 20 s); a half-open connection is noticed within about 40 s.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", LIMITS.grpc_max_message_bytes),
    ("grpc.max_send_message_length", LIMITS.grpc_max_message_bytes),
    # gRPC sets SO_REUSEPORT by default: a second hub on the same port would bind too and
    # take half the connections. One hub per port.
    ("grpc.so_reuseport", 0),
    # Calls that arrived but that the server has not taken up yet (grpc.aio takes them one at a
    # time from the event loop): past the soft limit gRPC core cancels new ones at random,
    # more the closer the backlog is to the hard limit, before any of our code sees them; the
    # door gets CANCELLED. The defaults (1,000 / 3,000) made a change at 2,000 doors answer
    # hundreds of fetches so (BENCHMARKS.md, "CANCELLED"). Every door of a site fetches at once.
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
]


# The hub's own threads: store calls and auth checks (each thread holds one SQLite
# connection; a call waits at most the busy timeout for the write lock), and bundle
# builds apart, so a big snapshot never takes the threads unary calls need.
CALL_WORKERS = 16
BUILD_WORKERS = 2


# What may already be in a directory given to `hub init` (a config written first, a
# file system's own lost+found); anything else means the directory is someone else's.
INIT_DIR_MAY_HOLD = frozenset({"hub.toml", "lost+found"})
LOCK_FILE = "hub.lock"


class HubInitError(Exception):
    pass


class HubBusy(HubInitError):
    """Another running hub holds this port or this data directory."""


def lock_data_dir(data_dir: Path) -> int:
    """Hold `DIR/hub.lock` (flock) for as long as the returned descriptor is open.
    Raises HubBusy when a running hub holds it; the lock ends with the process, so a
    crashed hub never leaves a stale one."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise HubBusy(f"{data_dir} is in use by another running hub (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def open_store(data_dir: Path, store_url: str | None = None, pool_size: int = 20) -> HubStore:
    """The hub store: SQLite files in the data directory (the default), or the PostgreSQL
    database at `store_url` shared by every replica. Either is migrated to the latest schema."""
    if store_url:
        if not is_postgres_url(store_url):
            raise HubInitError("store must be a postgresql:// URL (or empty: SQLite in the data directory)")
        return PgHubStore(store_url, pool_size=pool_size)
    return SqliteHubStore(data_dir / "hub.db")


def init_hub(data_dir: Path, store_url: str | None = None) -> Path:
    """Create keys, the database and the first admin credential (`DIR/operator.key`).
    With a PostgreSQL store the data directory holds only the keys (every replica is
    given a copy) and the database gets the schema and the admin."""
    data_dir = Path(data_dir)
    if (data_dir / "keys" / "hub.sign.key").exists():
        raise HubInitError(f"{data_dir} already holds a hub; refusing to overwrite its keys")
    if data_dir.exists():
        if not data_dir.is_dir():
            raise HubInitError(f"{data_dir} is not a directory")
        foreign = sorted(p.name for p in data_dir.iterdir() if p.name not in INIT_DIR_MAY_HOLD)
        if foreign:
            raise HubInitError(f"{data_dir} is not empty and holds no hub ({len(foreign)} entries, "
                               f"e.g. {foreign[0]!r}); give a new or empty directory")
    durable.make_dirs(data_dir)  # durable in its parent: a cut after init must find the hub
    data_dir.chmod(0o700)
    HubKeys.create(data_dir / "keys")
    store = open_store(data_dir, store_url)
    operator = keys.KeyPair.generate()
    keys.write_private(data_dir / "operator.key", bytes(operator.sign_key))
    store.add_operator(
        Operator(operator.key_id, operator.sign_public, "admin", "first-admin", int(time.time()))
    )
    store.close()
    return data_dir / "operator.key"


@dataclass
class Hub:
    """Everything a running hub holds."""

    store: HubStore
    keys: HubKeys
    whitelist: Whitelist
    devices: Devices
    publisher: Publisher
    authenticator: Authenticator
    notifier: SiteNotifier
    logs: LogService | None = None
    metrics: HubMetrics | None = None
    lock_fd: int | None = None  # DIR/hub.lock, held while this hub is open (SQLite only)
    change_feed: PgChangeListener | None = None  # wakes this replica on other replicas' changes

    @classmethod
    def open(cls, data_dir: Path, chunk_bytes: int = 0, data_key_file: Path | None = None,
             bundle_ttl_s: int = DEFAULT_BUNDLE_TTL_S, metrics: HubMetrics | None = None,
             store_url: str | None = None, reconcile_s: float = 30.0, pool_size: int = 20) -> Hub:
        """Open the hub in `data_dir` (its keys; its databases too unless `store_url` names
        the PostgreSQL database replicas share). SQLite files belong to one process, so that
        hub holds DIR/hub.lock; replicas on PostgreSQL share the data directory's keys (often
        a read-only mount) and take no lock: the database is what they agree through."""
        data_dir = Path(data_dir)
        if not (data_dir / "keys" / "hub.sign.key").exists():
            raise HubInitError(f"{data_dir} holds no hub; run `doorkeeper hub init --data {data_dir}`")
        lock_fd = None if store_url else lock_data_dir(data_dir)
        try:
            return cls._open(data_dir, chunk_bytes, data_key_file, bundle_ttl_s, metrics, lock_fd,
                             store_url, reconcile_s, pool_size)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @classmethod
    def _open(cls, data_dir: Path, chunk_bytes: int, data_key_file: Path | None, bundle_ttl_s: int,
              metrics: HubMetrics | None, lock_fd: int | None, store_url: str | None,
              reconcile_s: float, pool_size: int) -> Hub:
        hub_keys = HubKeys.load(data_dir / "keys", data_key_file)
        store = open_store(data_dir, store_url, pool_size)
        notifier = SiteNotifier()
        change_feed = None
        if isinstance(store, PgHubStore):
            if (data_dir / "hub.db").exists():  # e.g. left behind by `hub migrate --from --to`
                log.warning("%s is not used: this hub's state is in PostgreSQL", data_dir / "hub.db")
            logs = LogService(LogIngest(PgLogStore(store.pool)), store)
            change_feed = PgChangeListener(store.url, store.site_versions, notifier.notify, reconcile_s,
                                           end=notifier.end_device,
                                           check_devices=lambda: notifier.end_stale(store.device_keys))
        else:
            # Entry logs live in their own file: ciphertext and routing metadata only.
            logs = LogService.open(data_dir / "logs.db", store)
        return cls(
            store=store,
            keys=hub_keys,
            whitelist=Whitelist(store, hub_keys),
            devices=Devices(store, hub_keys),
            publisher=Publisher(
                store, hub_keys, replace(LIMITS, target_chunk_bytes=chunk_bytes) if chunk_bytes else LIMITS,
                bundle_ttl_s=bundle_ttl_s, metrics=metrics,
            ),
            authenticator=Authenticator(store, hub_keys.nonce_key),
            notifier=notifier,
            logs=logs,
            metrics=metrics or HubMetrics(process=False),
            lock_fd=lock_fd,
            change_feed=change_feed,
        )

    def close(self) -> None:
        if self.change_feed is not None:
            self.change_feed.close()
        self.publisher.close()
        self.store.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    return host, int(port)


def build_server(hub: Hub, listen: str, tls_cert: Path | None = None, tls_key: Path | None = None,
                 beacon_interval_s: float = 15.0, builds: Executor | None = None,
                 watch_max_age_s: tuple[float, float] = WATCH_MAX_AGE_S, lane: StoreLane | None = None,
                 ) -> tuple[grpc.aio.Server, int, health.HealthServicer]:
    """A configured, not yet started server, the port it bound, and its health servicer.
    Raises HubBusy when something already listens on the port (a second hub would
    otherwise share it through SO_REUSEPORT)."""
    host, wanted = split_listen(listen)
    if port_in_use(host, wanted):  # a clean one-line refusal before gRPC logs its own
        raise HubBusy(f"cannot listen on {listen}: the port is in use (another hub?)")
    refusals = Refusals(hub.metrics)
    # The auth interceptor runs first and lets requests the edge refused through to it.
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(hub.authenticator, PUBLIC_METHODS, refusals, lane),
                      EdgeInterceptor(refusals)],
        options=SERVER_OPTIONS,
    )
    rpc.add_DeviceSyncServicer_to_server(
        DeviceSyncService(hub.store, hub.authenticator, hub.devices, hub.publisher, hub.notifier,
                          hub.logs, beacon_interval_s, hub.metrics, refusals, builds, watch_max_age_s,
                          lane),
        server,
    )
    rpc.add_AdminServicer_to_server(
        AdminService(hub.store, hub.whitelist, hub.devices, hub.notifier, hub.logs, hub.metrics, refusals),
        server,
    )
    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if tls_cert and tls_key:
        pair = (read_capped(tls_key, LIMITS.max_pem_bytes, "TLS key"),
                read_capped(tls_cert, LIMITS.max_pem_bytes, "TLS certificate"))
        creds = grpc.ssl_server_credentials([pair])
        add_port = functools.partial(server.add_secure_port, listen, creds)
    else:
        if not is_loopback(host):
            raise HubInitError(
                f"refusing to serve without TLS on {host}: give --tls-cert and --tls-key "
                "(plaintext is allowed on loopback only)"
            )
        add_port = functools.partial(server.add_insecure_port, listen)
    try:
        port = add_port()
    except RuntimeError:  # grpc says only "Failed to bind" (a race with the check above)
        raise HubBusy(f"cannot listen on {listen}: the port is in use (another hub?) "
                      "or the address is not this machine's") from None
    if not tls_cert:
        log.warning("serving WITHOUT TLS on %s (loopback only)", listen)
    return server, port, health_servicer


def port_in_use(host: str, port: int) -> bool:
    """True when binding `host:port` fails with "address in use" (gRPC's own bind, with
    SO_REUSEPORT off, is the real guard; this only gives the refusal a clean line)."""
    if port == 0:
        return False
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except OSError:
        return False  # gRPC reports an unresolvable host itself
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


async def serve(hub: Hub, listen: str, tls_cert: Path | None = None, tls_key: Path | None = None,
                ready: asyncio.Event | None = None, stop: asyncio.Event | None = None,
                beacon_interval_s: float = 15.0, on_port=None,  # type: ignore[no-untyped-def]
                grace_s: float = 5.0, watch_max_age_s: tuple[float, float] = WATCH_MAX_AGE_S) -> None:
    """Run until SIGTERM/SIGINT (or `stop`); then stop gracefully (in-flight calls finish)."""
    hub.notifier.bind(asyncio.get_running_loop())
    if hub.change_feed is not None:
        hub.change_feed.start()
    # Threads start lazily; asyncio.run shuts the default executor down at its end.
    loop = asyncio.get_running_loop()
    calls = ThreadPoolExecutor(CALL_WORKERS, thread_name_prefix="doorkeeper-call")
    builds = ThreadPoolExecutor(BUILD_WORKERS, thread_name_prefix="doorkeeper-build")
    # SQLite: a lane batch is one transaction (one WAL sync for a change's nonces and reports).
    lane = StoreLane(batch=hub.store.atomic if isinstance(hub.store, SqliteHubStore) else None)
    server, port, health_servicer = build_server(hub, listen, tls_cert, tls_key, beacon_interval_s,
                                                 builds, watch_max_age_s, lane)
    loop.set_default_executor(calls)
    for pool, workers in ((calls, CALL_WORKERS), (builds, BUILD_WORKERS)):
        start_threads(pool, workers, hub.store.list_sites)
    await server.start()
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    check_fd_limit(len(hub.store.list_devices()))
    log.info("hub listening on port %d (key %s, %s)", port, hub.keys.key_id,
             keys.fingerprint_text(hub.keys.pair.sign_public))
    if on_port is not None:
        on_port(port)
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            log.debug("cannot install handler for %s outside the main thread", sig)
    if ready is not None:
        ready.set()
    sdnotify.ready(f"serving on port {port}")
    watchdog = sdnotify.Watchdog()
    feeder = asyncio.create_task(_feed(watchdog, stop)) if watchdog.enabled else None
    rollout = asyncio.create_task(_rollout(hub, stop, beacon_interval_s))
    # In the background: one X25519 per registered device, so the first publish after a start
    # costs what later ones do (`doorkeeper bench sync`: fanout cold vs warm).
    warm = asyncio.create_task(asyncio.to_thread(lambda: hub.publisher.warm(hub.store.list_devices())))
    await stop.wait()
    sdnotify.stopping()
    log.info("stopping: ending watch streams, finishing in-flight calls")
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    hub.notifier.close()  # watch streams end now; fetches and uploads get the grace period
    await server.stop(grace=grace_s)
    for task in (feeder, rollout, warm):
        if task is not None:
            await task
    builds.shutdown(wait=True)
    lane.close()


# Descriptors a hub holds besides one per connected door: database files and their WAL,
# its thread pools' connections, the listening socket, metrics, logs, operators.
FD_OVERHEAD = 64


def check_fd_limit(registered_devices: int) -> int:
    """Raise the soft open-file limit to the hard one, log it, and warn when it cannot hold a
    connection for every registered door (a door holds one; the default soft limit of 1,024
    cannot hold 1,000 doors). Returns the soft limit in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    needed = registered_devices + FD_OVERHEAD
    log.info("open-file limit %d (hard %d); %d registered doors need about %d",
             soft, hard, registered_devices, needed)
    if soft < needed:
        log.warning("open-file limit %d is below the %d that %d registered doors need: doors beyond "
                    "it cannot connect. Raise it (systemd LimitNOFILE=, compose ulimits.nofile, "
                    "the container runtime's default in Kubernetes); see deploy/README.md",
                    soft, needed, registered_devices)
    return soft


def start_threads(pool: ThreadPoolExecutor, workers: int, first: Callable[[], object]) -> None:
    """Start all `workers` threads of `pool` now, each running `first` once (so each opens its
    store connection now): the hub's descriptors are steady from the start, not growing
    with load until the pool is full."""
    barrier = threading.Barrier(workers)

    def start() -> None:
        barrier.wait(timeout=60)  # every thread busy at once: the pool must start them all
        first()

    for _ in range(workers):
        pool.submit(start).add_done_callback(_log_start_failure)


def _log_start_failure(done: Future[None]) -> None:
    if done.exception() is not None:  # threads then start on demand, as they would anyway
        log.warning("hub worker threads not started up front: %r", done.exception())


async def _set_health(servicer: health.HealthServicer, status: int) -> None:
    for name in HEALTH_SERVICES:
        result = servicer.set(name, status)
        if asyncio.iscoroutine(result):
            await result


async def _rollout(hub: Hub, stop: asyncio.Event, interval_s: float) -> None:
    """Refresh the per-site rollout gauges from what devices reported (signed manifests)."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(refresh_rollout, hub)
        except Exception as exc:  # metrics must never take the hub down
            log.warning("rollout metrics not refreshed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)


def refresh_rollout(hub: Hub) -> None:
    if hub.metrics is None:
        return
    for site in hub.store.list_sites():
        devices = [d for d in hub.devices.status(site.site_id) if d.registered]
        hub.metrics.set_site(SiteRollout(
            site=site.name, version=site.version, registered=len(devices),
            at_version=sum(d.reported_version == site.version for d in devices),
            in_sync=sum(d.in_sync for d in devices)))


async def _feed(watchdog: sdnotify.Watchdog, stop: asyncio.Event) -> None:
    """Feed systemd's watchdog from the event loop: a stalled loop stops feeding it."""
    interval = (watchdog.interval or 10.0) / 4
    while not stop.is_set():
        watchdog.kick()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
