"""Hourly decision counts without identities, for the door's signed manifest.

Every decision the door records is also counted here, in exactly one field of its UTC hour
(`pb.DecisionHour`): which credential granted, why a refusal happened, or, in shadow
mode, whether it would have granted. Nothing else is kept: no person id, no time finer
than the hour, no image, so the hub can watch a rollout's health while entry logs stay
readable only by the data owner.

One SQLite file (`AgentFiles.counts`), WAL with ``synchronous=FULL``: a count is on disk
when `add` returns. If the disk refuses (full, read-only), counts wait in memory and go
out with the next write that works; the door keeps deciding either way. Hours older than
`KEEP_S` are pruned. Counters saturate at 2**32 - 1 (the wire's uint32).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.entrylog import Entry

log = logging.getLogger("doorkeeper.agent")

HOUR_S = 3600
KEEP_S = 8 * 24 * HOUR_S
MANIFEST_HOURS = 48
MAX_COUNT = 2**32 - 1
FIELDS = tuple(f.name for f in pb.DecisionHour.DESCRIPTOR.fields if f.name != "hour")

# Refusal reason codes (`doorloop.policy.Reason`) -> the DecisionHour field they count in.
# Anything not listed (liveness, no whitelist, a grant the door failed to carry out,
# a keypad lockout, a code a newer agent adds) is refused_other.
_FACE_REFUSALS = {
    "low_similarity": "refused_unknown_face",
    "revoked_or_unknown": "refused_unknown_face",
    "ambiguous_match": "refused_ambiguous",
}
_CREDENTIAL_REFUSALS = {
    "revoked_or_unknown": "refused_credential",
    "bad_credential_format": "refused_credential",
    "card_ambiguous": "refused_ambiguous",
    "pin_ambiguous": "refused_ambiguous",
}
_REFUSALS = {
    "not_yet_valid": "refused_expired",
    "expired": "refused_expired",
    "door_not_allowed": "refused_not_allowed_now",
    "outside_schedule": "refused_not_allowed_now",
    "stale_cards_only": "refused_stale",
    "stale_always_allowed_only": "refused_stale",
}
_GRANTS = {"face": "granted_face", "card": "granted_card", "pin": "granted_pin"}

# Column names come from the proto's field names (never from input); values are bound.
_SCHEMA = "CREATE TABLE IF NOT EXISTS hours(hour INTEGER PRIMARY KEY, " + ", ".join(
    f"{name} INTEGER NOT NULL DEFAULT 0" for name in FIELDS) + ")"
_INCREMENT = {
    name: f"INSERT INTO hours(hour, {name}) VALUES (?, min(?, {MAX_COUNT})) ON CONFLICT(hour) "  # noqa: S608
          f"DO UPDATE SET {name} = min({name} + excluded.{name}, {MAX_COUNT})"
    for name in FIELDS
}
_LATEST = f"SELECT hour, {', '.join(FIELDS)} FROM hours ORDER BY hour DESC LIMIT ?"  # noqa: S608


def field_for(entry: Entry) -> str:
    """The one DecisionHour field a decision counts in.

    Shadow mode: ``shadow_would_grant`` or ``shadow_would_refuse`` only (a shadow door's
    refusals are not mixed into an enforcing door's refusal counts). Otherwise a grant by
    credential, or a refusal by reason as mapped above."""
    if entry.shadow:
        return "shadow_would_grant" if entry.decision == "shadow" else "shadow_would_refuse"
    if entry.decision == "granted":
        return _GRANTS.get(entry.credential, "refused_other")
    by_credential = _FACE_REFUSALS if entry.credential == "face" else _CREDENTIAL_REFUSALS
    return by_credential.get(entry.reason) or _REFUSALS.get(entry.reason, "refused_other")


def hour_of(unix_s: float) -> int:
    return int(unix_s) // HOUR_S * HOUR_S


def read_hours(path: Path, limit: int = MANIFEST_HOURS) -> list[pb.DecisionHour]:
    """The latest ``limit`` hours for another process (`agent status`): opened read-only, so
    it never creates the file or its WAL under another user; [] when there is nothing to read."""
    if not Path(path).exists():
        return []
    uri = "file:" + urllib.parse.quote(str(Path(path).resolve())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute(_LATEST, (limit,)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        log.warning("decision counts unreadable: %s", exc)
        return []
    return [_hour(int(row[0]), _row_counts(row)) for row in reversed(rows) if any(row[1:])]


def _row_counts(row: tuple[int, ...]) -> Counter[str]:
    return Counter(dict(zip(FIELDS, (int(v) for v in row[1:]), strict=True)))


def _hour(hour: int, counts: Counter[str]) -> pb.DecisionHour:
    return pb.DecisionHour(hour=hour, **{k: min(v, MAX_COUNT) for k, v in counts.items() if v})


class DecisionCounts:
    """Per-hour counters in one SQLite file; thread-safe (the recorder thread adds, the sync
    thread reads for manifests)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._unsaved: Counter[tuple[int, str]] = Counter()
        self._conn: sqlite3.Connection | None = None
        self._failing = ""
        self._pruned_hour = 0
        self._connect()

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=False)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=FULL")
                    conn.execute("PRAGMA busy_timeout=10000")
                    conn.execute(_SCHEMA)
                except BaseException:
                    conn.close()
                    raise
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)
                return None
            self._conn = conn
        return self._conn

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning("decision counts not written (%s); kept in memory until the disk takes them", exc)
        self._failing = str(exc)

    def close(self) -> None:
        with self._lock:
            self._flush()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def add(self, entry: Entry) -> str:
        """Count one decision in its hour (now, by the door's clock); returns the field."""
        name = field_for(entry)
        now = self.clock()
        with self._lock:
            self._unsaved[(hour_of(now), name)] += 1
            self._flush()
            if hour_of(now) != self._pruned_hour:
                self._prune(now)
        return name

    def _flush(self) -> None:
        if not self._unsaved:
            return
        conn = self._connect()
        if conn is None:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for (hour, name), n in self._unsaved.items():
                    conn.execute(_INCREMENT[name], (hour, n))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return
        if self._failing:
            log.info("decision counts written again")
            self._failing = ""
        self._unsaved.clear()

    def _prune(self, now: float) -> None:
        conn = self._conn
        if conn is None or self._unsaved:
            return
        try:
            conn.execute("DELETE FROM hours WHERE hour < ?", (hour_of(now) - KEEP_S,))
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return
        self._pruned_hour = hour_of(now)

    def hours(self, limit: int = MANIFEST_HOURS) -> list[pb.DecisionHour]:
        """The latest ``limit`` hours with any decision, oldest first (unsaved counts included)."""
        with self._lock:
            self._flush()
            totals: dict[int, Counter[str]] = {}
            conn = self._conn
            if conn is not None:
                try:
                    rows = conn.execute(_LATEST, (limit,)).fetchall()
                except (sqlite3.Error, OSError) as exc:
                    self._failed(exc)
                    rows = []
                for row in rows:
                    totals[int(row[0])] = _row_counts(row)
            for (hour, name), n in self._unsaved.items():
                totals.setdefault(hour, Counter())[name] += n
        chosen = sorted(h for h, c in totals.items() if any(c.values()))[-limit:]
        return [_hour(h, totals[h]) for h in chosen]
