"""The agent's durable entry-log outbox (SQLite, WAL, synchronous=FULL).

Guarantees:
- `append` seals the entry to the site's log-owner key *before* anything is
  written, and returns only after its transaction committed with
  `synchronous=FULL`: a record `append` reported as written survives a power
  cut or kill -9.
- On disk there is only ciphertext and routing metadata (seq, kind, size,
  hashes, creation time, gap counts). No person id, decision or score, in the
  table, the WAL or a log line.
- Per-device seq grows by one per chain record and never goes back, also
  after every record was acknowledged and deleted.
- `append` never raises for storage trouble (disk full, SQLITE_FULL, I/O
  errors, a locked database): the decision is counted as lost, in the database
  when possible and in memory otherwise, and written to the chain as an
  explicit gap marker as soon as a write succeeds again.
- Without an owner key (never synced) nothing is sealed and nothing plaintext
  is written: the decision is counted as "unsealable, no owner key" and later
  appears as a gap marker.
- Storage is bounded by `OutboxPolicy` (records, bytes, age, free-disk
  floor). Dropping is always counted and leaves a dropped-range gap marker in
  place of the dropped records, so the chain still verifies end to end.
"""

from __future__ import annotations

import enum
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import entrylog
from doorkeeper.wire.entrylog import ENTRY, GAP, Entry, OwnerKey

log = logging.getLogger(__name__)

REASON_NO_OWNER_KEY = "unsealable, no owner key"
REASON_DISK_FULL = "disk full"
REASON_STORAGE_ERROR = "storage error"
REASON_DISK_FLOOR = "free disk below floor"
REASON_CAP_RECORDS = "record cap"
REASON_CAP_BYTES = "byte cap"
REASON_CAP_AGE = "age cap"
SQLITE_FULL = 13

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY,  -- last seq the row covers
    first_seq  INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,     -- device wall clock, seconds (age cap)
    size       INTEGER NOT NULL,
    prev_hash  BLOB NOT NULL,
    link       BLOB NOT NULL,        -- chain value after this row
    dropped    INTEGER NOT NULL,
    unwritten  INTEGER NOT NULL,
    record     BLOB NOT NULL         -- serialised SealedLogRecord (ciphertext)
);
CREATE TABLE IF NOT EXISTS outbox_state (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    device_id         TEXT NOT NULL,
    last_seq          INTEGER NOT NULL,
    head              BLOB NOT NULL,
    acked             INTEGER NOT NULL,
    rows              INTEGER NOT NULL,
    bytes             INTEGER NOT NULL,
    dropped_total     INTEGER NOT NULL,
    unwritten_total   INTEGER NOT NULL,
    pending_unwritten INTEGER NOT NULL,
    pending_reason    TEXT NOT NULL
);
"""


class DropPolicy(enum.Enum):
    DROP_OLDEST = "drop_oldest"  # keep the newest decisions (default)
    DROP_NEWEST = "drop_newest"  # keep what is queued, count new decisions as unwritten


@dataclass(frozen=True)
class OutboxPolicy:
    """Storage bounds. None = no cap. The free-disk floor always applies."""

    max_records: int | None = None
    max_bytes: int | None = None
    max_age_days: float | None = None
    min_free_bytes: int = 64 * 1024 * 1024
    policy: DropPolicy = DropPolicy.DROP_OLDEST
    drop_chunk: int = 64  # rows dropped at a time, so the marker is rewritten rarely
    busy_timeout_ms: int = 2000


@dataclass(frozen=True)
class AppendResult:
    written: bool
    seq: int = 0  # the record's seq when written
    reason: str = ""  # why not, when not written


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    first_seq: int
    kind: int
    size: int
    record: bytes


@dataclass(frozen=True)
class OutboxStats:
    """What the agent reports in its manifest and fleet status."""

    backlog_records: int
    backlog_bytes: int
    last_seq: int
    acked: int
    dropped_total: int
    unwritten_total: int  # includes decisions only counted in memory
    lost_in_memory: int  # not yet persisted anywhere (disk full)
    last_error: str


def _is_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == SQLITE_FULL or "full" in str(exc).lower()


def _merge_reason(old: str, new: str) -> str:
    if not old or old == new:
        return new[: entrylog.MAX_TEXT_CHARS]
    parts = old.split("; ")
    if new in parts:
        return old
    return "; ".join([*parts, new])[: entrylog.MAX_TEXT_CHARS]


class Outbox:
    """One device's outbox in a SQLite file.

    Thread use: the decision loop calls `append`; the uploader (another thread)
    calls `pending`, `acknowledge` and `flush_gaps`. Writes share one
    connection behind a lock and are short transactions; `pending` reads on its
    own connection (WAL readers never block the writer).
    """

    def __init__(
        self,
        path: Path,
        *,
        device_id: str,
        owner_key: Callable[[], OwnerKey | None],
        policy: OutboxPolicy | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        disk_free: Callable[[], int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.device_id = device_id
        self.policy = policy or OutboxPolicy()
        self._owner_key = owner_key
        self._wall = wall_clock
        self._mono = monotonic_ns
        self._disk_free = disk_free or (lambda: shutil.disk_usage(self.path.parent).free)
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._mem_lost = 0
        self._mem_reason = ""
        self.last_error = ""
        self._w: sqlite3.Connection
        self._r: sqlite3.Connection
        self._opened = False
        self._open_reason = ""  # why the file could not be opened (disk full at start)
        try:
            self._open()
        except (sqlite3.Error, OSError) as exc:
            self._not_opened(exc)
            log.warning("outbox cannot be opened (%s): decisions are counted and become a gap "
                        "marker once it can", self._open_reason)

    def _open(self) -> None:
        """Open both connections and the state row; raises (having closed them) on failure."""
        w = self._connect(writer=True)
        r: sqlite3.Connection | None = None
        try:
            r = self._connect(writer=False)
            w.executescript(_SCHEMA)
            w.execute("BEGIN IMMEDIATE")
            row = w.execute("SELECT device_id FROM outbox_state WHERE id = 1").fetchone()
            if row is None:
                w.execute(
                    "INSERT INTO outbox_state VALUES (1, ?, 0, ?, 0, 0, 0, 0, 0, 0, '')",
                    (self.device_id, entrylog.GENESIS),
                )
            elif row[0] != self.device_id:
                w.execute("ROLLBACK")
                raise ValueError(f"outbox {self.path} belongs to device {row[0]!r}")
            w.execute("COMMIT")
        except BaseException:
            w.close()
            if r is not None:
                r.close()
            raise
        self._w, self._r, self._opened, self._open_reason = w, r, True, ""

    def _not_opened(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        self._open_reason = REASON_DISK_FULL if _is_full(exc) else REASON_STORAGE_ERROR

    def _ensure_open(self) -> bool:
        """Open the file if that failed before (space may have returned). Caller holds _wlock."""
        if self._opened:
            return True
        try:
            self._open()
        except (sqlite3.Error, OSError) as exc:
            self._not_opened(exc)
            return False
        log.info("outbox opened; decisions counted meanwhile become one gap marker")
        return True

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self.policy.busy_timeout_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout = {int(self.policy.busy_timeout_ms)}")
        if writer:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        return conn

    def close(self) -> None:
        with self._wlock, self._rlock:
            if self._opened:
                self._r.close()
                self._w.close()
                self._opened = False

    # ------------------------------------------------------------ append

    def append(self, entry: Entry) -> AppendResult:
        """Seal and durably record one decision. Never raises for storage trouble.

        Returns `written=True` with the seq only after the commit returned.
        Otherwise the decision is counted (reason in the result) and will show
        up as a gap marker in the chain.
        """
        if not entry.wall_time_ms or not entry.monotonic_ns:
            entry = replace(
                entry,
                wall_time_ms=entry.wall_time_ms or int(self._wall() * 1000),
                monotonic_ns=entry.monotonic_ns or self._mono(),
            )
        try:
            owner = self._owner_key()
        except Exception as exc:  # the key provider must not break the door either
            log.error("owner key provider failed: %s", type(exc).__name__)
            owner = None
        with self._wlock:
            if not self._ensure_open():
                self._mem_lost += 1
                self._mem_reason = _merge_reason(self._mem_reason, self._open_reason)
                return AppendResult(False, reason=self._open_reason)
            if owner is None:
                self._count_unwritten(1, REASON_NO_OWNER_KEY)
                return AppendResult(False, reason=REASON_NO_OWNER_KEY)
            for attempt in range(2):
                try:
                    return self._append_locked(entry, owner)
                except (sqlite3.Error, OSError) as exc:
                    self._rollback()
                    self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                    full = _is_full(exc)
                    if (attempt == 0 and full
                            and self.policy.policy is DropPolicy.DROP_OLDEST
                            and self._try_drop(REASON_DISK_FULL)):
                        continue
                    reason = REASON_DISK_FULL if full else REASON_STORAGE_ERROR
                    log.warning("entry not recorded (%s): counted as a gap", reason)
                    self._count_unwritten(1, reason)
                    return AppendResult(False, reason=reason)
        raise AssertionError("unreachable")

    def _append_locked(self, entry: Entry, owner: OwnerKey) -> AppendResult:
        conn = self._w
        conn.execute("BEGIN IMMEDIATE")
        self._fold_memory_lost(conn)
        refusal = self._enforce_bounds(conn)
        if refusal:
            self._add_pending(conn, 1, refusal)
            conn.execute("COMMIT")
            self._mem_lost, self._mem_reason = 0, ""
            return AppendResult(False, reason=refusal)
        self._materialise_pending(conn)
        last_seq, head = conn.execute(
            "SELECT last_seq, head FROM outbox_state WHERE id = 1").fetchone()
        seq = last_seq + 1
        record = entrylog.seal_entry(entry, self.device_id, seq, head, owner)
        self._insert(conn, seq, seq, ENTRY, head, entrylog.chain_value(record), 0, 0, record)
        conn.execute("COMMIT")
        self._mem_lost, self._mem_reason = 0, ""
        return AppendResult(True, seq=seq)

    def _insert(self, conn: sqlite3.Connection, seq: int, first_seq: int, kind: int,
                prev: bytes, link: bytes, dropped: int, unwritten: int, record: bytes) -> None:
        conn.execute(
            "INSERT INTO outbox (seq, first_seq, kind, created_at, size, prev_hash, link,"
            " dropped, unwritten, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, first_seq, kind, int(self._wall()), len(record), prev, link, dropped,
             unwritten, record),
        )
        conn.execute(
            "UPDATE outbox_state SET last_seq = MAX(last_seq, ?), head = CASE WHEN ? > last_seq"
            " THEN ? ELSE head END, rows = rows + 1, bytes = bytes + ? WHERE id = 1",
            (seq, seq, link, len(record)),
        )

    # ------------------------------------------------------------ lost decisions

    def _rollback(self) -> None:
        try:
            if self._w.in_transaction:
                self._w.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback failed: %s", exc)

    def _count_unwritten(self, n: int, reason: str) -> None:
        """Persist a count of decisions that got no record; memory if that fails too."""
        try:
            self._w.execute("BEGIN IMMEDIATE")
            self._fold_memory_lost(self._w)
            self._add_pending(self._w, n, reason)
            self._w.execute("COMMIT")
            self._mem_lost, self._mem_reason = 0, ""
        except (sqlite3.Error, OSError) as exc:
            self._rollback()
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            self._mem_lost += n
            self._mem_reason = _merge_reason(self._mem_reason, reason)

    def _fold_memory_lost(self, conn: sqlite3.Connection) -> None:
        # Caller resets _mem_lost after COMMIT returns.
        if self._mem_lost:
            self._add_pending(conn, self._mem_lost, self._mem_reason)

    def _add_pending(self, conn: sqlite3.Connection, n: int, reason: str) -> None:
        (old,) = conn.execute("SELECT pending_reason FROM outbox_state WHERE id = 1").fetchone()
        conn.execute(
            "UPDATE outbox_state SET pending_unwritten = pending_unwritten + ?, "
            "unwritten_total = unwritten_total + ?, pending_reason = ? WHERE id = 1",
            (n, n, _merge_reason(old, reason)),
        )

    def _materialise_pending(self, conn: sqlite3.Connection) -> None:
        pending, reason, last_seq, head = conn.execute(
            "SELECT pending_unwritten, pending_reason, last_seq, head FROM outbox_state"
            " WHERE id = 1").fetchone()
        if not pending:
            return
        seq = last_seq + 1
        record = entrylog.gap_marker(seq=seq, prev_hash=head, unwritten=pending, reason=reason)
        self._insert(conn, seq, seq, GAP, head, entrylog.chain_value(record), 0, pending, record)
        conn.execute("UPDATE outbox_state SET pending_unwritten = 0, pending_reason = ''"
                     " WHERE id = 1")

    def flush_gaps(self) -> None:
        """Write counted-but-unrecorded decisions as a gap marker now (the uploader
        calls this so gaps reach the hub even when no decision follows)."""
        with self._wlock:
            if not self._ensure_open():
                return
            try:
                self._w.execute("BEGIN IMMEDIATE")
                self._fold_memory_lost(self._w)
                self._materialise_pending(self._w)
                self._w.execute("COMMIT")
                self._mem_lost, self._mem_reason = 0, ""
            except (sqlite3.Error, OSError) as exc:
                self._rollback()
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]

    # ------------------------------------------------------------ bounds

    def _enforce_bounds(self, conn: sqlite3.Connection) -> str:
        """Apply the caps before a new record; returns a reason when it must not be
        written (DROP_NEWEST, or nothing left to drop under the disk floor)."""
        p = self.policy
        rows, size = conn.execute("SELECT rows, bytes FROM outbox_state WHERE id = 1").fetchone()
        if p.max_age_days is not None:
            self._drop_aged(conn, int(self._wall() - p.max_age_days * 86400))
        checks = []
        if p.max_records is not None:
            checks.append((rows + 1 > p.max_records, REASON_CAP_RECORDS))
        if p.max_bytes is not None:
            checks.append((size + 512 > p.max_bytes, REASON_CAP_BYTES))
        if self._disk_free() < p.min_free_bytes:
            # Below the floor the file must not grow: drop only when SQLite has
            # no free pages left to reuse (deleted rows' pages are reused).
            (free_pages,) = conn.execute("PRAGMA freelist_count").fetchone()
            checks.append((free_pages < 4, REASON_DISK_FLOOR))
        for hit, reason in checks:
            if not hit:
                continue
            if p.policy is DropPolicy.DROP_NEWEST:
                return reason
            if not self._drop_oldest(conn, p.drop_chunk, reason) and reason == REASON_DISK_FLOOR:
                return reason  # nothing left to drop: the floor is hard
        return ""

    def _drop_aged(self, conn: sqlite3.Connection, cutoff: int) -> None:
        """Drop the oldest entries created before `cutoff` (a chunk at a time).
        Gap markers in front do not stop it: they stand for older records."""
        rows = conn.execute("SELECT seq, kind, created_at FROM outbox ORDER BY seq LIMIT ?",
                            (self.policy.drop_chunk + 1,)).fetchall()
        last_old = 0
        for seq, kind, created_at in rows:
            if kind == ENTRY and created_at >= cutoff:
                break
            if kind == ENTRY:
                last_old = seq
        if last_old:
            self._drop_through(conn, last_old, REASON_CAP_AGE)

    def _try_drop(self, reason: str) -> bool:
        try:
            self._w.execute("BEGIN IMMEDIATE")
            dropped = self._drop_oldest(self._w, self.policy.drop_chunk, reason)
            self._w.execute("COMMIT")
            return dropped
        except (sqlite3.Error, OSError) as exc:
            self._rollback()
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            return False

    def _drop_oldest(self, conn: sqlite3.Connection, n: int, reason: str) -> bool:
        """Replace the oldest `n` entry rows (plus any marker in front) by one
        dropped-range gap marker. False when there is no entry row to drop."""
        rows = conn.execute("SELECT seq, kind FROM outbox ORDER BY seq LIMIT ?",
                            (n + 1,)).fetchall()
        entries = [seq for seq, kind in rows if kind == ENTRY]
        if not entries:
            return False
        last = entries[min(n, len(entries)) - 1]
        self._drop_through(conn, last, reason)
        return True

    def _drop_through(self, conn: sqlite3.Connection, last: int, reason: str) -> None:
        rows = conn.execute(
            "SELECT seq, first_seq, kind, size, prev_hash, link, dropped, unwritten, record"
            " FROM outbox WHERE seq <= ? ORDER BY seq", (last,)).fetchall()
        if not rows:
            return
        merged_reason = ""
        dropped = unwritten = new_entries = freed = 0
        for _seq, _first, kind, size, _prev, _link, d, u, record in rows:
            freed += size
            if kind == ENTRY:
                dropped += 1
                new_entries += 1
            else:
                dropped += d
                unwritten += u
                merged_reason = _merge_reason(merged_reason,
                                              pb.SealedLogRecord.FromString(record).gap_reason)
        merged_reason = _merge_reason(merged_reason, reason)
        first = rows[0]
        end = rows[-1]
        marker = entrylog.gap_marker(seq=end[0], from_seq=first[1], prev_hash=first[4],
                                     dropped=dropped, unwritten=unwritten, reason=merged_reason,
                                     link_hash=end[5])
        conn.execute("DELETE FROM outbox WHERE seq <= ?", (last,))
        conn.execute(
            "UPDATE outbox_state SET rows = rows - ?, bytes = bytes - ?, "
            "dropped_total = dropped_total + ? WHERE id = 1",
            (len(rows), freed, new_entries))
        conn.execute(
            "INSERT INTO outbox (seq, first_seq, kind, created_at, size, prev_hash, link,"
            " dropped, unwritten, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (end[0], first[1], GAP, int(self._wall()), len(marker), first[4], end[5], dropped,
             unwritten, marker))
        conn.execute("UPDATE outbox_state SET rows = rows + 1, bytes = bytes + ? WHERE id = 1",
                     (len(marker),))
        log.warning("outbox dropped %d entries (%s); gap marker at seq %d..%d",
                    new_entries, reason, first[1], end[0])

    # ------------------------------------------------------------ upload side

    def pending(self, max_records: int = 1000, max_bytes: int = 2 * 1024 * 1024) -> list[OutboxRow]:
        """The oldest unacknowledged rows, in seq order, within both limits
        (at least one row when any is queued)."""
        with self._rlock:
            if not self._opened:
                return []
            cur = self._r.execute(
                "SELECT seq, first_seq, kind, size, record FROM outbox ORDER BY seq LIMIT ?",
                (max_records,))
            out: list[OutboxRow] = []
            total = 0
            for seq, first_seq, kind, size, record in cur:
                if out and total + size > max_bytes:
                    break
                out.append(OutboxRow(seq, first_seq, kind, size, bytes(record)))
                total += size
            cur.close()
            return out

    def acknowledge(self, watermark: int, sent_last_seq: int) -> int:
        """Delete rows the hub acknowledged: seq <= min(watermark, sent_last_seq).

        Never deletes beyond what was sent in the acknowledged batch, whatever
        the hub claims. Returns the number of rows deleted. Raises sqlite3
        errors (the uploader retries later; nothing is lost by not deleting).
        """
        upto = min(watermark, sent_last_seq)
        with self._wlock:
            try:
                self._w.execute("BEGIN IMMEDIATE")
                n, size = self._w.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE seq <= ?",
                    (upto,)).fetchone()
                self._w.execute("DELETE FROM outbox WHERE seq <= ?", (upto,))
                self._w.execute(
                    "UPDATE outbox_state SET rows = rows - ?, bytes = bytes - ?, "
                    "acked = MAX(acked, ?) WHERE id = 1", (n, size, upto))
                self._w.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return int(n)

    def stats(self) -> OutboxStats:
        with self._rlock:
            if not self._opened:
                return OutboxStats(0, 0, 0, 0, 0, self._mem_lost, self._mem_lost, self.last_error)
            (rows, size, last_seq, acked, dropped, unwritten) = self._r.execute(
                "SELECT rows, bytes, last_seq, acked, dropped_total, unwritten_total"
                " FROM outbox_state WHERE id = 1").fetchone()
        return OutboxStats(rows, size, last_seq, acked, dropped, unwritten + self._mem_lost,
                           self._mem_lost, self.last_error)
