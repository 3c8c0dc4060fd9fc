"""Power-loss tests: a FUSE file system that drops every unsynced write at a "cut".

They need root, /dev/fuse, Debian `fuse3` and the `mfusepy` package. Where any is missing they
skip with the reason, unless DOORKEEPER_REQUIRE_FUSE=1 (set by .ci/run, which installs fuse3),
which turns the skip into a failure so CI always runs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """A scratch root for one power-loss trial (it mounts `disk/mnt` over `disk/disk`)."""
    from doorkeeper.tools.powerloss.mount import unavailable

    reason = unavailable()
    if reason:
        message = f"power-loss file system unavailable: {reason}"
        if os.environ.get("DOORKEEPER_REQUIRE_FUSE") == "1":
            pytest.fail(message + "; DOORKEEPER_REQUIRE_FUSE=1 forbids skipping")
        pytest.skip(message)
    return tmp_path
