"""What the sync side of a door remembers between passes: its status file and its clock.

`AgentState` is the small JSON file other processes (`agent status`) read; it is written
atomically and durably (`doorkeeper.wire.durable`). `HubClock` is the time the door
judges bundles by: hub time from the last beacon proven fresh, advanced by the monotonic
clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from doorkeeper.agent.sync.identity import write_json_atomic

MAX_REFUSED_REASON_CHARS = 32


@dataclass
class AgentState:
    """Small status file other processes (`agent status`) can read."""

    last_sync_ok: float = 0.0
    last_attempt: float = 0.0
    last_error: str = ""
    hub_reachable: bool = False
    # Hub time when the hub last vouched for our whitelist (at the nonce the proof echoed):
    # after a restart, the best (wall-clock) bound on the age of that proof.
    last_beacon_hub_time: int = 0
    hub_version: int = 0  # the newest version a verified beacon named
    behind: bool = False  # a fresh beacon named a version we do not hold yet
    resync_wanted: bool = False
    refused: dict[str, int] = field(default_factory=dict)
    # The last bundle refused (its header's to_version, 0 when none could be read), a stable
    # short code (`bundle.BadBundle.code`) and when (device wall clock); cleared by an apply.
    refused_version: int = 0
    refused_reason: str = ""
    refused_at: int = 0
    # A verified bundle held until its effective time (the files are in `AgentFiles.held`).
    pending_version: int = 0
    pending_effective_at: int = 0
    # The running agent's installer flag forces shadow mode (`agent run --shadow` or config).
    installer_shadow: bool = False

    @classmethod
    def load(cls, path: Path) -> AgentState:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (FileNotFoundError, ValueError, TypeError):
            return cls()

    def save(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))

    def note_refused(self, version: int, code: str, at: float) -> None:
        self.refused_version = version
        self.refused_reason = code[:MAX_REFUSED_REASON_CHARS]
        self.refused_at = int(at)

    def clear_refused(self) -> None:
        self.refused_version, self.refused_reason, self.refused_at = 0, "", 0


class HubClock:
    """Hub time estimated from the last fresh beacon plus monotonic time since.

    Only beacons proven fresh move it: a replayed one would turn it back and let
    an expired bundle pass. Before the first fresh beacon in this process it is the
    wall clock, but never earlier than ``floor`` (the hub time of the last proof before a
    restart, `AgentState.last_beacon_hub_time`): a wall clock reset by a power cut must not
    turn a door's time back past what the hub already vouched for. Both clocks are
    injectable, so a test can move a door's time without sleeping.
    """

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, floor: float = 0.0) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self.floor = floor
        self._anchor: tuple[int, float] | None = None

    def observe(self, hub_time: int) -> None:
        self._anchor = (hub_time, self._monotonic())

    @property
    def anchored(self) -> bool:
        return self._anchor is not None

    def now(self) -> float:
        if self._anchor is None:
            return max(self._wall(), self.floor)
        hub_time, mono = self._anchor
        return hub_time + (self._monotonic() - mono)
