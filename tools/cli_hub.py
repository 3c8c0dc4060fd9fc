"""`doorkeeper hub ...`: create and run a hub."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from doorkeeper.tools.clicommon import console, fail


@click.group()
def hub() -> None:
    """Create and run the hub (the contractor's server)."""


@hub.command("init")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def init(data_dir: Path) -> None:
    """Create the hub's keys, database and first admin credential."""
    from doorkeeper.hub.server import HubInitError, init_hub

    try:
        operator = init_hub(data_dir)
    except HubInitError as exc:
        fail(str(exc))
    console.print(f"hub created in {data_dir}; first admin key written to {operator} (mode 0600)")
    click.echo(str(operator))


@hub.command("serve")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--listen", default="127.0.0.1:50051", show_default=True, help="HOST:PORT to listen on.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--beacon-interval", default=15.0, show_default=True,
              help="Seconds between signed time beacons.")
@click.option("--chunk-bytes", default=0, hidden=True,
              help="Plaintext bytes per bundle chunk (tests, tuning).")
def serve(data_dir: Path, listen: str, tls_cert: Path | None, tls_key: Path | None,
          beacon_interval: float, chunk_bytes: int) -> None:
    """Serve devices and operators over gRPC until SIGTERM."""
    from doorkeeper.hub.server import Hub, HubInitError
    from doorkeeper.hub.server import serve as run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(tls_cert) != bool(tls_key):
        fail("give both --tls-cert and --tls-key, or neither")
    try:
        h = Hub.open(data_dir, chunk_bytes)
        asyncio.run(run_server(h, listen, tls_cert, tls_key, beacon_interval_s=beacon_interval))
    except (HubInitError, ValueError) as exc:
        fail(str(exc))
    except RuntimeError as exc:  # grpc: could not bind
        fail(f"cannot serve on {listen}: {exc}")


@hub.command("rotate-key")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def rotate_key(data_dir: Path) -> None:
    """Replace the hub signing key (the old key vouches for the new one); restart the hub after."""
    from doorkeeper.hub.hubkeys import rotate_signing_key
    from doorkeeper.keys import KeyFileError

    try:
        old, new = rotate_signing_key(data_dir / "keys")
    except KeyFileError as exc:
        fail(str(exc))
    console.print(f"hub signing key {old} retired, {new} in use after restart; "
                  "doors follow the chain at their next sync, new tokens pin the new key")
    click.echo(new)
