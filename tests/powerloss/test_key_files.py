"""Key files survive a power cut right after the command that wrote them returned.

Before key files were written with temp file, fsync, rename and an fsync of the directory,
a cut right after `hub init` left no key at all (or only `*.tmp` files), so the hub could not
start; the agent lost its identity the same way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from doorkeeper.tools.powerloss.keyfiles import (
    agent_init_trial,
    bootstrap_hub_init_trial,
    hub_init_trial,
    rotate_key_trial,
)
from tests.conftest import REPO


@pytest.mark.parametrize("existing_dir", [True, False], ids=["data-dir-existed", "init-made-data-dir"])
def test_hub_starts_after_a_cut_right_after_hub_init(disk: Path, existing_dir: bool) -> None:
    hub_init_trial(disk, existing_dir=existing_dir)


def test_agent_identity_survives_a_cut_right_after_init(disk: Path) -> None:
    agent_init_trial(disk)


def test_compose_bootstrap_hub_init_survives_a_cut(disk: Path) -> None:
    """The deploy script's certificate, TLS key and published CA copy (temp file and mv, with
    no sync) were empty or missing after a cut."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    bootstrap_hub_init_trial(disk, REPO / "deploy" / "compose-bootstrap.sh")


def test_hub_key_rotation_survives_a_cut_right_after_it_answered(disk: Path) -> None:
    """The operator was told the new key id; after a cut the hub must sign with it."""
    rotate_key_trial(disk)
