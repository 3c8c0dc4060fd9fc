"""Prometheus metrics for the hub and the agent.

Every metric is defined here, in :class:`AgentMetrics` and :class:`HubMetrics`, each on its
own :class:`~prometheus_client.CollectorRegistry` (one per process role; tests create as many
as they like). Label values are clamped to known sets, so hostile input can never create new
time series. :func:`start_metrics_server` serves one registry over HTTP and refuses any address
but loopback unless ``allow_remote=True``: the endpoint has no authentication and decision
counters show when residents come and go.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from doorkeeper.runtime.config.loader import is_loopback_host, parse_listen

log = logging.getLogger(__name__)

# `*_created` series double what a scrape carries and no doorkeeper dashboard uses them.
# (A process-wide prometheus_client switch; doorkeeper processes export only these metrics.)
disable_created_metrics()

# Label values: kept in step with agent.policy.Result / Credential and agent.camera.BadFrame
# (tests/test_metrics.py checks). Anything else is counted as "other".
DECISION_RESULTS = ("granted", "denied", "unknown", "shadow")
CREDENTIALS = ("face", "card", "pin")
BAD_FRAME_REASONS = ("empty", "grayscale", "four_channel", "bad_shape", "too_large", "wrong_dtype",
                     "truncated", "not_image", "outside_dir", "unreadable")
BUNDLE_KINDS = ("snapshot", "delta")
GRPC_CODES = ("CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
              "UNAUTHENTICATED")
OTHER = "other"
# Why an RPC was refused (hub.edge, hub.auth, hub.service's domain errors); else "other".
RPC_ERROR_REASONS = ("malformed", "over_cap", "unsigned", "bad_metadata", "unknown_principal",
                     "unregistered", "bad_signature", "replay", "forbidden", "unauthenticated",
                     "registration_refused", "invalid_request", "bad_template", "bad_manifest",
                     "bad_log_batch", "not_found", "conflict", "seal_error", "store_unavailable", "internal")
# Frame-to-decision latency is 25-60 ms on a door terminal (BENCHMARKS.md); buckets are dense
# from 10 to 200 ms and coarse beyond, so p50/p99 are readable where it matters.
DECISION_LATENCY_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1,
                            0.125, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)

AGENT_METRICS = (
    "doorkeeper_decisions_total", "doorkeeper_decision_latency_seconds", "doorkeeper_whitelist_version",
    "doorkeeper_sync_lag_seconds", "doorkeeper_outbox_backlog_records", "doorkeeper_upload_errors_total",
    "doorkeeper_bad_frames_total", "doorkeeper_stale", "doorkeeper_door_mode",
)
DOOR_MODES = ("enforce", "shadow")
HUB_METRICS = (
    "doorkeeper_connected_devices", "doorkeeper_site_version", "doorkeeper_devices_in_sync",
    "doorkeeper_rollout_progress", "doorkeeper_bundles_built_total", "doorkeeper_bundles_pushed_total",
    "doorkeeper_rpc_errors_total",
)


def _clamp(value: object, allowed: Iterable[str]) -> str:
    text = str(getattr(value, "value", value))
    return text if text in allowed else OTHER


def scrape_time(gauge: Gauge, fn: Callable[[], float | None]) -> None:
    """Compute ``gauge`` from ``fn`` at each scrape (``Gauge.set_function``).

    ``fn`` runs on the metrics server's thread: it must be cheap and thread-safe (read a
    field, do not query SQLite). None becomes NaN; an exception is logged (once per kind) and
    reported as NaN rather than failing the whole scrape.
    """
    seen: set[str] = set()
    name = next(iter(gauge.describe())).name

    def safe() -> float:
        try:
            value = fn()
        except Exception as exc:  # a broken callback must not take every other metric down
            kind = type(exc).__name__
            if kind not in seen:
                seen.add(kind)
                log.warning("metric %s: callback failed: %s", name, kind)
            return math.nan
        return math.nan if value is None else float(value)

    gauge.set_function(safe)


def seconds_since(timestamp: Callable[[], float | None],
                  clock: Callable[[], float] = time.time) -> Callable[[], float]:
    """A callable for :func:`scrape_time`: seconds since ``timestamp()`` (same clock as
    ``clock``), +Inf while ``timestamp()`` is None or 0 (never happened)."""

    def age() -> float:
        then = timestamp()
        return math.inf if not then else max(0.0, clock() - then)

    return age


class AgentMetrics:
    """The agent's metrics, registered on ``self.registry``. Where each is updated:

    * ``decisions_total{result,credential}`` and ``decision_latency_seconds``: by the decision
      loop, through :meth:`record_decision`, once per decision.
    * ``whitelist_version``: set when a bundle is applied (and at start).
    * ``sync_lag_seconds``: ``scrape_time(m.sync_lag_seconds, seconds_since(last_ok))``.
    * ``outbox_backlog_records``: after each append/upload, or ``scrape_time`` on a cached count.
    * ``upload_errors_total``: each failed upload attempt.
    * ``bad_frames_total{reason}``: :meth:`count_bad_frames` with the camera's cumulative counts.
    * ``stale``: 1 while the freshness policy says stale, else 0.
    * ``door_mode{mode}``: 1 for the mode the door acts in (enforce or shadow), 0 for the
      other, through :meth:`set_door_mode` (at start, on each applied bundle, every sample).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)  # RSS, CPU, open files: the terminal's own health
        self.decisions_total = Counter(
            "doorkeeper_decisions_total", "Door decisions by result and credential type.",
            ("result", "credential"), registry=r)
        self.decision_latency_seconds = Histogram(
            "doorkeeper_decision_latency_seconds",
            "Frame grab (or credential presentation) to decision, in seconds.",
            buckets=DECISION_LATENCY_BUCKETS, registry=r)
        self.whitelist_version = Gauge(
            "doorkeeper_whitelist_version", "Version of the whitelist the doors decide on.", registry=r)
        self.sync_lag_seconds = Gauge(
            "doorkeeper_sync_lag_seconds", "Seconds since the last successful sync (+Inf: never).",
            registry=r)
        self.outbox_backlog_records = Gauge(
            "doorkeeper_outbox_backlog_records", "Entry-log records waiting for upload.", registry=r)
        self.upload_errors_total = Counter(
            "doorkeeper_upload_errors_total", "Failed entry-log upload attempts.", registry=r)
        self.bad_frames_total = Counter(
            "doorkeeper_bad_frames_total", "Camera frames skipped, by reason.", ("reason",), registry=r)
        self.stale = Gauge(
            "doorkeeper_stale", "1 while the hub has not vouched for the whitelist within the "
            "site's offline-validity period.", registry=r)
        for result in (*DECISION_RESULTS, OTHER):  # zero series exist before the first decision
            for credential in CREDENTIALS:
                self.decisions_total.labels(result, credential)
        self.door_mode = Gauge(
            "doorkeeper_door_mode", "1 for the mode the door acts in: enforce, or shadow (decides "
            "and records, never actuates; set by the hub or the installer's flag).", ("mode",),
            registry=r)
        self.set_door_mode("enforce")
        for reason in BAD_FRAME_REASONS:
            self.bad_frames_total.labels(reason)
        self.sync_lag_seconds.set(math.inf)
        self._bad_seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def record_decision(self, result: object, credential: object, latency_s: float | None = None) -> None:
        """Count one decision (unknown label values become "other"); observe its latency."""
        self.decisions_total.labels(_clamp(result, DECISION_RESULTS), _clamp(credential, CREDENTIALS)).inc()
        if latency_s is not None and math.isfinite(latency_s) and latency_s >= 0:
            self.decision_latency_seconds.observe(latency_s)

    def set_door_mode(self, mode: str) -> None:
        """Mark ``mode`` ("enforce" or "shadow"; anything else counts as shadow) as current."""
        current = mode if mode in DOOR_MODES else "shadow"
        for name in DOOR_MODES:
            self.door_mode.labels(name).set(1 if name == current else 0)

    def count_bad_frames(self, counts: Mapping[str, int]) -> None:
        """Add what grew since the last call, given a camera's cumulative ``bad_frames``."""
        with self._lock:
            for reason, total in counts.items():
                label = _clamp(reason, BAD_FRAME_REASONS)
                key = str(reason)
                delta = int(total) - self._bad_seen.get(key, 0)
                if delta > 0:
                    self.bad_frames_total.labels(label).inc(delta)
                self._bad_seen[key] = max(int(total), self._bad_seen.get(key, 0))


@dataclass(frozen=True)
class SiteRollout:
    """What fleet status knows of one site, from the devices' signed manifests."""

    site: str
    version: int  # the site's current whitelist version
    registered: int  # devices registered to the site
    at_version: int  # devices whose signed manifest reports ``version``
    in_sync: int  # of those, devices whose reported state digest matches the hub's


class HubMetrics:
    """The hub's metrics, registered on ``self.registry``. Where each is updated:

    * ``connected_devices``: ``inc()`` when a device's Watch stream opens, ``dec()`` when it
      ends (in a ``finally``), or :meth:`watching` as a context manager.
    * ``site_version``, ``devices_in_sync``, ``rollout_progress`` (all ``{site}``): through
      :meth:`set_site` whenever a device reports or a site's version changes (values come from
      signed manifests, never from what the hub merely queued).
    * ``bundles_built_total{kind}``: each bundle built (not served from the cache).
    * ``bundles_pushed_total``: each delta sent on a watch stream (:meth:`bundle_pushed`), a
      Fetch each door did not need.
    * ``rpc_errors_total{method,code,reason}``: :meth:`record_rpc_error` for every refused call
      (hub.edge.Refusals); methods not in the service definitions are counted as "other".
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True,
                 methods: Iterable[str] | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
        self.connected_devices = Gauge(
            "doorkeeper_connected_devices", "Devices with an open Watch stream.", registry=r)
        self.site_version = Gauge(
            "doorkeeper_site_version", "Current whitelist version of each site.", ("site",), registry=r)
        self.devices_in_sync = Gauge(
            "doorkeeper_devices_in_sync", "Devices whose signed manifest reports the site's current "
            "version and state digest.", ("site",), registry=r)
        self.rollout_progress = Gauge(
            "doorkeeper_rollout_progress", "Fraction of a site's registered devices whose signed "
            "manifest reports the site's current version (1 when it has none).", ("site",), registry=r)
        self.bundles_built_total = Counter(
            "doorkeeper_bundles_built_total", "Bundles built, by kind.", ("kind",), registry=r)
        self.rpc_errors_total = Counter(
            "doorkeeper_rpc_errors_total", "RPCs that ended with an error status.",
            ("method", "code", "reason"), registry=r)
        self.bundles_pushed_total = Counter(
            "doorkeeper_bundles_pushed_total", "Deltas sent inline on watch streams (no Fetch needed).",
            registry=r)
        for kind in BUNDLE_KINDS:
            self.bundles_built_total.labels(kind)
        self._methods = frozenset(methods) if methods is not None else None

    def methods(self) -> frozenset[str]:
        """The RPC method names counted by name (default: every method of the service
        definitions plus the health service)."""
        if self._methods is None:
            from doorkeeper.v1 import doorkeeper_pb2 as pb

            names = {f"/{s.full_name}/{m.name}" for s in pb.DESCRIPTOR.services_by_name.values()
                     for m in s.methods}
            health = {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}
            self._methods = frozenset(names | health)
        return self._methods

    def record_rpc_error(self, method: str, code: object, reason: str = OTHER) -> None:
        """Count one failed RPC by full method name (``/doorkeeper.v1.Admin/AddSite``),
        code (a ``grpc.StatusCode`` or its name) and reason (one of RPC_ERROR_REASONS)."""
        name = getattr(code, "name", code)
        self.rpc_errors_total.labels(_clamp(method, self.methods()),
                                     str(name) if name in GRPC_CODES else OTHER,
                                     _clamp(reason, RPC_ERROR_REASONS)).inc()

    def bundle_built(self, kind: object) -> None:
        """Count one built bundle: "snapshot" or "delta" (else "other")."""
        self.bundles_built_total.labels(_clamp(kind, BUNDLE_KINDS)).inc()

    def bundle_pushed(self) -> None:
        """Count one delta sent inline on a watch stream."""
        self.bundles_pushed_total.inc()

    def set_site(self, rollout: SiteRollout) -> None:
        """Publish one site's version, devices in sync and rollout progress."""
        self.site_version.labels(rollout.site).set(rollout.version)
        self.devices_in_sync.labels(rollout.site).set(rollout.in_sync)
        progress = 1.0 if rollout.registered <= 0 else min(1.0, rollout.at_version / rollout.registered)
        self.rollout_progress.labels(rollout.site).set(progress)

    def forget_site(self, site: str) -> None:
        """Drop a deleted site's series."""
        for gauge in (self.site_version, self.devices_in_sync, self.rollout_progress):
            gauge.remove(site)  # no-op when the site has no series

    def watching(self) -> _Watching:
        """``with metrics.watching(): ...`` counts one open Watch stream for its duration."""
        return _Watching(self.connected_devices)


class _Watching:
    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    def __enter__(self) -> None:
        self._gauge.inc()

    def __exit__(self, *_exc: object) -> None:
        self._gauge.dec()


# ------------------------------------------------------------------ the endpoint


@dataclass
class MetricsServer:
    """A running metrics endpoint; :meth:`stop` shuts it down and joins its thread."""

    server: Any  # wsgiref WSGIServer
    thread: threading.Thread
    host: str

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout)


def start_metrics_server(listen: str, registry: CollectorRegistry, *,
                         allow_remote: bool = False) -> MetricsServer:
    """Serve ``registry`` at ``http://listen/metrics`` from a daemon thread (port 0 = any).

    Refused (ValueError) for an address that is not loopback unless ``allow_remote``: the
    endpoint is unauthenticated plaintext and its counters reveal when doors are used.
    Raises OSError when the address cannot be bound.
    """
    host, port = parse_listen(listen)
    if not allow_remote and not is_loopback_host(host):
        raise ValueError(f"metrics: refusing to serve on {host}, which is not loopback; "
                         "pass allow_remote=True (config metrics.allow_remote) to do so")
    server, thread = start_http_server(port, addr=host, registry=registry)
    thread.name = "doorkeeper-metrics"
    started = MetricsServer(server, thread, host)
    log.info("metrics on %s", started.url)
    return started
