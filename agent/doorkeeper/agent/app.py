"""`agent run`: one place wires a door terminal (as Frigate's app does).

Background half (`SyncService`): whitelist sync, heartbeats, entry-log outbox
and uploads. Decision half (`DoorLoop`): camera, face engine, policy, door
driver. They meet only in memory: a landed sync swaps the loop's whitelist
view, and each decision is handed to the outbox on the loop's recorder thread.
Startup problems (models, camera, door config) stop the agent with one clear
message; once running, nothing on the network can stop a door from deciding.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doorkeeper.agent.doorloop.policy import Decision
from doorkeeper.agent.sync.service import SyncOptions, SyncService
from doorkeeper.agent.sync.state import HubClock
from doorkeeper.runtime import sdnotify
from doorkeeper.wire.entrylog import Entry

log = logging.getLogger("doorkeeper.agent")


# DoorOptions.camera for a door that decides from its card/PIN reader alone.
CARD_ONLY = "none:"


class StartupError(Exception):
    """The agent cannot start as configured; the message says what to fix."""


@dataclass(frozen=True)
class DoorOptions:
    """What the decision half needs; absent camera = sync-only agent."""

    camera: str
    door: Mapping[str, Any] = field(default_factory=lambda: {"type": "sim"})
    shadow: bool = False
    max_frames: int = 0
    models: str | None = None
    det_size: int | None = None
    threshold: float | None = None
    margin: float | None = None
    confirm_frames: int = 2
    unlock_seconds: float = 3.0
    liveness_model: str | None = None
    liveness_threshold: float | None = None  # None: the liveness check's own default
    intra_op_threads: int = 1  # onnxruntime threads for the face models (1 = one core)
    card_reader: str | None = None  # a file or FIFO delivering one card number per line
    camera_options: Mapping[str, Any] = field(default_factory=dict)
    # Who entered when belongs in the sealed entry log only; log lines say "-" unless asked.
    log_person_ids: bool = False


def entry_for(decision: Decision) -> Entry:
    """What the entry log keeps of a decision (sealed to the data owner before it hits disk)."""
    return Entry(
        door=decision.door,
        decision=decision.result.value,
        credential=decision.credential.value,
        person_id=decision.person_id or "",
        similarity=decision.similarity or 0.0,
        whitelist_version=decision.version,
        reason=decision.reason.value,
        shadow=decision.shadow,
    )


class AgentRuntime:
    def __init__(self, data_dir: Path, sync: SyncOptions | None = None,
                 door: DoorOptions | None = None, metrics: Any = None, clock: HubClock | None = None) -> None:
        """``clock``: the door's time (`HubClock`; a test's, to move it without sleeping)."""
        self.service = SyncService(data_dir, sync or SyncOptions(), metrics=metrics, clock=clock)
        self.metrics = metrics
        self.loop: Any = None
        self.watchdog = sdnotify.Watchdog()
        if door is not None:
            try:
                self.loop = self._build_loop(Path(data_dir), door)
            except BaseException:
                self.service.close()
                raise
            self.service.on_applied_extra = self.loop.refresh
            self.service.installer_shadow = door.shadow
        if metrics is not None:
            self._wire_metrics(metrics)
            metrics.set_door_mode(self.mode)

    def _wire_metrics(self, m: Any) -> None:
        from doorkeeper.runtime.metrics import scrape_time, seconds_since

        state = self.service.syncer.state
        scrape_time(m.sync_lag_seconds, seconds_since(lambda: state.last_sync_ok or None))
        self.service.scheduler.add_job(self._sample_metrics, "interval", seconds=5, id="metrics")

    def _sample_metrics(self) -> None:
        """Counters the loop keeps itself, copied into metrics off the decision path."""
        from doorkeeper.agent.doorloop.policy import Freshness

        m = self.metrics
        m.set_door_mode(self.mode)
        if self.loop is not None:
            m.count_bad_frames(self.loop.camera.bad_frames)
            config = self.service.whitelist_config
            now = time.monotonic()
            stale = config is not None and Freshness.at_start(now, self.last_fresh()).is_stale(config, now)
            m.stale.set(1 if stale else 0)

    @property
    def mode(self) -> str:
        """"shadow" or "enforce": what the door's next decision is made in (the loop's view;
        a sync-only agent reports the hub's word)."""
        if self.loop is not None:
            return str(self.loop.mode)
        from doorkeeper.agent.doorloop.policy import mode_name

        return mode_name(self.service.mode)

    def last_fresh(self) -> float | None:
        """Seconds since the hub last vouched for this door's whitelist (`Syncer.fresh_age_s`)."""
        return self.service.syncer.fresh_age_s()

    def _build_loop(self, data_dir: Path, o: DoorOptions) -> Any:
        from doorkeeper.agent.camera import open_source
        from doorkeeper.agent.doorloop.loop import DoorLoop, DoorLoopConfig
        from doorkeeper.agent.doors import DoorConfigError, open_door
        from doorkeeper.agent.face.engine import EngineConfig, FaceEngine
        from doorkeeper.agent.face.gallery import DEFAULT_MARGIN, DEFAULT_THRESHOLD
        from doorkeeper.agent.face.liveness import LivenessCheck, LivenessError
        from doorkeeper.agent.face.models import ModelError

        name = self.service.syncer.identity.device_name
        if o.camera == CARD_ONLY:
            return self._card_only_loop(data_dir, o, name)
        try:
            engine_config = EngineConfig(model_dir=o.models, intra_op_threads=o.intra_op_threads)
            if o.det_size:
                engine_config = dataclasses.replace(engine_config, det_size=o.det_size)
            engine = FaceEngine(engine_config)
            liveness = LivenessCheck(o.liveness_model, intra_op_threads=o.intra_op_threads,
                                     **({} if o.liveness_threshold is None
                                        else {"threshold": o.liveness_threshold}))
        except (ModelError, LivenessError) as exc:
            raise StartupError(str(exc)) from None
        log.info("face model %s; %s", engine.model_id, liveness.status.message)
        try:
            camera = open_source(o.camera, **dict(o.camera_options))
        except ValueError as exc:
            raise StartupError(f"camera: {exc}") from None
        door_config = {"name": name, **dict(o.door)}
        try:
            door = open_door(door_config, state_dir=data_dir / "doors")
        except DoorConfigError as exc:
            camera.close()
            raise StartupError(f"door: {exc}") from None
        config = DoorLoopConfig(
            door=name, shadow=o.shadow, max_frames=o.max_frames, confirm_frames=o.confirm_frames,
            unlock_seconds=o.unlock_seconds,
            threshold=o.threshold if o.threshold is not None else DEFAULT_THRESHOLD,
            margin=o.margin if o.margin is not None else DEFAULT_MARGIN,
            log_person_ids=o.log_person_ids,
        )
        service = self.service
        return DoorLoop(
            config, engine=engine, camera=camera, door=door, whitelist=service.whitelist,
            on_decision=lambda d: service.record(entry_for(d)),
            last_fresh=self.last_fresh, liveness=liveness, clock=service.syncer.clock.now,
            on_tick=self.watchdog.kick, metrics=self.metrics, device_id=service.syncer.identity.device_id,
        )

    def _card_only_loop(self, data_dir: Path, o: DoorOptions, name: str) -> Any:
        """A door with a card/PIN reader and no camera: no face models are loaded."""
        from doorkeeper.agent.camera import NoCamera
        from doorkeeper.agent.doorloop.loop import DoorLoop, DoorLoopConfig
        from doorkeeper.agent.doors import DoorConfigError, open_door
        from doorkeeper.agent.face.gallery import DEFAULT_MARGIN, DEFAULT_THRESHOLD

        try:
            door = open_door({"name": name, **dict(o.door)}, state_dir=data_dir / "doors")
        except DoorConfigError as exc:
            raise StartupError(f"door: {exc}") from None
        config = DoorLoopConfig(door=name, shadow=o.shadow, unlock_seconds=o.unlock_seconds,
                                threshold=DEFAULT_THRESHOLD, margin=DEFAULT_MARGIN,
                                log_person_ids=o.log_person_ids)
        service = self.service
        log.info("door %s: cards and PINs only (no camera)", name)
        return DoorLoop(
            config, engine=None, camera=NoCamera(), door=door, whitelist=service.whitelist,
            on_decision=lambda d: service.record(entry_for(d)), last_fresh=self.last_fresh,
            clock=service.syncer.clock.now, on_tick=self.watchdog.kick, metrics=self.metrics,
            device_id=service.syncer.identity.device_id,
        )

    def run(self, stop: threading.Event, card_reader: str | None = None) -> None:
        """Until `stop` (or the camera ends / max frames): sync in the background, decide here."""
        self.service.start()
        sdnotify.ready("deciding" if self.loop is not None else "syncing")
        readers: list[threading.Thread] = []
        try:
            if self.loop is None:
                while not stop.wait(1.0):
                    self.watchdog.kick()
                return
            if card_reader:
                from doorkeeper.agent.doorloop.cardreader import credential_dispatch
                from doorkeeper.agent.doorloop.loop import card_source

                present = credential_dispatch(self.loop.present_card, self.loop.present_pin)
                t = threading.Thread(target=card_source, args=(card_reader, present, stop),
                                     name="doorkeeper-cards", daemon=True)
                t.start()
                readers.append(t)
            self.loop.run(stop)
        finally:
            sdnotify.stopping()
            stop.set()
            for t in readers:
                t.join(timeout=2)
            if self.loop is not None:
                self.loop.close(drain=False)
            self.service.close()
