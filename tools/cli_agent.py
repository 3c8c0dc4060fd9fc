"""`doorkeeper agent ...`: register, run, sync and inspect a door terminal."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import click

from doorkeeper.tools.clicommon import console, emit_json, fail

DATA = click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                    help="The agent's data directory.")


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
@click.option("--poll-interval", default=30.0, show_default=True)
@click.option("--heartbeat-interval", default=60.0, show_default=True)
@click.option("--duration", default=0.0, help="Stop after this many seconds (0 = until SIGTERM).")
def run(data_dir: Path, poll_interval: float, heartbeat_interval: float, duration: float) -> None:
    """Keep the whitelist in sync (watch stream + polling) until SIGTERM."""
    from doorkeeper.agent.daemon import SyncOptions, SyncService
    from doorkeeper.agent.identity import RegistrationError

    _logging()
    try:
        service = SyncService(data_dir, SyncOptions(poll_interval, heartbeat_interval))
    except RegistrationError as exc:
        fail(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.start()
    deadline = time.monotonic() + duration if duration else None
    while not stop.wait(0.5):
        if deadline is not None and time.monotonic() >= deadline:
            break
    service.close()
