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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from doorkeeper.agent.doorloop.policy import door_mode, mode_name
from doorkeeper.agent.entries.counts import DecisionCounts
from doorkeeper.agent.entries.outbox import Outbox, OutboxPolicy
from doorkeeper.agent.entries.uploader import UploadResult, upload_pending
from doorkeeper.agent.sync.hubclient import HubClient, describe, log_sender
from doorkeeper.agent.sync.identity import AgentFiles
from doorkeeper.agent.sync.state import HubClock
from doorkeeper.agent.sync.syncer import Syncer
from doorkeeper.agent.sync.whitelist import LocalWhitelist
from doorkeeper.wire.entrylog import Entry, OwnerKey

log = logging.getLogger("doorkeeper.agent")
# How long stopping may take: a replacement process must be able to start (and bind the
# metrics port) promptly, whether or not the hub answers.
STOP_DEADLINE_S = 3.0


@dataclass(frozen=True)
class SyncOptions:
    poll_interval_s: float = 30.0
    heartbeat_interval_s: float = 60.0
    upload_interval_s: float = 10.0
    misfire_grace_s: int = 3600
    # How often the door's clock is compared with a held bundle's effective time.
    held_check_interval_s: float = 1.0
    outbox: OutboxPolicy = field(default_factory=OutboxPolicy)
    # The hub to dial and the CA to verify it; None = as recorded at `agent init`.
    hub_address: str | None = None
    tls_ca: Path | None = None


class SyncService:
    """The agent's background half: whitelist sync, heartbeats, entry-log outbox and uploads."""

    def __init__(self, data_dir: Path, options: SyncOptions | None = None,
                 on_applied: Callable[[int], None] | None = None, metrics: Any = None,
                 clock: HubClock | None = None) -> None:
        """``clock``: the door's time (a test's, to move it without sleeping)."""
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
        # The installer's shadow flag (`DoorOptions.shadow`), set by the wiring.
        self.installer_shadow = False
        self.syncer = Syncer(self.files, self.whitelist, on_applied=self._applied,
                             status_extra=self._manifest_extra, hub_address=options.hub_address,
                             tls_ca=options.tls_ca, clock=clock)
        self.counts = DecisionCounts(self.files.counts, clock=self.syncer.clock.now)
        if options.hub_address and options.hub_address != self.syncer.identity.hub_address:
            log.info("dialling the hub at %s (configured; registered at %s)", options.hub_address,
                     self.syncer.identity.hub_address)
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
        """Append one decision to the outbox and count it in its hour (both durable on
        return; never raises for storage)."""
        result = self.outbox.append(entry)
        if not result.written:
            log.warning("decision not written to the outbox: %s", result.reason)
        self.counts.add(entry)  # after the entry log: a counting bug must not cost a record
        if self.metrics is not None:
            self.metrics.outbox_backlog_records.set(self.outbox.stats().backlog_records)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        o = self.options
        self.scheduler.add_job(self._wake.set, "interval", seconds=o.poll_interval_s, id="poll")
        self.scheduler.add_job(self._heartbeat, "interval", seconds=o.heartbeat_interval_s,
                               id="heartbeat")
        self.scheduler.add_job(self.upload, "interval", seconds=o.upload_interval_s, id="upload")
        # A bundle held for its effective time is applied by the door's clock, hub or no hub.
        self.scheduler.add_job(self.apply_due, "interval", seconds=o.held_check_interval_s, id="held")
        self.apply_due()  # and at start: a restart after the effective time applies it now
        self.syncer.state.installer_shadow = self.installer_shadow  # for `agent status`
        self.scheduler.start()
        self._spawn("sync", self._sync_loop)
        self._spawn("watch", lambda: self.syncer.watch(self.stop, lambda _v: self._wake.set()))
        self._wake.set()

    def apply_due(self) -> bool:
        """Apply a held bundle whose effective time has come (`Syncer.apply_due`)."""
        try:
            return self.syncer.apply_due()
        except Exception:  # the scheduler must keep calling: log, try again next time
            if self.stop.is_set():
                return False
            log.exception("applying a held bundle failed; retrying")
            return False

    def _heartbeat(self) -> None:
        try:
            self.syncer.heartbeat()
        except ValueError:  # grpc's "closed channel": only when stopping
            if not self.stop.is_set():
                raise

    def _spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        t = threading.Thread(target=target, name=f"doorkeeper-{name}", daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _sync_loop(self) -> None:
        while not self.stop.is_set():
            self._wake.wait()
            if self.stop.is_set():
                return
            self._wake.clear()
            try:
                result = self.syncer.sync_with_retries(attempts=3, max_wait_s=10.0, stop=self.stop)
            except Exception:  # this thread must outlive any bug: a dead sync thread never syncs again
                if self.stop.is_set():
                    return  # stopping: the channel was closed under the pass
                log.exception("sync pass failed; retrying at the next poll")
                continue
            if not result.ok:
                log.warning("sync: %s (%s); doors keep deciding on version %d",
                            result.outcome, result.detail, result.version)

    def upload(self, client: HubClient | None = None, stop: threading.Event | None = None) -> UploadResult:
        """Upload queued entry logs, oldest first; the hub's watermark says what may be deleted.

        The scheduled upload waits (up to 5 s a call) for a reconnecting channel; with
        ``client`` (the final upload at stop) calls fail as soon as the hub is unreachable.
        A failure is logged at WARNING with its reason when it starts or changes."""
        patient = client is None
        hub = client or self.syncer.client

        send = log_sender(hub, 5.0 if patient else hub.timeout_s, wait_for_ready=patient)

        result = upload_pending(self.outbox, send, device_key=self.syncer.device_keys.sign_key,
                                site_id=self.syncer.identity.site_id, stop=stop or self.stop)
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

    def close(self, deadline_s: float = STOP_DEADLINE_S) -> None:
        """Stop background work within about ``deadline_s``, whatever the hub does.

        Every call in flight is cancelled (the channel closes), so no worker waits on an
        unreachable hub; the workers are joined; a final upload on a fresh channel gets what
        is left of the deadline and fails at once when the hub is unreachable (the outbox
        keeps every record for the next start). The stop flag stays set. A worker still
        running at the deadline keeps its stores: they are left open (and this is logged)
        rather than closed under it; the process is ending anyway.
        """
        end = time.monotonic() + deadline_s
        self.stop.set()
        self._wake.set()
        self.syncer.client.close()  # cancels the watch stream, a fetch, a report, an upload
        workers = list(self._threads)
        if self.scheduler.running:
            # Its jobs' calls were just cancelled; wait for them, but never past the deadline.
            workers.append(self._spawn("scheduler-stop", lambda: self.scheduler.shutdown(wait=True)))
        for t in workers:
            t.join(max(0.0, end - time.monotonic()))
        running = [t.name for t in workers if t.is_alive()]
        if running:
            log.warning("stopping: %s still running after %.1fs; their stores are left open",
                        ", ".join(running), deadline_s)
            return
        final = self.syncer.client.fresh(timeout_s=max(0.5, min(2.0, end - time.monotonic())))
        try:
            result = self.upload(client=final, stop=threading.Event())
            if result.error:
                log.info("final upload stopped; %d records stay queued for the next start", result.backlog)
        except Exception as exc:  # the outbox keeps everything; next start uploads it
            log.warning("final upload failed: %s", describe(exc))
        finally:
            final.close()
        self.outbox.close()
        self.counts.close()
        self.whitelist.close()

    # ------------------------------------------------------------ hooks
    def _load_owner_key(self) -> None:
        config = self.whitelist_config
        if config is not None and config.log_owner_public_key:
            self._owner = OwnerKey.from_public(config.log_owner_public_key)

    def _applied(self, version: int) -> None:
        before = self.mode
        self.whitelist_config = self.whitelist.site_config()
        self._load_owner_key()
        if self.mode != before:
            log.warning("door mode now %s (was %s) from version %d", mode_name(self.mode).upper(),
                        mode_name(before).upper(), version)
        if self.metrics is not None:
            self.metrics.whitelist_version.set(version)
            self.metrics.set_door_mode(mode_name(self.mode))
        if self.on_applied_extra is not None:
            self.on_applied_extra(version)

    @property
    def mode(self) -> int:
        """The mode this door acts in (`pb.DoorMode`): the hub's word in the applied site
        config, or SHADOW when the installer's flag forces it."""
        return door_mode(self.whitelist_config, self.syncer.identity.device_id, self.installer_shadow)

    def _manifest_extra(self) -> dict[str, Any]:
        stats = self.outbox.stats()
        return {"outbox_backlog": stats.backlog_records,
                "outbox_dropped": stats.dropped_total + stats.unwritten_total,
                "mode": self.mode, "decisions": self.counts.hours()}
