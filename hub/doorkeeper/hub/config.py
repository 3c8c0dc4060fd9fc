"""The hub's configuration: ``hub.toml`` plus ``DOORKEEPER_HUB__*`` environment overrides.

Every key has a default, so a hub runs with no file at all. Loading rules (precedence, env
syntax, paths relative to the data directory) are in :mod:`doorkeeper.runtime.config.loader`; the keys
are the fields of :class:`HubConfig` and are shown, commented, in :data:`EXAMPLE`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from doorkeeper.runtime.config.loader import (
    ConfigError,
    DataPath,
    Listen,
    LogSection,
    OptionalFile,
    Section,
    example_toml,
    is_loopback_host,
    load_config,
    metrics_section,
    parse_listen,
)
from doorkeeper.wire.limits import LIMITS

__all__ = ["DEFAULT_DATA_DIR", "EXAMPLE", "ConfigError", "HubConfig", "load"]

DEFAULT_DATA_DIR = Path("/var/lib/doorkeeper/hub")
DEFAULT_DATA_KEY = "keys/data.key"
MiB = 1024 * 1024


class TlsSection(Section):
    """``[tls]``: PEM certificate chain and private key; both or neither, and both files must
    exist. Without them the hub serves plaintext, on loopback only."""

    cert: OptionalFile = Field(default=None, examples=["tls/hub.crt"])
    key: OptionalFile = Field(default=None, examples=["tls/hub.key"])

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsSection:
        if (self.cert is None) != (self.key is None):
            missing = "tls.key" if self.key is None else "tls.cert"
            raise ValueError(f"{missing}: give both tls.cert and tls.key, or neither")
        return self


HubMetrics = metrics_section("127.0.0.1:9108")


class HubConfig(Section):
    """Everything a hub process is configured with (``hub.toml``)."""

    role: Literal["hub"] | None = None
    data_dir: DataPath = Field(default=DEFAULT_DATA_DIR, description=(
        "Where the hub keeps its database, keys and logs (`doorkeeper hub init --data DIR`)."))
    tls: TlsSection = TlsSection()
    listen: Listen = Field(default="127.0.0.1:50051", description=(
        "gRPC address for devices and operators. Plaintext is allowed on loopback only; any other "
        "address needs [tls]."))
    data_key_file: OptionalFile = Field(default=None, examples=["/run/secrets/doorkeeper-data.key"],
                                        description=(
        "The key sealing personal fields at rest. Keep it apart from the database (e.g. on a separate "
        "volume) so a database dump alone reveals nothing. Default: keys/data.key"))
    beacon_interval_s: Annotated[float, Field(ge=1, le=3600)] = Field(default=15.0, description=(
        "Seconds between signed time beacons (how devices learn they are still fresh)."))
    watch_max_age_s: Annotated[float, Field(ge=1, le=24 * 3600)] = Field(default=3600.0, description=(
        "Longest life of one device watch stream, in seconds; each stream ends by itself after a "
        "random age between half of this and all of it, and the door reopens it from its version "
        "(a delta, never a snapshot). Behind a balancer, this is how connections spread over new "
        "replicas after a deploy. Keep any proxy's stream timeout above it."))
    bundle_ttl_s: Annotated[int, Field(ge=60, le=30 * 24 * 3600)] = Field(default=24 * 3600, description=(
        "How long a built bundle stays valid, in seconds (60 .. 30 days)."))
    chunk_bytes: Annotated[int, Field(ge=1024, le=2 * MiB)] = Field(
        default=LIMITS.target_chunk_bytes, description=(
        "Plaintext bytes per streamed bundle chunk (1024 .. 2 MiB); gRPC messages are capped at 4 MiB."))
    store: str | None = Field(default=None, examples=["postgresql://doorkeeper@db.internal/doorkeeper"],
                              description=(
        "Where the hub keeps its state: empty for SQLite files in data_dir (one hub process), or a "
        "postgresql:// URL shared by any number of hub replicas (give the password through PGPASSWORD "
        "or ~/.pgpass, not in this file). Never through a pooler in transaction mode."))
    store_pool_size: Annotated[int, Field(ge=2, le=200)] = Field(default=20, description=(
        "PostgreSQL only: connections each replica may hold (its worker threads share them; plus "
        "one LISTEN session). Replicas times this must fit the server's max_connections."))
    reconcile_interval_s: Annotated[float, Field(ge=1, le=3600)] = Field(default=30.0, description=(
        "PostgreSQL only: seconds between checks of every site's version, which wake watch streams "
        "if a change notification was lost (the longest a lost one delays a door)."))
    rollout_check_interval_s: Annotated[float, Field(ge=0.2, le=3600)] = Field(default=5.0, description=(
        "Seconds between passes of the rollout job: scheduled starts and promotions fire, auto-stop "
        "rules are evaluated, a promotion every door applied is closed."))
    rollout_offline_after_s: Annotated[int, Field(ge=10, le=30 * 24 * 3600)] = Field(
        default=300, description=(
        "A door unheard of for this many seconds counts as offline in rollout status and for the "
        "`offline>N` auto-stop rule (doors report at least every heartbeat, 60 s by default)."))
    shutdown_grace_s: Annotated[float, Field(ge=0, le=300)] = Field(default=5.0, description=(
        "Seconds in-flight calls get to finish on SIGTERM."))
    metrics: HubMetrics = HubMetrics()  # type: ignore[valid-type]
    log: LogSection = LogSection()

    @field_validator("store")
    @classmethod
    def _store_url(cls, store: str | None) -> str | None:
        if store and not store.startswith(("postgresql://", "postgres://")):
            raise ValueError("store must be a postgresql:// URL, or empty for SQLite in data_dir")
        return store or None

    @field_validator("listen")
    @classmethod
    def _tls_off_loopback(cls, listen: str, info: ValidationInfo) -> str:
        tls = info.data.get("tls")
        host, _ = parse_listen(listen)
        if isinstance(tls, TlsSection) and tls.cert is None and not is_loopback_host(host):
            raise ValueError(f"{host} is not a loopback address: serving there needs tls.cert and "
                             "tls.key (plaintext is allowed on loopback only)")
        return listen

    @property
    def data_key_path(self) -> Path:
        """The data key file in effect (``data_key_file`` or ``<data_dir>/keys/data.key``)."""
        return self.data_key_file or self.data_dir / DEFAULT_DATA_KEY


def load(path: Path | None = None, data_dir: Path | None = None,
         env: Mapping[str, str] = os.environ) -> HubConfig:
    """Load and validate the hub's config; raises ConfigError listing every problem.

    ``path`` None reads ``<data_dir>/hub.toml`` if it exists (else all defaults); a given
    ``path`` must exist. ``data_dir`` (the CLI's ``--data``) wins over the env and the file.
    """
    return load_config(HubConfig, "hub", path, data_dir, env, DEFAULT_DATA_DIR)


EXAMPLE = example_toml(HubConfig, "hub", """\
hub.toml: configuration of the doorkeeper hub (the contractor's server).
Every key is optional; the values shown are the defaults. Relative paths are relative to
data_dir and may not leave it. Any key can be overridden from the environment:
  DOORKEEPER_HUB__LISTEN=0.0.0.0:50051  DOORKEEPER_HUB__TLS__CERT=/etc/doorkeeper/hub.crt
Check a file with: doorkeeper config check hub.toml --show""")
