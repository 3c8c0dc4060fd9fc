"""`doorkeeper hub ...`: create and run a hub."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import click

from doorkeeper.hub.migrations import SchemaTooNew
from doorkeeper.tools.cli.common import console, fail, metrics_server, one_line


@click.group()
def hub() -> None:
    """Create and run the hub (the contractor's server)."""


STORE_HELP = ("postgresql://... URL of the database hub replicas share (or `store` in the config "
              "file, DOORKEEPER_HUB__STORE); default: SQLite files in the data directory.")


@hub.command("init")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--store", "store_url", envvar="DOORKEEPER_HUB__STORE", help=STORE_HELP)
def init(data_dir: Path, store_url: str | None) -> None:
    """Create the hub's keys, database and first admin credential."""
    from doorkeeper.hub.server import HubInitError, init_hub

    try:
        operator = init_hub(data_dir, store_url)
    except (HubInitError, ConnectionError) as exc:
        fail(str(exc))
    console.print(f"hub created in {data_dir}; first admin key written to {operator} (mode 0600)")
    _print_hub_key(data_dir)
    click.echo(str(operator))


def _print_hub_key(data_dir: Path) -> str:
    from doorkeeper.wire import keys

    try:
        public = (data_dir / "keys" / "hub.sign.pub").read_bytes()
    except FileNotFoundError:
        fail(f"{data_dir} holds no hub; run `doorkeeper hub init --data {data_dir}`")
    text = keys.fingerprint_text(public)
    console.print(f"hub signing key {keys.key_id(public)}, fingerprint {text}")
    return text


@hub.command("show")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def show(data_dir: Path) -> None:
    """Print the hub signing key's fingerprint (the last line; tokens end with the same base32)."""
    click.echo(_print_hub_key(data_dir))


@hub.command("serve")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Hub data directory (or data_dir in the config file).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="DOORKEEPER_HUB_CONFIG", help="hub.toml (default: DIR/hub.toml if present).")
@click.option("--listen", help="HOST:PORT to listen on (default 127.0.0.1:50051).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--beacon-interval", type=float, help="Seconds between signed time beacons (default 15).")
@click.option("--data-key", "data_key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              envvar="DOORKEEPER_DATA_KEY",
              help="Data key file, kept apart from the database (default DIR/keys/data.key).")
@click.option("--metrics-listen", help='Prometheus endpoint HOST:PORT, or "off" (default 127.0.0.1:9108).')
@click.option("--chunk-bytes", type=int, hidden=True,
              help="Plaintext bytes per bundle chunk (tests, tuning).")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--reconcile-interval", type=float,
              help="PostgreSQL: seconds between site-version checks that cover lost notifications "
                   "(default 30).")
def serve(data_dir: Path | None, config_path: Path | None, listen: str | None, tls_cert: Path | None,
          tls_key: Path | None, beacon_interval: float | None, data_key: Path | None,
          metrics_listen: str | None, chunk_bytes: int | None, store_url: str | None,
          reconcile_interval: float | None) -> None:
    """Serve devices and operators over gRPC until SIGTERM (then finish in-flight calls)."""
    from doorkeeper.hub import config as hub_config
    from doorkeeper.hub.server import Hub, HubBusy, HubInitError, tune_gc
    from doorkeeper.hub.server import serve as run_server
    from doorkeeper.runtime.config.loader import ConfigError
    from doorkeeper.runtime.logs import setup_logging
    from doorkeeper.runtime.metrics import HubMetrics

    try:
        cfg = hub_config.load(config_path, data_dir)
    except ConfigError as exc:
        fail(one_line(str(exc)), code=2)
    setup_logging(cfg.log.format, cfg.log.level)
    if bool(tls_cert) != bool(tls_key):
        fail("give both --tls-cert and --tls-key, or neither")
    cert, key = (tls_cert, tls_key) if tls_cert else (cfg.tls.cert, cfg.tls.key)
    metrics = HubMetrics()
    metrics_cfg: Any = cfg.metrics  # a section class made per role at import time
    server = metrics_server(metrics_listen or metrics_cfg.listen, metrics.registry, metrics_cfg.allow_remote)
    try:
        h = Hub.open(cfg.data_dir, chunk_bytes or cfg.chunk_bytes, data_key or cfg.data_key_path,
                     bundle_ttl_s=cfg.bundle_ttl_s, metrics=metrics, store_url=store_url or cfg.store,
                     reconcile_s=reconcile_interval or cfg.reconcile_interval_s,
                     pool_size=cfg.store_pool_size)
        tune_gc()
        asyncio.run(run_server(h, listen or cfg.listen, cert, key,
                               beacon_interval_s=beacon_interval or cfg.beacon_interval_s,
                               grace_s=cfg.shutdown_grace_s,
                               watch_max_age_s=(cfg.watch_max_age_s / 2, cfg.watch_max_age_s)))
    except HubBusy as exc:  # another hub holds the port or the data directory
        fail(str(exc), code=2)
    except (HubInitError, ValueError) as exc:  # no hub in --data, a refused listen address
        fail(str(exc), code=2)
    except (ConnectionError, SchemaTooNew) as exc:  # no database, or one from a newer hub
        fail(str(exc))
    finally:
        if server is not None:
            server.stop()


@hub.command("migrate")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Hub data directory (its SQLite files, or its config file's store).")
@click.option("--store", "store_url", envvar="DOORKEEPER_HUB__STORE", help=STORE_HELP)
@click.option("--from", "from_db", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Copy this single hub's SQLite hub.db (and logs.db beside it) ...")
@click.option("--to", "to_url", help="... into this empty PostgreSQL database (postgresql://...).")
def migrate(data_dir: Path | None, store_url: str | None, from_db: Path | None, to_url: str | None) -> None:
    """Bring a hub's schema to this version (forward-only; `hub serve` does it at start too),
    or copy a single SQLite hub into PostgreSQL with --from hub.db --to postgresql://..."""
    from doorkeeper.hub.server import HubBusy, HubInitError, lock_data_dir, open_store
    from doorkeeper.hub.sqlite_to_pg import CopyError, copy_sqlite_to_pg

    if bool(from_db) != bool(to_url):
        fail("give both --from hub.db and --to postgresql://..., or neither")
    try:
        if from_db and to_url:
            lock = lock_data_dir(from_db.parent)  # the hub must be stopped: a copy is one snapshot
            try:
                counts = copy_sqlite_to_pg(from_db, to_url)
            finally:
                os.close(lock)
            console.print("copied " + ", ".join(f"{n} {table}" for table, n in counts.items()))
            console.print(f"now serve with: doorkeeper hub serve --data {from_db.parent} --store URL")
            return
        if not (data_dir or store_url):
            fail("give --data DIR (SQLite) or --store postgresql://...")
        store = open_store(data_dir or Path("."), store_url)
        versions = getattr(store, "schema_versions", None) or {"hub": getattr(store, "schema_version", 0)}
        if data_dir and not store_url:
            from doorkeeper.hub.logstore import SqliteLogStore

            logs = SqliteLogStore(data_dir / "logs.db")
            versions["logs"] = logs.schema_version
            logs.close()
        store.close()
        console.print("schema at " + ", ".join(f"{c} {v}" for c, v in sorted(versions.items())))
    except HubBusy as exc:
        fail(f"{exc}; stop it first", code=2)
    except (HubInitError, CopyError, ConnectionError, SchemaTooNew) as exc:
        fail(str(exc))


@hub.command("rotate-key")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def rotate_key(data_dir: Path) -> None:
    """Replace the hub signing key (the old key vouches for the new one); restart the hub after."""
    from doorkeeper.hub.hubkeys import rotate_signing_key
    from doorkeeper.wire.keys import KeyFileError

    try:
        old, new = rotate_signing_key(data_dir / "keys")
    except KeyFileError as exc:
        fail(str(exc))
    console.print(f"hub signing key {old} retired, {new} in use after restart; "
                  "doors follow the chain at their next sync, new tokens pin the new key")
    _print_hub_key(data_dir)
    click.echo(new)
