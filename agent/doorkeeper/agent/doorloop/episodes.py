"""Consecutive-frame confirmation and once-per-episode debounce for the door loop.

A face must be the best, accepted match for the same person over ``confirm_frames``
consecutive frames before it is decided, and is decided once per *episode*: the frames in
which it stays in view. A frame without a face, or ``episode_gap_s`` without any face, ends
the episode. Unknown faces are told apart by their embeddings (cosine against the last one),
so a stranger standing at the door is one record too. No I/O, no locks: decision thread only.
"""

from __future__ import annotations

import numpy as np

from doorkeeper.agent.doorloop.policy import Decision


class EpisodeConfirmer:
    """Tracks the current streak and what this episode already decided.

    ``threshold`` is the cosine at or above which two unknown faces count as the same
    stranger. ``redecide_after_s`` None: a face is decided once per episode; a number: again
    after that many seconds in view.
    """

    def __init__(self, *, confirm_frames: int, threshold: float,
                 episode_gap_s: float | None, redecide_after_s: float | None) -> None:
        self._confirm_frames = confirm_frames
        self._threshold = threshold
        self._episode_gap_s = episode_gap_s
        self._redecide_after_s = redecide_after_s
        self._key: tuple[str, str] | None = None
        self._count = 0
        self._last_face: float | None = None
        self._unknown_ref: np.ndarray | None = None
        self._unknown_seq = 0
        self._decided: dict[tuple[str, str], tuple[float, bool]] = {}
        self._version: int | None = None

    def end_episode(self) -> None:
        self._key, self._count = None, 0
        self._last_face = None
        self._unknown_ref = None
        self._decided.clear()

    def break_streak(self, now: float) -> None:
        """A face was seen but gave no usable match: it is still the same episode."""
        self._touch(now)
        self._key, self._count = None, 0

    def _touch(self, now: float) -> None:
        gap = self._episode_gap_s
        if self._last_face is not None and gap is not None and now - self._last_face > gap:
            self.end_episode()
        self._last_face = now

    def observe(self, person_id: str | None, embedding: np.ndarray, kind: str, version: int,
                now: float) -> bool:
        """Count this frame; True when it confirms a face not yet decided in this episode."""
        self._touch(now)
        if version != self._version:
            # New rules: forget refusals (a person made valid by this sync is decided again),
            # keep grants (a sync must not unlock the door a second time).
            self._version = version
            self._decided = {k: v for k, v in self._decided.items() if v[1]}
        if person_id is None:
            same = (self._unknown_ref is not None
                    and float(np.dot(self._unknown_ref, embedding)) >= self._threshold)
            if not same:
                self._unknown_seq += 1
            self._unknown_ref = embedding
            key = (kind + ":unknown", str(self._unknown_seq))
        else:
            key = (kind, person_id)
        if key == self._key:
            self._count += 1
        else:
            self._key, self._count = key, 1
        if self._count < self._confirm_frames:
            return False
        previous = self._decided.get(key)
        redecide = self._redecide_after_s
        return previous is None or (redecide is not None and now - previous[0] >= redecide)

    def decided(self, decision: Decision, now: float) -> None:
        """Remember the decision just made for the confirmed face (and whether it granted)."""
        if self._key is not None:
            self._decided[self._key] = (now, decision.granted)
