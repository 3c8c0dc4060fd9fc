"""Shared fixtures.

Face tests use the real photos in ../shared/faces. Where that folder is absent
they skip with a clear message, unless DOORKEEPER_REQUIRE_FACES=1 (set by
.ci/run), which turns the skip into a failure so CI always runs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FACES_DIR = Path(os.environ.get("DOORKEEPER_FACES_DIR", REPO.parent / "shared" / "faces"))


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The shared face photos; skips (or fails under CI) when they are missing."""
    if not (FACES_DIR / "obama").is_dir():
        message = f"face photos not found at {FACES_DIR} (set DOORKEEPER_FACES_DIR)"
        if os.environ.get("DOORKEEPER_REQUIRE_FACES") == "1":
            pytest.fail(message + "; DOORKEEPER_REQUIRE_FACES=1 forbids skipping")
        pytest.skip(message)
    return FACES_DIR


@pytest.fixture
def hub(request, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real hub on a loopback port with a fresh SQLite file, or on a fresh PostgreSQL
    database for a test marked `@both_stores` (tests/harness.py)."""
    from tests.harness import HubThread

    store = getattr(request, "param", "sqlite")
    url = request.getfixturevalue("pg_url") if store == "postgresql" else None
    h = HubThread(tmp_path / "hub", store_url=url).start()
    yield h
    h.stop()


@pytest.fixture
def operator(hub):  # type: ignore[no-untyped-def]
    from tests.harness import Operator

    return Operator(hub.address, hub.data_dir / "operator.key")


@pytest.fixture
def pg_url():  # type: ignore[no-untyped-def]
    """A fresh, empty PostgreSQL database (dropped after the test); see tests/pg.py."""
    from tests.pg import database

    with database() as url:
        yield url


@pytest.fixture
def run(hub, monkeypatch):  # type: ignore[no-untyped-def]
    """The `doorkeeper` command in-process against the `hub` fixture with its first admin key;
    tables are drawn 200 columns wide so that no cell is folded."""
    from click.testing import CliRunner

    from doorkeeper.tools.cli import cli
    from doorkeeper.tools.cli.common import console

    monkeypatch.setattr(console, "width", 200)
    env = {"DOORKEEPER_HUB": hub.address, "DOORKEEPER_OPERATOR_KEY": str(hub.data_dir / "operator.key")}
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture(params=["sqlite", "postgresql"])
def rhub(request, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A hub whose rollout job passes every 0.3 s, on each store backend (the rollout tests)."""
    from tests.harness import HubThread

    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    h = HubThread(tmp_path / "hub", store_url=url, rollout_check_s=0.3).start()
    yield h
    h.stop()


@pytest.fixture
def op(rhub):  # type: ignore[no-untyped-def]
    """The first admin of `rhub`."""
    from tests.harness import Operator

    return Operator(rhub.address, rhub.data_dir / "operator.key")
