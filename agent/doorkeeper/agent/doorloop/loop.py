"""The door's verification loop: camera frame -> face -> match -> confirm -> decide -> act -> record.

Offline-first (DESIGN.md): a decision never waits on the network, a lock, or an upload.

* Everything a decision reads comes from one immutable in-memory snapshot of the whitelist
  (:class:`~doorkeeper.agent.doorloop.whitelistview.WhitelistView`), rebuilt by the sync thread and
  swapped in by reference (``DoorLoop.refresh`` is the sync's ``on_applied`` hook).
* The door is driven by a worker thread: ``command``/``http`` drivers may block for their
  timeout, and the decision path only puts a job on a queue.
* ``on_decision`` (the wiring appends to the entry-log outbox there) is called by a recorder
  thread, in decision order, one call at a time, so an fsync never delays the next frame.

A face must be the best, accepted match for the same person over ``confirm_frames``
consecutive frames, and is decided once per *episode* (while it stays in view), so a resident
standing at the door is one record, not one per frame, and so is a stranger
(:mod:`~doorkeeper.agent.doorloop.episodes`).

Fail secure: ``close()`` (called when ``run`` returns, for whatever reason) stops the
workers, locks the door and closes it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from doorkeeper.agent.camera import Frame, FrameSource
from doorkeeper.agent.doorloop.cardreader import MAX_CREDENTIAL_LINE_BYTES, card_source
from doorkeeper.agent.doorloop.config import DoorLoopConfig
from doorkeeper.agent.doorloop.episodes import EpisodeConfirmer
from doorkeeper.agent.doorloop.policy import (
    Credential,
    Decision,
    Freshness,
    Reason,
    Result,
    decide_card,
    decide_face,
    decide_pin,
    mode_name,
    not_carried_out,
)
from doorkeeper.agent.doorloop.stats import LATENCY_WINDOW, LatencyTracker, LoopCounters, LoopStats
from doorkeeper.agent.doorloop.throttle import AttemptThrottle
from doorkeeper.agent.doorloop.whitelistview import GalleryCache, WhitelistView
from doorkeeper.agent.doorloop.workers import QUEUE_LIMIT, LoopClosed, QueueWorker
from doorkeeper.agent.doors import Door, DoorError, DoorState
from doorkeeper.agent.face.engine import FaceEngine
from doorkeeper.agent.face.gallery import Match
from doorkeeper.agent.face.liveness import LivenessCheck
from doorkeeper.agent.face.quality import check_frame
from doorkeeper.agent.sync.whitelist import LocalWhitelist
from doorkeeper.v1 import doorkeeper_pb2 as pb

# Callers import all of these from here; the other modules are this one's parts.
__all__ = [
    "LATENCY_WINDOW", "MAX_CREDENTIAL_LINE_BYTES", "QUEUE_LIMIT", "SUCCESS", "DoorLoop",
    "DoorLoopConfig", "FrameOutcome", "LatencyTracker", "LoopClosed", "LoopStats", "card_source",
]

log = logging.getLogger(__name__)

SUCCESS = "Verification successful"


@dataclass(frozen=True)
class FrameOutcome:
    """What one frame did: the face check reason (None = usable face), the gallery match, and
    the decision when this frame completed a confirmation (else None)."""

    reason: str | None
    match: Match | None = None
    decision: Decision | None = None


@dataclass(frozen=True)
class _Job:
    decision: Decision
    latency_ms: float | None


class DoorLoop:
    """Decides for one door from a camera and from presented cards/PINs; see the module doc.

    Takes ownership of ``camera`` and ``door`` (closes both in :meth:`close`). ``whitelist``
    is read only by view builds (at construction and in :meth:`refresh`), never by a
    decision. ``on_decision(decision)`` receives every decision (face, card, PIN; granted,
    denied, unknown, shadow) on the recorder thread; its exceptions are logged and counted.
    ``clock`` gives the wall time for validity windows and schedules (the wiring passes
    ``Syncer.clock.now``: hub time advanced by the monotonic clock). ``last_fresh`` returns
    the seconds since the hub last vouched for the whitelist (a beacon proven fresh by the
    door's own nonce, `Syncer.fresh_age_s`; monotonic), or None when unknown
    (unknown counts as stale; only matters under a strict site stale policy).
    """

    def __init__(
        self,
        config: DoorLoopConfig,
        *,
        engine: FaceEngine | None,
        camera: FrameSource,
        door: Door,
        whitelist: LocalWhitelist,
        on_decision: Callable[[Decision], None],
        last_fresh: Callable[[], float | None] | None = None,
        liveness: LivenessCheck | None = None,
        clock: Callable[[], float] = time.time,
        on_tick: Callable[[], object] | None = None,
        metrics: Any = None,
        device_id: str = "",
    ) -> None:
        limit = getattr(door, "max_unlock_seconds", None)
        if isinstance(limit, int | float) and config.unlock_seconds > limit:
            raise ValueError(f"doorloop.unlock_seconds: {config.unlock_seconds} is over door "
                             f"{door.name}'s max_unlock_seconds {limit}")
        self.config = config
        self.engine = engine
        self.camera = camera
        self.door = door
        # No engine: a card/PIN-only door; no template matches an empty model id.
        self.gallery = GalleryCache(whitelist, engine.model_id if engine is not None else "",
                                    threshold=config.threshold,
                                    margin=config.margin, device_id=device_id)
        self._on_decision = on_decision
        self._last_fresh = last_fresh or (lambda: None)
        self._liveness = liveness if liveness is not None and liveness.enabled else None
        self._clock = clock
        self._on_tick = on_tick or (lambda: None)
        self._metrics = metrics
        self._counters = LoopCounters()
        self._latency = LatencyTracker()
        self._throttles = {
            kind: AttemptThrottle(config.keypad_max_failures, 60.0, config.keypad_lockout_s)
            for kind in (Credential.CARD, Credential.PIN)
        }
        self._confirm = EpisodeConfirmer(
            confirm_frames=config.confirm_frames, threshold=config.threshold,
            episode_gap_s=config.episode_gap_s, redecide_after_s=config.redecide_after_s)
        self._closed = False
        self._close_lock = threading.Lock()
        self.actuations = 0
        self.actuation_failures = 0
        self.records_failed = 0
        self._actuator = QueueWorker(f"door-{config.door}-actuator", self._actuate,
                                     on_discard=self._discarded)
        self._recorder = QueueWorker(f"door-{config.door}-recorder", self._record)
        if self.shadow_at(self.gallery.view):
            log.warning("door %s: SHADOW mode (%s): decides and records, never actuates", config.door,
                        "installer flag" if config.shadow else "set by the hub")
        if self._liveness is None:
            log.info("door %s: %s", config.door,
                     liveness.status.message if liveness is not None else "liveness is OFF")

    # ------------------------------------------------------------------ public API
    def shadow_at(self, view: WhitelistView) -> bool:
        """Whether a decision on ``view`` is made in shadow mode: the installer's flag
        (``DoorLoopConfig.shadow``) or the hub's word for this door in the view's site config.
        A mode switched at the hub applies from the first decision on the view that carries it."""
        return self.config.shadow or view.hub_mode != pb.DOOR_MODE_ENFORCE

    @property
    def mode(self) -> str:
        """"shadow" or "enforce": the mode the next decision is made in."""
        return mode_name(pb.DOOR_MODE_SHADOW if self.shadow_at(self.gallery.view) else pb.DOOR_MODE_ENFORCE)

    def refresh(self, version: int | None = None) -> bool:
        """The sync's ``on_applied`` hook: rebuild the whitelist view off this thread and swap."""
        return self.gallery.refresh(version)

    def run(self, stop: threading.Event) -> None:
        """Read and decide until ``stop`` is set, the camera is finished, or ``max_frames``.

        Never raises for a bad frame or a failing face (counted in ``stats()``). When the
        camera runs out or ``max_frames`` is reached, queued door actuations are carried
        out before the door is locked; after ``stop``, they are discarded. Either way the
        loop ends with :meth:`close`: door locked and closed.
        """
        natural_end = False
        wait = 0.0
        try:
            while not stop.wait(wait):
                self._on_tick()  # e.g. the systemd watchdog: fed only while this loop turns
                if self.config.max_frames and self._counters.frames >= self.config.max_frames:
                    natural_end = True
                    break
                frame = self.camera.read(timeout=self.config.read_timeout_s)
                if frame is None:
                    if self.camera.finished:
                        natural_end = True
                        break
                    wait = self.config.poll_interval_s
                    continue
                wait = 0.0
                self.process_frame(frame)
        finally:
            self.close(drain=natural_end and not stop.is_set())

    def process_frame(self, frame: Frame) -> FrameOutcome:
        """Run one camera frame through the pipeline (``run`` calls this; tests may too).

        Returns what the frame did. Exceptions from the face engine are logged (rate
        limited), counted as ``frame_errors`` and give ``FrameOutcome("error")``.
        """
        with self._counters.lock:
            self._counters.frames += 1
        try:
            outcome = self._process(frame)
        except Exception as exc:  # a frame must never stop the door
            with self._counters.lock:
                self._counters.frame_errors += 1
                errors = self._counters.frame_errors
            if errors == 1 or str(errors).rstrip("0") == "1":
                log.error("door %s: frame %d failed (%s: %s); %d so far", self.config.door,
                          frame.seq, type(exc).__name__, exc, errors)
            outcome = FrameOutcome("error")
        self._latency.add((time.monotonic() - frame.monotonic) * 1000.0)
        return outcome

    def present_card(self, card_text: object) -> Decision:
        """Decide for a presented card number (hostile input of any type); thread-safe.

        The decision goes through the same actuation and ``on_decision`` path as a face and
        is returned. Malformed input is refused by the policy core before anything is hashed
        or looked up, and never appears in a log line. Raises LoopClosed after ``close``.
        """
        return self._present(Credential.CARD, card_text)

    def present_pin(self, pin_text: object) -> Decision:
        """As :meth:`present_card`, for an entered PIN. (Attempt throttling is not done here.)"""
        return self._present(Credential.PIN, pin_text)

    def stats(self) -> LoopStats:
        """A snapshot of the counters and latency percentiles; any thread."""
        c = self._counters
        with c.lock:
            frames, errors = c.frames, c.frame_errors
            skipped, decisions, reasons = dict(c.skipped), dict(c.decisions), dict(c.reasons)
        return LoopStats(
            frames=frames,
            bad_frames=dict(self.camera.bad_frames),
            skipped=skipped,
            decisions=decisions,
            reasons=reasons,
            frame_errors=errors,
            actuations=self.actuations,
            actuation_failures=self.actuation_failures,
            actuations_dropped=self._actuator.dropped,
            records_failed=self.records_failed,
            records_dropped=self._recorder.dropped,
            p50_ms=self._latency.percentile(50),
            p99_ms=self._latency.percentile(99),
            latency_samples=self._latency.count,
            whitelist_version=self.gallery.view.version,
        )

    def close(self, *, drain: bool = False) -> None:
        """Fail secure, idempotent: stop actuating (carry out queued unlocks only if
        ``drain``), lock and close the door, deliver every queued record, close the camera."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._actuator.close(drain=drain)
        try:
            self.door.lock()
        except Exception:  # close() below retries the lock; keep shutting down
            log.exception("door %s: lock on shutdown failed", self.config.door)
        try:
            self.door.close()
        except Exception:  # a driver failing to release hardware must not lose records
            log.exception("door %s: close failed", self.config.door)
        self._recorder.close(drain=True)
        self.camera.close()
        s = self.stats()
        log.info("door %s: loop stopped after %d frames; decisions %s; p50 %s ms, p99 %s ms",
                 self.config.door, s.frames, s.decisions, _ms(s.p50_ms), _ms(s.p99_ms))

    # ------------------------------------------------------------------ decision path
    def _process(self, frame: Frame) -> FrameOutcome:
        if self.engine is None:  # a card/PIN-only door is given no frames (NoCamera)
            raise RuntimeError("this door has no face engine: it decides from cards and PINs only")
        check = check_frame(self.engine, frame.image)
        if not check.ok or check.face is None or check.aligned is None:
            reason = check.reason or "no_face"
            with self._counters.lock:
                self._counters.skipped[reason] += 1
            if reason == "no_face":
                self._confirm.end_episode()
            else:
                self._confirm.break_streak(frame.monotonic)
            return FrameOutcome(reason)
        live: bool | None = None
        if self._liveness is not None:
            result = self._liveness.check(frame.image, check.face)
            if result.status != "ok":  # e.g. input_rejected: cannot judge this frame, skip it
                reason = f"liveness_{result.status}"
                with self._counters.lock:
                    self._counters.skipped[reason] += 1
                self._confirm.break_streak(frame.monotonic)
                return FrameOutcome(reason)
            live = result.is_live is True
        embedding = self.engine.embed_aligned(check.aligned)
        view = self.gallery.view  # one read: this frame decides on one version
        match = view.gallery.search(embedding)
        kind = "face" if live is not False else "spoof"
        person = match.person_id if match.accepted else None
        if not self._confirm.observe(person, embedding, kind, view.version, frame.monotonic):
            return FrameOutcome(None, match)
        decision = decide_face(
            match, view.person, door=self.config.door, now_wall=self._clock(),
            config=view.config, stale=self._stale(view), shadow=self.shadow_at(view),
            version=view.version, liveness_passed=live,
        )
        self._confirm.decided(decision, frame.monotonic)
        self._dispatch(decision, (time.monotonic() - frame.monotonic) * 1000.0)
        return FrameOutcome(None, match, decision)

    def _present(self, credential: Credential, text: object) -> Decision:
        if self._closed:
            raise LoopClosed(f"door {self.config.door}: loop closed")
        started = time.monotonic()
        view = self.gallery.view
        throttle = self._throttles[credential]
        if throttle.locked():
            decision = Decision(
                granted=False, result=Result.DENIED, credential=credential, person_id=None,
                reason=Reason.RATE_LIMITED, version=view.version, door=self.config.door,
                actuate=False, shadow=self.shadow_at(view),
            )
        else:
            decide = decide_card if credential is Credential.CARD else decide_pin
            decision = decide(
                view.by_credential, view.salt, text, door=self.config.door, now_wall=self._clock(),
                config=view.config, stale=self._stale(view), shadow=self.shadow_at(view),
                version=view.version,
            )
            if decision.granted or decision.reason is Reason.REVOKED_OR_UNKNOWN:
                throttle.record(failed=not decision.granted)
        self._dispatch(decision, (time.monotonic() - started) * 1000.0)
        return decision

    def _stale(self, view: WhitelistView) -> bool:
        now = time.monotonic()
        try:
            age = self._last_fresh()
        except Exception:  # a broken provider means "unknown age", never a stuck door
            log.exception("door %s: last_fresh() failed; treating the whitelist as stale",
                          self.config.door)
            age = None
        if age is not None and (not math.isfinite(age) or age < 0):
            age = None
        return Freshness.at_start(now, age).is_stale(view.config, now)

    def _dispatch(self, decision: Decision, latency_ms: float | None) -> None:
        """Queue a grant's actuation (the door opens soonest; the actuator records it once it
        has acted), or record and log a refusal."""
        with self._counters.lock:
            self._counters.decisions[decision.result.value] += 1
            self._counters.reasons[decision.reason.value] += 1
        if self._metrics is not None:
            self._metrics.record_decision(decision.result.value, decision.credential.value,
                                          None if latency_ms is None else latency_ms / 1000.0)
        if decision.granted:  # shadow grants too: the worker reports the unchanged door state
            # A grant is recorded by the actuator once it has acted: the record says what the
            # door did, not what the policy wanted (a discarded unlock is no entry).
            try:
                queued = self._actuator.submit(_Job(decision, latency_ms))
            except LoopClosed:
                queued = False
                log.warning("door %s: closing; grant for %s not carried out",
                            self.config.door, self._who(decision))
            else:
                if not queued:
                    log.error("door %s: actuation queue full; grant for %s not carried out",
                              self.config.door, self._who(decision))
            if queued:
                return
            self._submit_record(not_carried_out(decision, Reason.NOT_ACTUATED))
            return
        self._submit_record(decision)
        log.info("door %s: %s (%s) %s%s%s", self.config.door, decision.result.value,
                 decision.reason.value, decision.credential.value,
                 f" person {self._who(decision)}" if decision.person_id else "",
                 _details(decision, latency_ms))

    # ------------------------------------------------------------------ workers
    def _actuate(self, job: object) -> None:
        assert isinstance(job, _Job)
        decision = job.decision
        note = ""
        if decision.actuate:
            try:
                state = self.door.unlock(self.config.unlock_seconds)
                self.actuations += 1
            except (DoorError, ValueError) as exc:
                self.actuation_failures += 1
                state = self.door.state()
                note = f" (actuation failed: {exc})"
                decision = not_carried_out(decision, Reason.ACTUATION_FAILED)
        else:
            state = self.door.state()
            note = " (shadow mode: door not actuated)"
        line = (f"{SUCCESS}: door {decision.door}, person {self._who(decision)}, "
                f"{decision.credential.value}; door {_describe(state)}{note}")
        log.info("%s%s", line, _details(decision, job.latency_ms))
        if self.config.echo:
            print(line, flush=True)
        self._submit_record(decision)

    def _discarded(self, job: object) -> None:
        """An unlock thrown away on stop: record that the door did not open."""
        assert isinstance(job, _Job)
        log.warning("door %s: stopping; grant for %s not carried out", self.config.door,
                    self._who(job.decision))
        self._submit_record(not_carried_out(job.decision, Reason.NOT_ACTUATED))

    def _submit_record(self, decision: Decision) -> None:
        if not self._recorder.submit(decision):  # LoopClosed propagates: nothing can record it
            log.error("door %s: record queue full; a %s decision was not recorded",
                      self.config.door, decision.result.value)

    def _record(self, decision: object) -> None:
        assert isinstance(decision, Decision)
        try:
            self._on_decision(decision)
        except Exception:  # the recorder thread must survive a failing sink
            self.records_failed += 1
            log.exception("door %s: on_decision failed; decision not recorded", self.config.door)

    def _who(self, decision: Decision) -> str:
        if not decision.person_id:
            return "-"
        return decision.person_id if self.config.log_person_ids else "-"


def _describe(state: DoorState) -> str:
    if state.fault:
        return f"{'LOCKED' if state.locked else 'UNLOCKED'} (fault: {state.fault})"
    if state.locked:
        return "LOCKED"
    return f"UNLOCKED for {(state.unlock_until or state.since) - state.since:.1f}s"


def _details(decision: Decision, latency_ms: float | None) -> str:
    parts = []
    if decision.similarity is not None:
        parts.append(f"similarity {decision.similarity:.3f}")
    if decision.stale:
        parts.append("stale")
    parts.append(f"version {decision.version}")
    if latency_ms is not None:
        parts.append(f"{latency_ms:.0f} ms")
    return " [" + ", ".join(parts) + "]"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
