"""ruff and mypy stay clean (STYLE.md), checked by the same command as every other test."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _tool(name: str) -> list[str]:
    if shutil.which(name) is None:
        pytest.fail(f"{name} is not installed: install the dev extra (pip install -e '.[dev]')")
    return [sys.executable, "-m", name]


def test_ruff_is_clean() -> None:
    r = subprocess.run([*_tool("ruff"), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:]


def test_mypy_is_clean() -> None:
    r = subprocess.run([*_tool("mypy"), "agent", "hub", "protos/doorkeeper", "tools"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:]
