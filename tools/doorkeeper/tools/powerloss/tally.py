"""What a power-cut trial saw: acknowledged writes against what survived, compared by contents.

A trial keeps every (key, content) pair a writer acknowledged, over all its cuts, and after
every reboot compares the store read back through the rebooted mount:

- lost: acknowledged pairs whose key is missing or now holds other contents (a record rewritten
  with the same sequence number after a cut counts as lost: what the client was told is gone);
- reissued_versions: keys acknowledged twice with different contents (a version number or seq
  handed out again after a cut);
- duplicated: contents stored under more than one key;
- integrity_failures: reboots after which the store's integrity check failed.
"""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from doorkeeper.tools.powerloss.mount import LazyMount


@dataclass
class Tally:
    """What one trial saw over all its cuts."""

    store: str
    records: int  # each cut comes after a random number, 1 to this, of acknowledged writes
    torn: bool = False  # cuts may also persist a random part of the unsynced pages
    cuts: int = 0
    torn_cuts: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    reissued_versions: int = 0
    integrity_failures: int = 0
    examples: list[str] = field(default_factory=list)
    _acked: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _lost: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _duplicated: set[str] = field(default_factory=set, repr=False)

    def cut(self, mount: LazyMount, rng: random.Random,
            *procs: subprocess.Popen[str]) -> None:
        """One power cut, counted. In a torn trial every other cut (at random) also persists a
        random fraction of the unsynced pages; the others drop all of them."""
        torn = self.torn and rng.random() < 0.5
        mount.cut(*procs, torn=(rng.random(), rng.randrange(2**31)) if torn else None)
        self.cuts += 1
        self.torn_cuts += torn

    def acknowledge(self, pairs: list[tuple[str, str]]) -> None:
        self._acked.update(pairs)
        self.acknowledged = len(self._acked)
        contents: dict[str, set[str]] = {}
        for key, content in self._acked:
            contents.setdefault(key, set()).add(content)
        self.reissued_versions = sum(1 for c in contents.values() if len(c) > 1)

    def check(self, stored: dict[str, str], integrity_ok: bool) -> None:
        """Compare every pair acknowledged so far with what the rebooted store holds."""
        for key, content in sorted(self._acked - self._lost):
            if stored.get(key) != content:
                self._lost.add((key, content))
                if len(self.examples) < 5:
                    self.examples.append(f"cut {self.cuts}: {key} acknowledged as {content!r}, "
                                         f"found {stored.get(key)!r}")
        self.lost = len(self._lost)
        counts = Counter(stored.values())
        self._duplicated.update(c for c, n in counts.items() if n > 1)
        self.duplicated = len(self._duplicated)
        if not integrity_ok:
            self.integrity_failures += 1

    def figures(self) -> dict[str, Any]:
        return {"cuts": self.cuts, "torn_cuts": self.torn_cuts, "records": self.records,
                "acknowledged": self.acknowledged,
                "lost": self.lost, "duplicated": self.duplicated,
                "reissued_versions": self.reissued_versions, "integrity_failures": self.integrity_failures,
                "examples": self.examples}
