"""Throwaway PostgreSQL databases for tests.

Each test gets its own database (CREATE DATABASE with a unique name, dropped after), so
parallel runs never collide. Without a server the PostgreSQL tests skip with a clear
message, unless DOORKEEPER_REQUIRE_POSTGRES=1 (set by .ci/run), which makes that a failure.
The server is DOORKEEPER_TEST_PG (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ADMIN_URL = os.environ.get("DOORKEEPER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


def require_server() -> None:
    """Skip (or fail under CI) when no PostgreSQL server answers."""
    try:
        import psycopg

        with _admin():
            return
    except (ImportError, psycopg.OperationalError) as exc:
        message = f"no PostgreSQL server at {ADMIN_URL} ({exc}); set DOORKEEPER_TEST_PG"
    if os.environ.get("DOORKEEPER_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + "; DOORKEEPER_REQUIRE_POSTGRES=1 forbids skipping")
    pytest.skip(message)


@contextmanager
def database() -> Iterator[str]:
    """A new empty database's URL; dropped (with its sessions) afterwards."""
    require_server()
    name = f"dk_test_{uuid.uuid4().hex[:16]}"
    with _admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, _ = ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with _admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def cluster() -> str:
    """The local cluster's version directory name (for pg_ctlcluster)."""
    return sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]


def pg_ctl(action: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster(), "main", action],
                   check=True, capture_output=True, timeout=120)


def server_up() -> bool:
    try:
        with _admin():
            return True
    except Exception:
        return False
