"""ruff and mypy stay clean (STYLE.md), checked by the same command as every other test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _tool(name: str) -> list[str]:
    if shutil.which(name) is None:
        pytest.fail(f"{name} is not installed: install the dev extra (pip install -e '.[dev]')")
    return [sys.executable, "-m", name]


def test_ruff_is_clean() -> None:
    r = subprocess.run([*_tool("ruff"), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:]


def test_mypy_is_clean(tmp_path: Path) -> None:
    """mypy cannot follow setuptools' package-dir mapping, so check it on a tree of links laid
    out as the installed package (`doorkeeper` = protos/doorkeeper plus agent/, hub/, tools/)."""
    root = tmp_path / "doorkeeper"
    root.mkdir()
    for entry in (REPO / "protos" / "doorkeeper").iterdir():
        if entry.name != "__pycache__":
            (root / entry.name).symlink_to(entry)
    for sub in ("agent", "hub", "tools"):
        (root / sub).symlink_to(REPO / sub)
    r = subprocess.run(
        [*_tool("mypy"), "--config-file", str(REPO / "pyproject.toml"), "--cache-dir",
         str(tmp_path / "cache"), "-p", "doorkeeper"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(tmp_path)},
    )
    assert r.returncode == 0, r.stdout[-4000:]
