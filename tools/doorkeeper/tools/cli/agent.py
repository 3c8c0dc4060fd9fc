"""`doorkeeper agent ...`: register, run, sync and inspect a door terminal."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click

from doorkeeper.tools.cli.common import console, emit_json, fail, one_line
from doorkeeper.wire.capped import TooLarge, read_capped
from doorkeeper.wire.limits import LIMITS

DATA = click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                    help="The agent's data directory.")
CONFIG = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                      envvar="DOORKEEPER_AGENT_CONFIG",
                      help="agent.toml (default: DIR/agent.toml if present).")


def _config(config_path: Path | None, data_dir: Path) -> Any:
    """The agent's configuration (file, then DOORKEEPER_AGENT__* variables); fails in one line."""
    from doorkeeper.agent import config as agent_config
    from doorkeeper.runtime.config.loader import ConfigError

    try:
        return agent_config.load(config_path, data_dir)
    except ConfigError as exc:
        fail(one_line(str(exc)), code=2)


def _registered(data_dir: Path) -> None:
    """Refuse, in one line with exit code 2, a data directory `agent init` has not made."""
    from doorkeeper.agent.sync.identity import AgentFiles

    files = AgentFiles(data_dir)
    if not files.identity.exists() or not (files.keys / "storage.key").exists():
        fail(f"--data {data_dir} is not an initialised agent directory; run "
             f"`doorkeeper agent init --data {data_dir} --hub HOST[:PORT] --token ...` first", code=2)


def _logging() -> None:
    """Text lines for a one-shot command, through the same masking and caps as `agent run`."""
    from doorkeeper.runtime.logs import setup_logging

    setup_logging("text", "info")


@click.group()
def agent() -> None:
    """The door terminal's agent."""


@agent.command("init")
@DATA
@click.option("--hub", "hub_address", required=True, envvar="DOORKEEPER_HUB",
              help="Hub HOST[:PORT] (default port 50051), or several replicas comma-separated "
                   "(tried in order; the agent stays with the one that answers).")
@click.option("--token", envvar="DOORKEEPER_TOKEN",
              help="One-time token from `doorkeeper device add` (or env DOORKEEPER_TOKEN).")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Read the token from this file (keeps it out of process listings).")
@click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def init(data_dir: Path, hub_address: str, token: str | None, token_file: Path | None,
         tls_ca: Path | None) -> None:
    """Create device keys, register with the hub, pin the hub key from the token."""
    if bool(token) == bool(token_file):
        fail("give the token once: --token, DOORKEEPER_TOKEN or --token-file")
    if token_file is not None:
        try:
            token = read_capped(token_file, LIMITS.max_token_file_bytes, "token file").decode(
                errors="replace").strip()
        except (OSError, TooLarge) as exc:
            fail(f"cannot read --token-file: {exc}")
    assert token is not None
    import grpc

    from doorkeeper.agent.sync.hubclient import BadAddress, BadCA
    from doorkeeper.agent.sync.identity import RegistrationError, init_agent
    from doorkeeper.tools.cli.common import hub_failure

    try:
        ident = init_agent(data_dir, hub_address, token, tls_ca)
    except RegistrationError as exc:
        fail(str(exc), code=2)
    except (BadAddress, BadCA) as exc:
        fail(str(exc), code=2)
    except grpc.RpcError as exc:
        hub_failure(exc, hub_address, tls_ca)
    from doorkeeper.wire.keys import fingerprint_text

    console.print(f"registered door {ident.device_name} of site {ident.site_name}; "
                  f"pinned hub key {fingerprint_text(ident.hub_key)}")
    click.echo(ident.device_id)


@agent.command("sync")
@DATA
@CONFIG
@click.option("--attempts", default=3, show_default=True)
def sync(data_dir: Path, config_path: Path | None, attempts: int) -> None:
    """One sync pass; exit status 0 when in sync with the hub."""
    from doorkeeper.agent.sync.identity import AgentFiles, RegistrationError
    from doorkeeper.agent.sync.syncer import Syncer
    from doorkeeper.agent.sync.whitelist import LocalWhitelist

    _registered(data_dir)
    _logging()
    cfg = _config(config_path, data_dir)
    files = AgentFiles(data_dir)
    try:
        whitelist = LocalWhitelist(files.whitelist, files.storage_key())
        syncer = Syncer(files, whitelist, hub_address=cfg.hub_address, tls_ca=cfg.tls_ca)
    except RegistrationError as exc:
        fail(str(exc))
    try:
        result = syncer.sync_with_retries(attempts=attempts, max_wait_s=5.0)
        in_sync = result.ok and syncer.heartbeat()
    finally:
        syncer.close()
        whitelist.close()
    console.print(f"{result.outcome}: version {result.version} {result.detail}")
    raise SystemExit(0 if in_sync else 1)


@agent.command("status")
@DATA
@CONFIG
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait when probing the hub.")
def status(data_dir: Path, config_path: Path | None, as_json: bool, timeout: float) -> None:
    """Whitelist version, persons, state digest, last successful sync, hub reachable, door mode,
    a bundle held for its effective time, the last refused bundle, and this hour's decision counts."""
    import grpc

    from doorkeeper.agent.doorloop.policy import door_mode, mode_name
    from doorkeeper.agent.entries.counts import read_hours
    from doorkeeper.agent.sync.hubclient import SYNC, HubClient
    from doorkeeper.agent.sync.identity import AgentFiles, RegistrationError
    from doorkeeper.agent.sync.syncer import AgentState
    from doorkeeper.agent.sync.whitelist import LocalWhitelist
    from doorkeeper.v1 import doorkeeper_pb2 as pb
    from doorkeeper.wire.keys import fingerprint_text

    _registered(data_dir)
    cfg = _config(config_path, data_dir)
    files = AgentFiles(data_dir)
    try:
        ident = files.load_identity()
        whitelist = LocalWhitelist(files.whitelist, files.storage_key())
    except RegistrationError as exc:
        fail(str(exc))
    state = AgentState.load(files.state)
    reachable = True
    hub_address, tls_ca = ident.endpoint(cfg.hub_address, cfg.tls_ca)
    with HubClient(hub_address, tls_ca=tls_ca, timeout_s=timeout) as client:
        try:
            client.unsigned(SYNC + "Challenge", pb.ChallengeRequest(principal=ident.device_id))
        except grpc.RpcError:
            reachable = False
    config = whitelist.site_config()
    validity = config.offline_validity_s if config is not None else 0
    beacon_age = time.time() - state.last_beacon_hub_time if state.last_beacon_hub_time else None
    forced = bool(cfg.shadow or state.installer_shadow)  # this config, or the running agent's flag
    mode = door_mode(config, ident.device_id, forced)
    hub_mode = door_mode(config, ident.device_id)
    hours = read_hours(files.counts, limit=1)
    latest = {k: v for k, v in _fields(hours[-1]).items() if v} if hours else {}
    data = {
        # The mode the door acts in: shadow decides and records, never actuates.
        "mode": mode_name(mode),
        "mode_set_by": "installer" if forced else "hub",
        "hub_mode": mode_name(hub_mode),
        # By this machine's clock: a power cut can leave it hours wrong; the running agent uses
        # the monotonic time since its last verified beacon instead.
        "stale": bool(validity and (beacon_age is None or beacon_age > validity)),
        "stale_policy": pb.StalePolicy.Name(config.stale_policy) if config is not None else None,
        "device_id": ident.device_id, "device_name": ident.device_name, "site_id": ident.site_id,
        "site_name": ident.site_name, "hub": hub_address,
        "hub_key": fingerprint_text(ident.hub_key), "version": whitelist.version,
        "persons": whitelist.person_count, "state_digest": whitelist.state_digest.hex(),
        "last_sync_ok": state.last_sync_ok or None, "last_error": state.last_error,
        "hub_reachable": reachable, "last_beacon_hub_time": state.last_beacon_hub_time or None,
        "refused_bundles": state.refused,
        # A beacon proven fresh named a newer version than we hold: the agent keeps fetching.
        "behind": state.behind and state.hub_version > whitelist.version,
        "known_hub_version": state.hub_version or None,
        # A verified bundle held until its effective time (unix seconds, door clock).
        "pending_version": state.pending_version or None,
        "pending_effective_at": state.pending_effective_at or None,
        "refused_version": state.refused_version or None,
        "refused_reason": state.refused_reason or None,
        "refused_at": state.refused_at or None,
        # The latest hour with any decision (no identities: counts only).
        "decisions_hour": hours[-1].hour if hours else None,
        "decisions": latest,
    }
    whitelist.close()
    if as_json:
        emit_json(data)
        return
    from doorkeeper.tools.cli import human

    shown = dict(data)
    policy = data["stale_policy"]
    shown["stale_policy"] = human.words(str(policy), "STALE_POLICY_") if policy else "-"
    shown["last_sync_ok"] = human.seen(state.last_sync_ok)
    shown["last_beacon_hub_time"] = human.seen(state.last_beacon_hub_time)
    shown["mode"] = str(data["mode"]).upper()
    shown["refused_at"] = human.seen(state.refused_at) if state.refused_at else None
    if state.pending_effective_at:
        shown["pending_effective_at"] = human.local_time(state.pending_effective_at)
    shown["decisions"] = ", ".join(f"{k} {v}" for k, v in latest.items()) or None
    if hours:  # the hour's start, in this machine's zone (the JSON keeps unix seconds)
        shown["decisions_hour"] = human.local_time(hours[-1].hour)
    for k, v in shown.items():
        text = human.yes_no(v) if isinstance(v, bool) else ("-" if v is None or v == "" else v)
        console.print(f"{k.replace('_', ' '):>22}: {text}", highlight=False, markup=False)


@agent.command("run")
@DATA
@CONFIG
@click.option("--hub", "hub_address", help="Hub HOST:PORT, or several comma-separated (default: the "
              "config's hub_address, else the address(es) recorded at `agent init`).")
@click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="CA certificate of the hub (default: the config's tls_ca, else as recorded at init).")
@click.option("--camera", help="Camera: device index, rtsp/http URL, video file, image directory, or "
              "hotfolder:DIR (plays images dropped into DIR). "
              "Without one (here or in the config) the agent only keeps its whitelist and logs in sync.")
@click.option("--door", "door_type", type=click.Choice(["sim", "gpio", "command", "http"]),
              help="Door driver (default sim).")
@click.option("--door-option", "door_options", multiple=True, metavar="KEY=VALUE",
              help="Driver option (e.g. chip=/dev/gpiochip0, line=17, unlock_url=...). Repeatable.")
@click.option("--shadow", is_flag=True, default=None, help="Decide and record, never actuate (cut-over).")
@click.option("--max-frames", default=0, show_default=True, help="Stop after N camera frames (0 = never).")
@click.option("--loop-camera", is_flag=True, default=None, help="Replay an image directory or video forever.")
@click.option("--models", type=click.Path(file_okay=False), help="Face model directory (licensed models).")
@click.option("--det-size", type=int, help="Detector input size (default 320: door-distance faces).")
@click.option("--liveness-model", type=click.Path(dir_okay=False), help="insightface liveness ONNX file.")
@click.option("--card-reader", type=click.Path(), help="File or FIFO delivering one credential per line: "
              "card:NUMBER, pin:DIGITS, or a plain card number. Without --camera: a card/PIN-only door.")
@click.option("--confirm-frames", type=int, help="Consecutive frames that must agree (default 2).")
@click.option("--unlock-seconds", type=float, help="How long a grant unlatches the door (default 3).")
@click.option("--poll-interval", type=float, help="Seconds between sync polls (default 30).")
@click.option("--heartbeat-interval", type=float, help="Seconds between signed reports (default 60).")
@click.option("--upload-interval", type=float, help="Seconds between log uploads (default 10).")
@click.option("--metrics-listen", help='Prometheus endpoint HOST:PORT, or "off" (default 127.0.0.1:9109).')
@click.option("--log-person-ids", is_flag=True,
              help="Name person ids in log lines (default: '-'; the sealed entry log always has them).")
@click.option("--duration", default=0.0, help="Stop after this many seconds (0 = until SIGTERM).")
def run(data_dir: Path, config_path: Path | None, hub_address: str | None, tls_ca: Path | None,
        camera: str | None, door_type: str | None,
        door_options: tuple[str, ...], shadow: bool | None, max_frames: int, loop_camera: bool | None,
        models: str | None, det_size: int | None, liveness_model: str | None, card_reader: str | None,
        confirm_frames: int | None, unlock_seconds: float | None, poll_interval: float | None,
        heartbeat_interval: float | None, upload_interval: float | None, metrics_listen: str | None,
        log_person_ids: bool, duration: float) -> None:
    """Run the door: decide locally from camera and cards; sync and upload in the background.

    Settings come from the config file and DOORKEEPER_AGENT__* variables; options given here
    win over both.
    """
    import dataclasses

    from doorkeeper.agent.app import CARD_ONLY, AgentRuntime, StartupError
    from doorkeeper.agent.sync.identity import RegistrationError
    from doorkeeper.runtime.logs import setup_logging
    from doorkeeper.runtime.metrics import AgentMetrics
    from doorkeeper.tools.cli.common import metrics_server

    cfg = _config(config_path, data_dir)
    _registered(cfg.data_dir)
    setup_logging(cfg.log.format, cfg.log.level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    sync = cfg.sync_options()
    sync_overrides: dict[str, Any] = {
        "poll_interval_s": poll_interval, "heartbeat_interval_s": heartbeat_interval,
        "upload_interval_s": upload_interval, "hub_address": hub_address, "tls_ca": tls_ca}
    sync = dataclasses.replace(sync, **{k: v for k, v in sync_overrides.items() if v is not None})
    door = cfg.door_options(camera)  # the config's face/door/camera settings, even with --camera
    if door is None and card_reader:
        # A card/PIN door: the reader decides; no camera, no face models.
        face_only = {"--max-frames": max_frames, "--loop-camera": loop_camera, "--models": models,
                     "--det-size": det_size, "--liveness-model": liveness_model,
                     "--confirm-frames": confirm_frames}
        given = [flag for flag, value in face_only.items() if value]
        if given:
            fail(f"{given[0]} needs a camera (--camera or camera.source); a door with only "
                 "--card-reader decides from cards and PINs", code=2)
        door = cfg.door_options(CARD_ONLY)
        assert door is not None
    if door is None:
        if max_frames or shadow or door_type or door_options:
            fail("--max-frames, --shadow and door options need a camera (--camera or camera.source) "
                 "or a card reader (--card-reader)", code=2)
    else:
        driver = dict(door.door)
        if door_type:
            driver = {"type": door_type}
        for item in door_options:
            key, sep, value = item.partition("=")
            if not sep or not key:
                fail(f"--door-option must be KEY=VALUE, got {item!r}")
            driver[key] = _scalar(value)
        camera_opts = dict(door.camera_options)
        if loop_camera:
            camera_opts["loop"] = True
        door_overrides: dict[str, Any] = {
            "shadow": shadow, "models": models, "det_size": det_size, "liveness_model": liveness_model,
            "confirm_frames": confirm_frames, "unlock_seconds": unlock_seconds}
        door = dataclasses.replace(door, door=driver, max_frames=max_frames, camera_options=camera_opts,
                                   log_person_ids=log_person_ids,
                                   card_reader=card_reader or door.card_reader,
                                   **{k: v for k, v in door_overrides.items() if v is not None})
    _endpoint(cfg.data_dir, sync.hub_address, sync.tls_ca)
    metrics = AgentMetrics()
    metrics_cfg: Any = cfg.metrics  # a section class made per role at import time
    server = metrics_server(metrics_listen or metrics_cfg.listen, metrics.registry, metrics_cfg.allow_remote)
    try:
        runtime = AgentRuntime(cfg.data_dir, sync, door, metrics=metrics)
    except (RegistrationError, StartupError) as exc:
        fail(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if duration:
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True
        timer.start()
    try:
        runtime.run(stop, door.card_reader if door else None)
    finally:
        if server is not None:
            server.stop()


def _fields(hour: Any) -> dict[str, int]:
    return {f.name: int(getattr(hour, f.name)) for f in hour.DESCRIPTOR.fields if f.name != "hour"}


def _endpoint(data_dir: Path, hub_address: str | None, tls_ca: Path | None) -> None:
    """Refuse a malformed hub address or an unusable CA in one line before the door starts
    (a running door would only log the same failure at every sync)."""
    from doorkeeper.agent.sync.hubclient import BadAddress, BadCA, hub_addresses, read_ca
    from doorkeeper.agent.sync.identity import AgentFiles, RegistrationError

    try:
        address, ca = AgentFiles(data_dir).load_identity().endpoint(hub_address, tls_ca)
        hub_addresses(address)
        if ca is not None:
            read_ca(Path(ca))
    except (BadAddress, BadCA, RegistrationError) as exc:
        fail(str(exc), code=2)
    except OSError as exc:
        fail(f"--tls-ca: {exc}", code=2)


def _scalar(text: str) -> object:
    """Driver option values: ints, floats and booleans as such, anything else a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
