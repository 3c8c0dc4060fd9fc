"""`doorkeeper agent ...`: register, run, sync and inspect a door terminal."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from doorkeeper.tools.clicommon import console, emit_json, fail

DATA = click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                    help="The agent's data directory.")


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


@click.group()
def agent() -> None:
    """The door terminal's agent."""


@agent.command("init")
@DATA
@click.option("--hub", "hub_address", required=True, envvar="DOORKEEPER_HUB", help="Hub HOST:PORT.")
@click.option("--token", required=True, help="One-time token from `doorkeeper device add`.")
@click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def init(data_dir: Path, hub_address: str, token: str, tls_ca: Path | None) -> None:
    """Create device keys, register with the hub, pin the hub key from the token."""
    import grpc

    from doorkeeper.agent.identity import RegistrationError, init_agent

    try:
        ident = init_agent(data_dir, hub_address, token, tls_ca)
    except RegistrationError as exc:
        fail(str(exc))
    except grpc.RpcError as exc:
        fail(f"registration refused: {exc.details()}")  # type: ignore[attr-defined]
    console.print(f"registered door {ident.device_name} of site {ident.site_name}; "
                  f"pinned hub key {ident.hub_sign_key[:16]}")
    click.echo(ident.device_id)


@agent.command("sync")
@DATA
@click.option("--attempts", default=3, show_default=True)
def sync(data_dir: Path, attempts: int) -> None:
    """One sync pass; exit status 0 when in sync with the hub."""
    from doorkeeper.agent.identity import AgentFiles, RegistrationError
    from doorkeeper.agent.sync import Syncer
    from doorkeeper.agent.whitelist import LocalWhitelist

    _logging()
    files = AgentFiles(data_dir)
    try:
        whitelist = LocalWhitelist(files.whitelist, files.storage_key())
        syncer = Syncer(files, whitelist)
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
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait when probing the hub.")
def status(data_dir: Path, as_json: bool, timeout: float) -> None:
    """Whitelist version, persons, state digest, last successful sync, hub reachable."""
    import grpc

    from doorkeeper.agent.hubclient import SYNC, HubClient
    from doorkeeper.agent.identity import AgentFiles, RegistrationError
    from doorkeeper.agent.sync import AgentState
    from doorkeeper.agent.whitelist import LocalWhitelist
    from doorkeeper.v1 import doorkeeper_pb2 as pb

    files = AgentFiles(data_dir)
    try:
        ident = files.load_identity()
        whitelist = LocalWhitelist(files.whitelist, files.storage_key())
    except RegistrationError as exc:
        fail(str(exc))
    state = AgentState.load(files.state)
    reachable = True
    with HubClient(ident.hub_address, timeout_s=timeout) as client:
        try:
            client.unsigned(SYNC + "Challenge", pb.ChallengeRequest(principal=ident.device_id))
        except grpc.RpcError:
            reachable = False
    data = {
        "device_id": ident.device_id, "device_name": ident.device_name, "site_id": ident.site_id,
        "site_name": ident.site_name, "hub": ident.hub_address, "version": whitelist.version,
        "persons": whitelist.person_count, "state_digest": whitelist.state_digest.hex(),
        "last_sync_ok": state.last_sync_ok or None, "last_error": state.last_error,
        "hub_reachable": reachable, "last_beacon_hub_time": state.last_beacon_hub_time or None,
        "refused_bundles": state.refused,
    }
    whitelist.close()
    if as_json:
        emit_json(data)
        return
    for k, v in data.items():
        console.print(f"{k:>22}: {v}")


@agent.command("run")
@DATA
@click.option("--camera", help="Camera: device index, rtsp/http URL, video file or image directory. "
              "Without it the agent only keeps its whitelist and logs in sync.")
@click.option("--door", "door_type", default="sim", show_default=True,
              type=click.Choice(["sim", "gpio", "command", "http"]), help="Door driver.")
@click.option("--door-option", "door_options", multiple=True, metavar="KEY=VALUE",
              help="Driver option (e.g. chip=/dev/gpiochip0, line=17, unlock_url=...). Repeatable.")
@click.option("--shadow", is_flag=True, help="Decide and record, never actuate (cut-over mode).")
@click.option("--max-frames", default=0, show_default=True, help="Stop after N camera frames (0 = never).")
@click.option("--models", type=click.Path(file_okay=False), help="Face model directory (licensed models).")
@click.option("--det-size", type=int, help="Detector input size (default 320: door-distance faces).")
@click.option("--liveness-model", type=click.Path(dir_okay=False), help="insightface liveness ONNX file.")
@click.option("--card-reader", type=click.Path(), help="File or FIFO delivering one card number per line.")
@click.option("--confirm-frames", default=2, show_default=True)
@click.option("--unlock-seconds", default=3.0, show_default=True)
@click.option("--poll-interval", default=30.0, show_default=True)
@click.option("--heartbeat-interval", default=60.0, show_default=True)
@click.option("--upload-interval", default=10.0, show_default=True)
@click.option("--duration", default=0.0, help="Stop after this many seconds (0 = until SIGTERM).")
def run(data_dir: Path, camera: str | None, door_type: str, door_options: tuple[str, ...], shadow: bool,
        max_frames: int, models: str | None, det_size: int | None, liveness_model: str | None,
        card_reader: str | None, confirm_frames: int, unlock_seconds: float, poll_interval: float,
        heartbeat_interval: float, upload_interval: float, duration: float) -> None:
    """Run the door: decide locally from camera and cards; sync and upload in the background."""
    from doorkeeper.agent.daemon import SyncOptions
    from doorkeeper.agent.identity import RegistrationError
    from doorkeeper.agent.runtime import AgentRuntime, DoorOptions, StartupError

    _logging()
    door = None
    if camera:
        options: dict[str, object] = {"type": door_type}
        for item in door_options:
            key, sep, value = item.partition("=")
            if not sep or not key:
                fail(f"--door-option must be KEY=VALUE, got {item!r}")
            options[key] = _scalar(value)
        door = DoorOptions(camera=camera, door=options, shadow=shadow, max_frames=max_frames,
                           models=models, det_size=det_size, liveness_model=liveness_model,
                           confirm_frames=confirm_frames, unlock_seconds=unlock_seconds)
    elif max_frames or shadow:
        fail("--max-frames and --shadow need --camera")
    try:
        runtime = AgentRuntime(data_dir, SyncOptions(poll_interval, heartbeat_interval, upload_interval),
                               door)
    except (RegistrationError, StartupError) as exc:
        fail(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if duration:
        threading.Timer(duration, stop.set).start()
    runtime.run(stop, card_reader)


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
