"""The fleet as the console sees it: one state per door, counts per site, and a poller.

A door's state, first match wins: revoked; waiting (registration token not used yet);
offline (not heard from for `offline_after_s`, or never); digest mismatch (holds the site's
version with another digest); stale (deciding under the stale policy); behind (holds an older
version than the hub serves it); in sync.

`FleetWatch` polls ListSites and Fleet in one background thread (every `interval_s`, and at
once after a change made through the console), so any number of open pages costs the hub one
Fleet call per interval. It also times convergence: for each site version it saw, when every
active door was first seen holding it. That is what this console observed, to within one
poll interval, since it started; it is labelled so on the pages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from doorkeeper.tools.console.hubapi import HubAPI, HubError
from doorkeeper.v1 import doorkeeper_pb2 as pb

STATES = ("in sync", "behind", "digest mismatch", "stale", "offline", "waiting", "revoked")
ATTENTION = ("behind", "digest mismatch", "stale", "offline")
_LIST_ORDER = ("digest mismatch", "offline", "stale", "behind", "waiting", "in sync", "revoked")


def door_state(d: pb.DeviceStatus, now: float, offline_after_s: float) -> str:
    if d.revoked_at:
        return "revoked"
    if not d.registered:
        return "waiting"
    if not d.last_seen or now - d.last_seen > offline_after_s:
        return "offline"
    if d.digest_mismatch:
        return "digest mismatch"
    if d.stale:
        return "stale"
    target = d.target_version or d.site_version
    if d.reported_version < target or d.behind:
        return "behind"
    return "in sync"


@dataclass
class SiteSummary:
    site: pb.SiteInfo
    counts: dict[str, int]
    doors: list[tuple[pb.DeviceStatus, str]]

    @property
    def attention(self) -> list[tuple[pb.DeviceStatus, str]]:
        return [(d, s) for d, s in self.doors if s in ATTENTION]


def summarise(
    sites: list[pb.SiteInfo], devices: list[pb.DeviceStatus], now: float, offline_after_s: float
) -> list[SiteSummary]:
    by_site: dict[str, list[tuple[pb.DeviceStatus, str]]] = {s.site_id: [] for s in sites}
    for d in devices:
        by_site.setdefault(d.site_id, []).append((d, door_state(d, now, offline_after_s)))
    out = []
    for s in sites:
        doors = sorted(by_site[s.site_id], key=lambda ds: (_LIST_ORDER.index(ds[1]), ds[0].name))
        counts = dict.fromkeys(STATES, 0)
        for _, state in doors:
            counts[state] += 1
        out.append(SiteSummary(s, counts, doors))
    return out


@dataclass
class Convergence:
    """One site version: when the console first saw it and when all active doors held it."""

    site_id: str
    version: int
    seen_at: float
    converged_at: float | None = None
    doors: int = 0
    baseline: bool = False  # already the site's version when the console started: not timed

    @property
    def seconds(self) -> float | None:
        return None if self.converged_at is None else self.converged_at - self.seen_at


@dataclass
class Snapshot:
    at: float
    sites: list[pb.SiteInfo] = field(default_factory=list)
    devices: list[pb.DeviceStatus] = field(default_factory=list)
    error: str = ""


class FleetWatch:
    """Background poller of the fleet (see the module's docstring)."""

    def __init__(
        self,
        api: HubAPI,
        interval_s: float = 5.0,
        offline_after_s: float = 600.0,
        clock: Callable[[], float] = time.time,
        keep_versions: int = 200,
    ) -> None:
        self.api = api
        self.interval_s = interval_s
        self.offline_after_s = offline_after_s
        self.clock = clock
        self.keep_versions = keep_versions
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._snapshot = Snapshot(at=0.0)
        self._fresh = threading.Condition(self._lock)
        self._convergence: dict[tuple[str, int], Convergence] = {}
        self._thread: threading.Thread | None = None
        self._changed_at = 0.0  # when the console last changed something at the hub

    def start(self) -> FleetWatch:
        self._thread = threading.Thread(target=self._run, name="console-fleetwatch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def poke(self) -> None:
        """Poll now (after a change made through the console); the next full page waits for it."""
        self._changed_at = self.clock()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def poll(self) -> Snapshot:
        now = self.clock()
        try:
            snap = Snapshot(now, self.api.sites(), self.api.fleet())
        except HubError as exc:
            snap = Snapshot(now, error=str(exc))
        with self._fresh:
            if not snap.error:
                self._track(snap)
                self._snapshot = snap
            else:  # keep the last good fleet; say why it is old
                self._snapshot = Snapshot(
                    self._snapshot.at, self._snapshot.sites, self._snapshot.devices, snap.error
                )
            self._fresh.notify_all()
        return snap

    def snapshot(self, wait_s: float = 15.0) -> Snapshot:
        """The latest snapshot; waits for the first poll (up to `wait_s`)."""
        with self._fresh:
            if self._snapshot.at == 0.0 and not self._snapshot.error:
                self._fresh.wait(wait_s)
            return self._snapshot

    def summaries(
        self, wait_s: float = 15.0, max_age_s: float | None = None
    ) -> tuple[Snapshot, list[SiteSummary]]:
        """Site summaries of the latest snapshot; with `max_age_s`, a snapshot older than that, or
        older than the console's last change, is replaced by a poll made now (a full page shows
        what the hub holds after a change made here; the live fragments take the snapshot as is)."""
        snap = self.snapshot(wait_s)
        if max_age_s is not None and (self.clock() - snap.at > max_age_s or snap.at < self._changed_at):
            snap = self.poll()
            if snap.error:
                snap = self.snapshot(0)
        return snap, summarise(snap.sites, snap.devices, self.clock(), self.offline_after_s)

    def _track(self, snap: Snapshot) -> None:
        active: dict[str, list[pb.DeviceStatus]] = {}
        for d in snap.devices:
            if d.registered and not d.revoked_at:
                active.setdefault(d.site_id, []).append(d)
        for s in snap.sites:
            key = (s.site_id, int(s.version))
            if key not in self._convergence:
                self._convergence[key] = Convergence(
                    s.site_id, int(s.version), snap.at, baseline=self._snapshot.at == 0.0
                )
            doors = active.get(s.site_id, [])
            for (site_id, version), c in self._convergence.items():
                if site_id != s.site_id or c.converged_at is not None:
                    continue
                if doors and all(d.reported_version >= version for d in doors):
                    c.converged_at, c.doors = snap.at, len(doors)
        if len(self._convergence) > self.keep_versions:
            for key in sorted(self._convergence, key=lambda k: self._convergence[k].seen_at)[
                : len(self._convergence) - self.keep_versions
            ]:
                del self._convergence[key]

    def convergence(self, site_id: str) -> list[Convergence]:
        with self._lock:
            return sorted(
                (c for c in self._convergence.values() if c.site_id == site_id), key=lambda c: c.version
            )
