"""Proven freshness: when did the hub last vouch that this door's whitelist is current?

A hub signature proves who said something, never when: a recorded beacon
replays forever. So (as TUF's timestamp role, with a nonce instead of an
expiry) the door puts a random nonce of its own in every request whose answer
it will trust as current, and counts a beacon as fresh only when it carries
one of its outstanding nonces. Such a beacon proves the hub was alive, at the
version and digest it signed, no earlier than the moment the door chose that
nonce; that moment, on the door's monotonic clock, is what the proof is worth.

The whitelist is vouched for at that moment when the beacon's version and
digest are the door's own, or later, once the door holds a version at least
as new as a fresh beacon announced (the hub had nothing newer then). Staleness
counts from the last such moment. A fresh beacon announcing a newer version
does not vouch: the door is *behind* until it holds that version, and says so;
an attacker who replays an older delta, or withholds the newer one while
passing beacons through, chooses nothing but how soon the door goes stale.

Any verified beacon, fresh or not, shows that its version exists (versions only
grow), so the version a door knows of is the highest any beacon named, reset
to the hub's word by a fresh one.

No I/O here: the monotonic clock is passed in, the caller verifies signatures
(`bundle.verify_beacon`) and owns the network.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.freshness import new_nonce

MAX_OUTSTANDING = 16  # a watch stream, a fetch, a report and a few retries at once
MAX_PENDING = 16


class Verdict(StrEnum):
    REPLAYED = "replayed"  # carries no nonce of ours: proves nothing about now
    CURRENT = "current"  # fresh, and names our version and digest: vouches
    BEHIND = "behind"  # fresh, names a newer version: vouches once we hold it
    MISMATCH = "mismatch"  # fresh, our version with another digest: resync
    AHEAD = "ahead"  # fresh, names an older version than ours (a restored hub?)

    @property
    def fresh(self) -> bool:
        return self is not Verdict.REPLAYED


@dataclass(frozen=True)
class _Announced:
    chosen_mono: float  # when the door chose the nonce the announcing beacon echoed
    version: int
    digest: bytes


class FreshnessTracker:
    """The door's outstanding nonces and what fresh beacons proved. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._outstanding: OrderedDict[bytes, float] = OrderedDict()
        self._announced: list[_Announced] = []
        self._vouched_mono: float | None = None
        self.known_version = 0

    def new_nonce(self) -> bytes:
        """A nonce for the next request; answers echoing it are fresh until it is retired."""
        nonce = new_nonce()
        with self._lock:
            self._outstanding[nonce] = self._clock()
            while len(self._outstanding) > MAX_OUTSTANDING:
                self._outstanding.popitem(last=False)
        return nonce

    def retire(self, nonce: bytes) -> None:
        """The request is over: an answer echoing this nonce is a replay from now on."""
        with self._lock:
            self._outstanding.pop(nonce, None)

    def observe(self, beacon: pb.Beacon, held_version: int, held_digest: bytes) -> Verdict:
        """Judge a beacon whose signature and site were verified; record what it proves."""
        with self._lock:
            chosen = self._outstanding.get(bytes(beacon.nonce)) if beacon.nonce else None
            if chosen is None:
                self.known_version = max(self.known_version, beacon.version)
                return Verdict.REPLAYED
            self.known_version = beacon.version
            if beacon.version == held_version:
                if bytes(beacon.state_digest) != held_digest:
                    return Verdict.MISMATCH
                self._vouch(chosen)
                return Verdict.CURRENT
            if beacon.version < held_version:
                return Verdict.AHEAD
            self._announced.append(_Announced(chosen, beacon.version, bytes(beacon.state_digest)))
            del self._announced[:-MAX_PENDING]
            return Verdict.BEHIND

    def caught_up(self, held_version: int, held_digest: bytes) -> None:
        """The door now holds `held_version`: announcements it reached vouch for it."""
        with self._lock:
            keep = []
            for a in self._announced:
                if a.version > held_version:
                    keep.append(a)
                elif a.version < held_version or a.digest == held_digest:
                    self._vouch(a.chosen_mono)
            self._announced = keep

    def _vouch(self, chosen_mono: float) -> None:
        if self._vouched_mono is None or chosen_mono > self._vouched_mono:
            self._vouched_mono = chosen_mono

    def age_s(self) -> float | None:
        """Monotonic seconds since the hub last vouched for our whitelist; None if not yet."""
        with self._lock:
            vouched = self._vouched_mono
        return None if vouched is None else max(0.0, self._clock() - vouched)

    def behind(self, held_version: int) -> bool:
        return self.known_version > held_version
