"""The background half of a door: whitelist sync, heartbeats and entry-log uploads on a schedule
(`doorkeeper.agent.app` wires it beside the decision loop).

Workers loop on `while not stop.wait(interval)`; signals only set the stop
event. Periodic jobs run on apscheduler 3 with `coalesce=True`,
`max_instances=1` and a generous `misfire_grace_time`, so a job missed during
an outage runs once when the process can instead of being skipped silently.
Nothing here is on the door decision path: decisions read in-memory state
(gallery, owner key) that these jobs swap in when a sync lands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from apscheduler.schedulers.background import BackgroundScheduler

from doorkeeper.agent.entries.outbox import Outbox, OutboxPolicy
from doorkeeper.agent.entries.uploader import UploadFailed, UploadResult, upload_pending
from doorkeeper.agent.sync.hubclient import SYNC, describe, transient
from doorkeeper.agent.sync.identity import AgentFiles
from doorkeeper.agent.sync.syncer import Syncer
from doorkeeper.agent.sync.whitelist import LocalWhitelist
from doorkeeper.wire.entrylog import Entry, OwnerKey

log = logging.getLogger("doorkeeper.agent")


@dataclass(frozen=True)
class SyncOptions:
    poll_interval_s: float = 30.0
    heartbeat_interval_s: float = 60.0
    upload_interval_s: float = 10.0
    misfire_grace_s: int = 3600
    outbox: OutboxPolicy = field(default_factory=OutboxPolicy)


class SyncService:
    """The agent's background half: whitelist sync, heartbeats, entry-log outbox and uploads."""

    def __init__(self, data_dir: Path, options: SyncOptions | None = None,
                 on_applied: Callable[[int], None] | None = None, metrics: Any = None) -> None:
        options = options or SyncOptions()
        self.metrics = metrics
        self.files = AgentFiles(Path(data_dir))
        self.options = options
        self.whitelist = LocalWhitelist(self.files.whitelist, self.files.storage_key())
        self.on_applied_extra = on_applied
        self._owner: OwnerKey | None = None
        self.whitelist_config = self.whitelist.site_config()
        self._load_owner_key()
        if metrics is not None:
            metrics.whitelist_version.set(self.whitelist.version)
        self.syncer = Syncer(self.files, self.whitelist, on_applied=self._applied,
                             status_extra=self._manifest_extra)
        self.outbox = Outbox(self.files.outbox, device_id=self.syncer.identity.device_id,
                             owner_key=lambda: self._owner, policy=options.outbox)
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._upload_error = ""
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": options.misfire_grace_s}
        )

    # ------------------------------------------------------------ decisions
    def record(self, entry: Entry) -> None:
        """Append one decision to the outbox (durable on return; never raises for storage)."""
        result = self.outbox.append(entry)
        if not result.written:
            log.warning("decision not written to the outbox: %s", result.reason)
        if self.metrics is not None:
            self.metrics.outbox_backlog_records.set(self.outbox.stats().backlog_records)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        o = self.options
        self.scheduler.add_job(self._wake.set, "interval", seconds=o.poll_interval_s, id="poll")
        self.scheduler.add_job(self.syncer.heartbeat, "interval", seconds=o.heartbeat_interval_s,
                               id="heartbeat")
        self.scheduler.add_job(self.upload, "interval", seconds=o.upload_interval_s, id="upload")
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
            try:
                result = self.syncer.sync_with_retries(attempts=3, max_wait_s=10.0)
            except Exception:  # this thread must outlive any bug: a dead sync thread never syncs again
                log.exception("sync pass failed; retrying at the next poll")
                continue
            if not result.ok:
                log.warning("sync: %s (%s); doors keep deciding on version %d",
                            result.outcome, result.detail, result.version)

    def upload(self) -> UploadResult:
        """Upload queued entry logs, oldest first; the hub's watermark says what may be deleted.
        A failure is logged at WARNING with its reason when it starts or changes."""
        def send(batch):  # type: ignore[no-untyped-def]
            try:
                return self.syncer.client.call(SYNC + "UploadLogs", batch, timeout=5.0, wait_for_ready=True)
            except grpc.RpcError as exc:
                raise UploadFailed(describe(exc), transient(exc)) from exc

        result = upload_pending(self.outbox, send, device_key=self.syncer.device_keys.sign_key,
                                site_id=self.syncer.identity.site_id, stop=self.stop)
        if result.error and result.error != self._upload_error:
            what = "hub unreachable" if result.transient else "hub refused the batch"
            log.warning("entry-log upload failed (%s): %s; %d records stay queued and are resent",
                        what, result.error, result.backlog)
        elif self._upload_error and not result.error:
            log.info("entry-log upload works again (%d records still queued)", result.backlog)
        self._upload_error = result.error
        if self.metrics is not None:
            self.metrics.outbox_backlog_records.set(result.backlog)
            if result.error:
                self.metrics.upload_errors_total.inc()
        return result

    def close(self) -> None:
        """Stop background work; a final upload is attempted so little stays queued."""
        self.stop.set()
        self._wake.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        for t in self._threads:
            t.join(timeout=5)
        self.stop.clear()
        try:
            self.upload()
        except Exception as exc:  # the outbox keeps everything; next start uploads it
            log.warning("final upload failed: %s", describe(exc))
        self.stop.set()
        self.syncer.close()
        self.outbox.close()
        self.whitelist.close()

    # ------------------------------------------------------------ hooks
    def _load_owner_key(self) -> None:
        config = self.whitelist_config
        if config is not None and config.log_owner_public_key:
            self._owner = OwnerKey.from_public(config.log_owner_public_key)

    def _applied(self, version: int) -> None:
        self.whitelist_config = self.whitelist.site_config()
        self._load_owner_key()
        if self.metrics is not None:
            self.metrics.whitelist_version.set(version)
        if self.on_applied_extra is not None:
            self.on_applied_extra(version)

    def _manifest_extra(self) -> dict[str, int]:
        stats = self.outbox.stats()
        return {"outbox_backlog": stats.backlog_records,
                "outbox_dropped": stats.dropped_total + stats.unwritten_total}
