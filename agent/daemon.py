"""One place wires the whole agent (as Frigate's app does).

Workers loop on `while not stop.wait(interval)`; signals only set the stop
event. Periodic jobs run on apscheduler 3 with `coalesce=True`,
`max_instances=1` and a generous `misfire_grace_time`, so a job missed during an
outage runs once when the process can, instead of being skipped silently.
The door decision path (when a camera is configured) never waits on any of this.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from doorkeeper.agent.identity import AgentFiles
from doorkeeper.agent.sync import Syncer
from doorkeeper.agent.whitelist import LocalWhitelist

log = logging.getLogger("doorkeeper.agent")


@dataclass(frozen=True)
class SyncOptions:
    poll_interval_s: float = 30.0
    heartbeat_interval_s: float = 60.0
    misfire_grace_s: int = 3600


class SyncService:
    """Watch stream plus periodic polling and heartbeats, in background threads."""

    def __init__(self, data_dir: Path, options: SyncOptions = SyncOptions(),
                 on_applied: Callable[[int], None] | None = None,
                 status_extra: Callable[[], dict] | None = None) -> None:  # type: ignore[type-arg]
        self.files = AgentFiles(Path(data_dir))
        self.whitelist = LocalWhitelist(self.files.whitelist, self.files.storage_key())
        self.syncer = Syncer(self.files, self.whitelist, on_applied=on_applied, status_extra=status_extra)
        self.options = options
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": options.misfire_grace_s}
        )

    def start(self) -> None:
        self.scheduler.add_job(self._wake.set, "interval", seconds=self.options.poll_interval_s, id="poll")
        self.scheduler.add_job(self.syncer.heartbeat, "interval", seconds=self.options.heartbeat_interval_s,
                               id="heartbeat")
        self.scheduler.start()
        self._spawn("sync", self._sync_loop)
        self._spawn("watch", lambda: self.syncer.watch(self.stop, lambda _v: self._wake.set()))
        self._wake.set()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=f"doorkeeper-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def _sync_loop(self) -> None:
        while not self.stop.is_set():
            self._wake.wait()
            if self.stop.is_set():
                return
            self._wake.clear()
            result = self.syncer.sync_with_retries(attempts=3, max_wait_s=10.0)
            if not result.ok:
                log.warning("sync: %s (%s); doors keep deciding on version %d",
                            result.outcome, result.detail, result.version)

    def close(self) -> None:
        self.stop.set()
        self._wake.set()
        self.scheduler.shutdown(wait=False)
        for t in self._threads:
            t.join(timeout=5)
        self.syncer.close()
        self.whitelist.close()
