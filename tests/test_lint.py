"""ruff and mypy stay clean (STYLE.md), checked by the same command as every other test."""

from __future__ import annotations

import importlib.util
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
    """mypy reads the namespace roots named in pyproject.toml: the real tree, no links."""
    r = subprocess.run(
        [*_tool("mypy"), "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout[-4000:]


def test_import_layering_contracts_hold() -> None:
    """import-linter contracts in pyproject.toml: agent and hub never import each other, the
    I/O-free cores import no gRPC or SQLite, the wire contract imports nothing of ours."""
    if importlib.util.find_spec("importlinter") is None:
        pytest.fail("import-linter is not installed: install the dev extra (pip install -e '.[dev]')")
    # This interpreter, so the contracts are checked on the tree this interpreter imports.
    cli = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    r = subprocess.run([sys.executable, "-c", cli, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:]
    assert "0 broken" in r.stdout, r.stdout[-4000:]
