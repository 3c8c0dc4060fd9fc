"""The door agent's configuration: ``agent.toml`` plus ``DOORKEEPER_AGENT__*`` overrides.

Every key has a default, so a registered agent runs with no file at all: with no
``camera.source`` it only syncs; with one it decides at a sim door until ``door.type`` says
otherwise. The door is named after the device (``doorkeeper device add``), the one name the
site's door permissions and the entry logs use.

Loading rules (precedence, env syntax, paths relative to the data directory) are in
:mod:`doorkeeper.runtime.config.loader`; the keys are the fields of :class:`AgentConfig`, shown commented
in :data:`EXAMPLE`.

The door's driver options (``[door.options]``) are passed through to
:func:`doorkeeper.agent.doors.open_door`, which owns their validation: :meth:`AgentConfig.open_door`
turns its errors into :class:`ConfigError` naming ``door.options.<key>``. Likewise
:meth:`AgentConfig.open_camera` for :func:`doorkeeper.agent.camera.open_source`. The heavy
modules (opencv, onnxruntime, drivers) are imported only by those helpers, never by ``load``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from doorkeeper.agent.camera.frames import DEVICE_INDEX, HOT_FOLDER_PREFIX, URL_SCHEMES
from doorkeeper.agent.doors.base import DEFAULT_MAX_UNLOCK_SECONDS
from doorkeeper.runtime.config.loader import (
    ConfigError,
    DataPath,
    LogSection,
    OptionalDir,
    OptionalFile,
    Section,
    data_path,
    example_toml,
    load_config,
    metrics_section,
    parse_listen,
    redact,
)
from doorkeeper.runtime.config.types import MAX_HUB_ADDRESSES

if TYPE_CHECKING:
    from doorkeeper.agent.app import DoorOptions
    from doorkeeper.agent.camera import FrameSource
    from doorkeeper.agent.doorloop.loop import DoorLoopConfig
    from doorkeeper.agent.doors import Door
    from doorkeeper.agent.entries.outbox import OutboxPolicy
    from doorkeeper.agent.sync.service import SyncOptions

__all__ = ["DEFAULT_DATA_DIR", "EXAMPLE", "AgentConfig", "ConfigError", "load"]

DEFAULT_DATA_DIR = Path("/var/lib/doorkeeper/agent")
MiB = 1024 * 1024
MAX_DOOR_OPTIONS = 32


def _no_cap(value: Any) -> Any:
    """0 means "no cap" (TOML has no null); stored as None."""
    return None if value == 0 and not isinstance(value, bool) else value


class SyncSection(Section):
    """``[sync]``: how often the agent polls the hub, reports, and uploads entry logs.
    The watch stream applies changes within seconds; polling is the fallback."""

    poll_interval_s: Annotated[float, Field(ge=1, le=3600)] = Field(default=30.0, description=(
        "Seconds between polls, signed status reports, and entry-log uploads."))
    heartbeat_interval_s: Annotated[float, Field(ge=5, le=3600)] = 60.0
    upload_interval_s: Annotated[float, Field(ge=1, le=3600)] = 10.0


class CameraSection(Section):
    """``[camera]``: where the door's frames come from; frames over the size caps are skipped
    and counted (``bad_frames_total{reason="too_large"}``)."""

    source: str | None = Field(default=None, examples=["0"], description=(
        'A device index ("0"), an rtsp/rtsps/http/https URL, a video file, a folder of images or '
        '"hotfolder:DIR" (relative paths are in the data directory). Unset: no camera, the agent only '
        "keeps its whitelist in sync."))
    fps: Annotated[float, Field(gt=0, le=120)] | None = Field(default=None, examples=[5.0], description=(
        "Image folders only: playback rate and whether to start over at the end."))
    loop: bool = False
    max_width: Annotated[int, Field(ge=64, le=16384)] = Field(default=4096, description=(
        "Size caps of one frame."))
    max_height: Annotated[int, Field(ge=64, le=16384)] = 4096
    max_file_bytes: Annotated[int, Field(ge=1024, le=512 * MiB)] = 64 * MiB

    @field_validator("source")
    @classmethod
    def _source(cls, source: str | None, info: ValidationInfo) -> str | None:
        if source is None or not source.strip():
            return None
        source = source.strip()
        if not source or len(source) > 2048:
            raise ValueError("must be a device index, a URL or a path (1-2048 characters)")
        if re.fullmatch(DEVICE_INDEX, source) or source.lower().startswith(URL_SCHEMES):
            return source
        if "://" in source:
            raise ValueError(f"unsupported URL scheme in {redact(source)!r}; "
                             "allowed: rtsp, rtsps, http, https")
        prefix = HOT_FOLDER_PREFIX if source.startswith(HOT_FOLDER_PREFIX) else ""
        path = source[len(prefix):]
        if not path:
            raise ValueError("hotfolder: needs a directory after the colon")
        data_dir = (info.context or {}).get("data_dir")
        return prefix + (str(data_path(path, data_dir)) if data_dir is not None else path)


class DoorSection(Section):
    """``[door]``: the door this terminal drives. It is named after the device (``doorkeeper
    device add``); that name is what the site's door permissions and the entry logs use."""

    type: Literal["sim", "gpio", "command", "http"] = Field(default="sim", description=(
        "The driver: sim, gpio, command or http."))
    unlock_seconds: Annotated[float, Field(ge=0.5, le=60)] = Field(default=3.0, description=(
        "How long a granted entry keeps the door unlocked (0.5 .. 60 s)."))
    options: dict[str, Any] = Field(default_factory=dict, max_length=MAX_DOOR_OPTIONS, description=(
        "The driver's own options, checked by the driver when the agent starts:\n"
        "  sim:     state_dir (default <data_dir>/doors), echo (bool)\n"
        '  gpio:    chip = "/dev/gpiochip0", line = 17 (or a line name), active_low, consumer\n'
        '  command: unlock = ["/usr/local/bin/relay", "on"], lock = [...], timeout (s)\n'
        "  http:    unlock_url, lock_url, method, timeout, headers, unlock_body, lock_body\n"
        "  all:     max_unlock_seconds (default 60)"))

    @field_validator("options")
    @classmethod
    def _options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in options:
            raise ValueError("door.options.name: the door is named after the device "
                             "(`doorkeeper device add`)")
        if "type" in options:
            raise ValueError("door.options.type: set door.type instead")
        limit = options.get("max_unlock_seconds", DEFAULT_MAX_UNLOCK_SECONDS)
        unlock = info.data.get("unlock_seconds")
        if isinstance(limit, int | float) and not isinstance(limit, bool) and unlock is not None \
                and unlock > limit:
            raise ValueError(f"door.unlock_seconds: {unlock:g} is over "
                             f"door.options.max_unlock_seconds ({limit:g})")
        return options


class FaceSection(Section):
    """``[face]``: face models and matching."""

    models_dir: OptionalDir = Field(default=None, examples=["models"], description=(
        "Folder with the detector and recognizer ONNX files; unset = the packaged models."))
    det_size: Annotated[int, Field(ge=128, le=1280, multiple_of=32)] = Field(default=320, description=(
        "Detector input size (multiple of 32, 128 .. 1280); 320 finds faces at door distance."))
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = Field(default=0.40, description=(
        "Cosine similarity a face must reach, and by how much it must beat the next person."))
    margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    confirm_frames: Annotated[int, Field(ge=1, le=100)] = Field(default=2, description=(
        "Consecutive frames that must agree before the door decides."))
    intra_op_threads: Annotated[int, Field(ge=1, le=64)] = Field(default=1, description=(
        "onnxruntime threads; the decision loop should own one core."))
    liveness_model: OptionalFile = Field(default=None, examples=["models/liveness.onnx"], description=(
        "Liveness (anti-spoofing) model file; unset = liveness off."))
    liveness_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.8


class OutboxSection(Section):
    """``[outbox]``: bounds of the on-disk entry-log queue while the hub is unreachable (0 or
    unset = no cap). Every dropped record is counted and recorded as a gap in the log chain;
    ``min_free_bytes`` always applies."""

    max_records: Annotated[Annotated[int, Field(ge=100)] | None, BeforeValidator(_no_cap)] = Field(
        default=None, examples=[1_000_000])
    max_bytes: Annotated[Annotated[int, Field(ge=MiB)] | None, BeforeValidator(_no_cap)] = Field(
        default=None, examples=[1024 * MiB])
    max_age_days: Annotated[Annotated[float, Field(gt=0, le=3650)] | None, BeforeValidator(_no_cap)] = Field(
        default=None, examples=[90])
    min_free_bytes: Annotated[int, Field(ge=0)] = 64 * MiB
    when_full: Literal["drop_oldest", "drop_newest"] = Field(default="drop_oldest", description=(
        "drop_oldest keeps the newest decisions; drop_newest keeps what is queued."))


AgentMetrics = metrics_section("127.0.0.1:9109")


class AgentConfig(Section):
    """Everything a door agent process is configured with (``agent.toml``)."""

    role: Literal["agent"] | None = None
    data_dir: DataPath = Field(default=DEFAULT_DATA_DIR, description=(
        "Device keys, whitelist, outbox (`doorkeeper agent init --data DIR`)."))
    hub_address: str | None = Field(default=None, examples=["hub.example.net:50051"], description=(
        "Hub HOST:PORT, or several hub replicas (a list, or comma-separated) in order of "
        "preference: the agent stays with the one that answers and moves to the next when it "
        "stops answering; unset = the address(es) recorded at registration."))
    tls_ca: OptionalFile = Field(default=None, examples=["/etc/doorkeeper/hub-ca.pem"], description=(
        "CA certificate that signed the hub's TLS certificate; unset = as recorded at registration."))
    shadow: bool = Field(default=False, description=(
        "Shadow mode forced by the installer: decide and record every entry, but never unlock. "
        "Without it the hub sets the mode (`device mode DOOR shadow|enforce`); either one puts the "
        "door in shadow."))
    sync: SyncSection = SyncSection()
    camera: CameraSection = CameraSection()
    door: DoorSection = DoorSection()
    face: FaceSection = FaceSection()
    outbox: OutboxSection = OutboxSection()
    metrics: AgentMetrics = AgentMetrics()  # type: ignore[valid-type]
    log: LogSection = LogSection()

    @field_validator("hub_address", mode="before")
    @classmethod
    def _hub_address(cls, value: Any) -> Any:
        if isinstance(value, list):  # several replicas, as a TOML list
            if not value or not all(isinstance(v, str) for v in value):
                raise ValueError("a list of hub addresses must hold HOST:PORT strings")
            value = ",".join(value)
        if isinstance(value, str):
            if not value.strip():
                return None
            items = value.split(",")
            if len(items) > MAX_HUB_ADDRESSES:
                raise ValueError(f"at most {MAX_HUB_ADDRESSES} hub addresses")
            for item in items:
                parse_listen(item.strip(), allow_port_zero=False)
            value = ",".join(item.strip() for item in items)
        return value

    # ------------------------------------------------------------ for the wiring

    def sync_options(self) -> SyncOptions:
        """The daemon's options (intervals and outbox policy)."""
        from doorkeeper.agent.sync.service import SyncOptions

        s = self.sync
        return SyncOptions(poll_interval_s=s.poll_interval_s, heartbeat_interval_s=s.heartbeat_interval_s,
                           upload_interval_s=s.upload_interval_s, outbox=self.outbox_policy(),
                           hub_address=self.hub_address, tls_ca=self.tls_ca)

    def outbox_policy(self) -> OutboxPolicy:
        from doorkeeper.agent.entries.outbox import DropPolicy, OutboxPolicy

        o = self.outbox
        return OutboxPolicy(max_records=o.max_records, max_bytes=o.max_bytes, max_age_days=o.max_age_days,
                            min_free_bytes=o.min_free_bytes, policy=DropPolicy(o.when_full))

    def door_options(self, camera: str | None = None) -> DoorOptions | None:
        """What ``AgentRuntime`` takes for its decision half, with every ``[face]``, ``[door]``
        and ``[camera]`` setting; ``camera`` (a command-line source) replaces
        ``camera.source``. None when neither names a camera (a sync-only agent)."""
        from doorkeeper.agent.app import DoorOptions

        source = camera or self.camera.source
        if source is None:
            return None
        f = self.face
        return DoorOptions(
            camera=source, door={"type": self.door.type, **self.door.options},
            shadow=self.shadow, models=str(f.models_dir) if f.models_dir else None, det_size=f.det_size,
            threshold=f.threshold, margin=f.margin, confirm_frames=f.confirm_frames,
            unlock_seconds=self.door.unlock_seconds,
            liveness_model=str(f.liveness_model) if f.liveness_model else None,
            liveness_threshold=f.liveness_threshold, intra_op_threads=f.intra_op_threads,
            camera_options=self.camera_options())

    def camera_options(self) -> dict[str, Any]:
        """Keyword options for ``open_source`` (size caps; fps and loop when set)."""
        from doorkeeper.agent.camera import FrameLimits

        c = self.camera
        opts: dict[str, Any] = {
            "limits": FrameLimits(max_width=c.max_width, max_height=c.max_height,
                                  max_pixels=c.max_width * c.max_height, max_file_bytes=c.max_file_bytes),
        }
        if c.fps is not None:
            opts["fps"] = c.fps
        if c.loop:
            opts["loop"] = True
        return opts

    def door_loop_config(self, name: str, **overrides: Any) -> DoorLoopConfig:
        """The verification loop's settings for door ``name`` (the device name); ``overrides``
        set the loop's other fields."""
        from doorkeeper.agent.doorloop.loop import DoorLoopConfig

        return DoorLoopConfig(door=name, confirm_frames=self.face.confirm_frames,
                              unlock_seconds=self.door.unlock_seconds, shadow=self.shadow,
                              threshold=self.face.threshold, margin=self.face.margin, **overrides)

    def door_mapping(self, name: str) -> dict[str, Any]:
        """The mapping ``open_door`` takes: ``name`` (the device name), type, driver options."""
        return {"name": name, "type": self.door.type, **self.door.options}

    def open_door(self, name: str) -> Door:
        """Start the configured door driver (LOCKED on return). Sim doors keep their state in
        ``<data_dir>/doors`` unless ``door.options.state_dir`` says otherwise.

        Raises ConfigError naming ``door.options.<key>`` for an option the driver refuses;
        DoorError (from the driver) when the hardware cannot be acquired.
        """
        from doorkeeper.agent.doors import DoorConfigError, open_door

        try:
            return open_door(self.door_mapping(name), state_dir=self.data_dir / "doors")
        except DoorConfigError as exc:
            problem = _door_error(str(exc), name)
            raise ConfigError([problem], "invalid agent configuration") from None

    def open_camera(self, label: str = "camera") -> FrameSource:
        """Open the configured camera source. Raises ConfigError naming ``camera.<key>`` when
        no source is set, the source does not exist, or it does not take an option
        (``fps``/``loop`` on a stream)."""
        from doorkeeper.agent.camera import open_source

        if self.camera.source is None:
            raise ConfigError(["camera.source: is not set (this agent only syncs)"],
                              "invalid agent configuration")
        try:
            return open_source(self.camera.source, label=label, **self.camera_options())
        except ValueError as exc:
            bad = re.search(r"camera option '(\w+)'", str(exc))
            key = f"camera.{bad.group(1)}" if bad else "camera.source"
            raise ConfigError([f"{key}: {redact(str(exc))}"], "invalid agent configuration") from None


def _door_error(message: str, name: str) -> str:
    """``doors.<name>.<key>: why`` from the driver -> ``door.options.<key>: why``."""
    prefix = f"doors.{name}."
    if message.startswith(prefix):
        key, _, why = message[len(prefix):].partition(": ")
        return f"door.{key}: {why}" if key in ("name", "type") else f"door.options.{key}: {why}"
    return f"door: {message}"


def load(path: Path | None = None, data_dir: Path | None = None,
         env: Mapping[str, str] = os.environ) -> AgentConfig:
    """Load and validate the agent's config; raises ConfigError listing every problem.

    ``path`` None reads ``<data_dir>/agent.toml`` if it exists (else all defaults); a given
    ``path`` must exist. ``data_dir`` (the CLI's ``--data``) wins over the env and the file.
    Door driver options and the camera source are checked when opened (``open_door``,
    ``open_camera``), not here: loading never touches hardware.
    """
    return load_config(AgentConfig, "agent", path, data_dir, env, DEFAULT_DATA_DIR)


EXAMPLE = example_toml(AgentConfig, "agent", """\
agent.toml: configuration of a doorkeeper door agent (the terminal at the door).
Every key is optional; the values shown are the defaults. Relative paths are relative to
data_dir and may not leave it. Any key can be overridden from the environment:
  DOORKEEPER_AGENT__DOOR__TYPE=gpio  DOORKEEPER_AGENT__FACE__THRESHOLD=0.45
Check a file with: doorkeeper config check agent.toml --show""")
