"""Storage of entry-log batches on the hub: a `LogStore` interface and its SQLite backend.

The store holds signed batches exactly as the device sent them (ciphertext
plus routing metadata: device, seq range, receive time, byte size) and
per-device counters for fleet status. It never sees a plaintext entry. The
chain/watermark logic lives in `doorkeeper.hub.logs`; a store only has to
apply a batch atomically when the device's watermark is still the one the
caller verified against (compare-and-set), so several hub replicas on one
PostgreSQL database stay correct.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from doorkeeper.hub.migrations import Migration
from doorkeeper.hub.sqlite_store import migrate_sqlite
from doorkeeper.hub.sqlrows import Executes
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.entrylog import GENESIS, Gap


@dataclass(frozen=True)
class DeviceLogState:
    """Where a device's stored chain ends."""

    device_id: str
    site_id: str
    watermark: int
    head: bytes


@dataclass(frozen=True)
class StoredBatch:
    site_id: str
    device_id: str
    first_seq: int  # first seq this batch added (earlier ones were already stored)
    last_seq: int
    received_at_ms: int
    byte_size: int
    signed_batch: bytes  # serialised SignedLogBatch, as received

    def as_proto(self) -> pb.SignedLogBatch:
        return pb.SignedLogBatch.FromString(self.signed_batch)


@dataclass(frozen=True)
class DeviceLogStatus:
    """Entry-log health of one device, for fleet status (what the device sent)."""

    device_id: str
    site_id: str
    watermark: int
    backlog: int  # as the device reported with its last batch
    gaps: int  # gap markers received
    dropped: int  # records the device declared dropped by policy
    unwritten: int  # decisions the device declared never written
    duplicates: int
    refused: int
    last_error: str  # last refusal, cleared by the next stored batch
    last_error_at_ms: int
    clock_skew_s: int  # device clock minus hub clock at the last batch
    last_received_at_ms: int
    stored_batches: int
    stored_bytes: int


@dataclass(frozen=True)
class BatchCommit:
    """Everything `commit_batch` applies in one transaction."""

    site_id: str
    device_id: str
    expected_watermark: int
    new_watermark: int
    new_head: bytes
    first_seq: int
    received_at_ms: int
    signed_batch: bytes
    backlog: int
    clock_skew_s: int
    gaps: Sequence[Gap]


class LogStore(Protocol):
    """What the ingest logic needs from a database backend."""

    def state(self, device_id: str) -> DeviceLogState | None:
        """The device's stored chain end, or None before its first batch."""
        ...

    def commit_batch(self, commit: BatchCommit) -> bool:
        """Store the batch and move the watermark, atomically, only if the stored
        watermark still equals `expected_watermark` (0 when none); False otherwise
        (nothing changed)."""
        ...

    def record_duplicate(self, site_id: str, device_id: str, records: int, at_ms: int,
                         backlog: int, clock_skew_s: int) -> None: ...

    def record_refusal(self, site_id: str, device_id: str, reason: str, at_ms: int) -> None:
        """Count a refused batch and keep its reason for fleet status (no log data)."""
        ...

    def batches(self, site_id: str, device_id: str | None = None,
                after_seq: int = 0) -> Iterator[StoredBatch]:
        """Stored batches of a site (or one device) whose last seq > after_seq,
        ordered by device then seq."""
        ...

    def device_status(self, device_id: str) -> DeviceLogStatus | None: ...

    def site_status(self, site_id: str) -> list[DeviceLogStatus]: ...

    def gaps(self, device_id: str) -> list[Gap]: ...


SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS log_batches (
    device_id    TEXT NOT NULL,
    first_seq    INTEGER NOT NULL,
    last_seq     INTEGER NOT NULL,
    site_id      TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    byte_size    INTEGER NOT NULL,
    signed_batch BLOB NOT NULL,
    PRIMARY KEY (device_id, first_seq)
);
CREATE INDEX IF NOT EXISTS log_batches_site ON log_batches (site_id, device_id, last_seq);
CREATE TABLE IF NOT EXISTS log_devices (
    device_id      TEXT PRIMARY KEY,
    site_id        TEXT NOT NULL,
    watermark      INTEGER NOT NULL DEFAULT 0,
    head           BLOB NOT NULL,
    backlog        INTEGER NOT NULL DEFAULT 0,
    gaps           INTEGER NOT NULL DEFAULT 0,
    dropped        INTEGER NOT NULL DEFAULT 0,
    unwritten      INTEGER NOT NULL DEFAULT 0,
    duplicates     INTEGER NOT NULL DEFAULT 0,
    refused        INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT NOT NULL DEFAULT '',
    last_error_at  INTEGER NOT NULL DEFAULT 0,
    clock_skew_s   INTEGER NOT NULL DEFAULT 0,
    last_received  INTEGER NOT NULL DEFAULT 0,
    stored_batches INTEGER NOT NULL DEFAULT 0,
    stored_bytes   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS log_gaps (
    device_id   TEXT NOT NULL,
    from_seq    INTEGER NOT NULL,
    to_seq      INTEGER NOT NULL,
    dropped     INTEGER NOT NULL,
    unwritten   INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, from_seq)
);
"""

MIGRATIONS: list[Migration] = [(1, SCHEMA_V1)]

STATUS_COLUMNS = (
    "device_id, site_id, watermark, backlog, gaps, dropped, unwritten, duplicates, refused, "
    "last_error, last_error_at, clock_skew_s, last_received, stored_batches, stored_bytes"
)


class SqlLogStore:
    """The `LogStore` logic both SQL backends share, written once.

    SQL is written with `?` markers; a backend sets `MARK` (its parameter marker),
    `LOCK_ROW` (what makes the watermark read hold the device's row until commit), `NULL_TEXT`
    (a possibly-null text parameter) and provides `_tx()` (one write transaction) and
    `_read()` (a connection for one read).
    """

    PAGE = 256  # batches per read when streaming an export (keyset pages, each its own read)
    MARK = "?"
    LOCK_ROW = ""
    NULL_TEXT = "?"

    def _tx(self) -> AbstractContextManager[Executes]:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Executes]:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        return sql if self.MARK == "?" else sql.replace("?", self.MARK)

    def _ensure_device(self, conn: Executes, site_id: str, device_id: str) -> None:
        conn.execute(self._q("INSERT INTO log_devices (device_id, site_id, head) VALUES (?, ?, ?)"
                             " ON CONFLICT (device_id) DO NOTHING"), (device_id, site_id, GENESIS))

    def state(self, device_id: str) -> DeviceLogState | None:
        with self._read() as conn:
            row = conn.execute(self._q("SELECT device_id, site_id, watermark, head FROM log_devices"
                                       " WHERE device_id = ?"), (device_id,)).fetchone()
        return None if row is None else DeviceLogState(row[0], row[1], row[2], bytes(row[3]))

    def commit_batch(self, commit: BatchCommit) -> bool:
        c = commit
        with self._tx() as conn:
            self._ensure_device(conn, c.site_id, c.device_id)
            row = conn.execute(self._q("SELECT watermark FROM log_devices WHERE device_id = ?")
                               + self.LOCK_ROW, (c.device_id,)).fetchone()
            if row is None or row[0] != c.expected_watermark:
                return False  # the inserted empty row (if any) is harmless: watermark 0
            conn.execute(
                self._q("INSERT INTO log_batches (device_id, first_seq, last_seq, site_id, received_at,"
                        " byte_size, signed_batch) VALUES (?, ?, ?, ?, ?, ?, ?)"),
                (c.device_id, c.first_seq, c.new_watermark, c.site_id, c.received_at_ms,
                 len(c.signed_batch), c.signed_batch))
            for g in c.gaps:
                conn.execute(
                    self._q("INSERT INTO log_gaps (device_id, from_seq, to_seq, dropped, unwritten,"
                            " reason, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)"),
                    (c.device_id, g.from_seq, g.to_seq, g.dropped, g.unwritten, g.reason,
                     c.received_at_ms))
            conn.execute(
                self._q("UPDATE log_devices SET watermark = ?, head = ?, backlog = ?, gaps = gaps + ?,"
                        " dropped = dropped + ?, unwritten = unwritten + ?, last_error = '',"
                        " clock_skew_s = ?, last_received = ?, stored_batches = stored_batches + 1,"
                        " stored_bytes = stored_bytes + ? WHERE device_id = ?"),
                (c.new_watermark, c.new_head, c.backlog, len(c.gaps),
                 sum(g.dropped for g in c.gaps), sum(g.unwritten for g in c.gaps),
                 c.clock_skew_s, c.received_at_ms, len(c.signed_batch), c.device_id))
        return True

    def record_duplicate(self, site_id: str, device_id: str, records: int, at_ms: int,
                         backlog: int, clock_skew_s: int) -> None:
        with self._tx() as conn:
            self._ensure_device(conn, site_id, device_id)
            conn.execute(self._q("UPDATE log_devices SET duplicates = duplicates + ?, last_received = ?,"
                                 " backlog = ?, clock_skew_s = ? WHERE device_id = ?"),
                         (records, at_ms, backlog, clock_skew_s, device_id))

    def record_refusal(self, site_id: str, device_id: str, reason: str, at_ms: int) -> None:
        with self._tx() as conn:
            self._ensure_device(conn, site_id, device_id)
            conn.execute(self._q("UPDATE log_devices SET refused = refused + 1, last_error = ?,"
                                 " last_error_at = ? WHERE device_id = ?"), (reason[:300], at_ms, device_id))

    def batches(self, site_id: str, device_id: str | None = None,
                after_seq: int = 0) -> Iterator[StoredBatch]:
        # Keyset pagination: each page is its own short read, so a slow export never holds a
        # read snapshot (and SQLite's WAL) open for long.
        sql = self._q(
            "SELECT site_id, device_id, first_seq, last_seq, received_at, byte_size, signed_batch"
            " FROM log_batches WHERE site_id = ? AND (@ IS NULL OR device_id = ?) AND last_seq > ?"
            " AND (device_id > ? OR (device_id = ? AND first_seq > ?))"
            " ORDER BY device_id, first_seq LIMIT ?").replace("@", self.NULL_TEXT)
        cursor: tuple[str, int] = ("", -1)
        while True:
            with self._read() as conn:
                rows = conn.execute(sql, (site_id, device_id, device_id, after_seq, cursor[0], cursor[0],
                                          cursor[1], self.PAGE)).fetchall()
            for r in rows:
                yield StoredBatch(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]))
            if len(rows) < self.PAGE:
                return
            cursor = (rows[-1][1], rows[-1][2])

    def device_status(self, device_id: str) -> DeviceLogStatus | None:
        with self._read() as conn:
            row = conn.execute(self._q(f"SELECT {STATUS_COLUMNS} FROM log_devices WHERE device_id = ?"),
                               (device_id,)).fetchone()
        return None if row is None else DeviceLogStatus(*row)

    def site_status(self, site_id: str) -> list[DeviceLogStatus]:
        with self._read() as conn:
            rows = conn.execute(self._q(f"SELECT {STATUS_COLUMNS} FROM log_devices WHERE site_id = ?"
                                        " ORDER BY device_id"), (site_id,)).fetchall()
        return [DeviceLogStatus(*r) for r in rows]

    def gaps(self, device_id: str) -> list[Gap]:
        with self._read() as conn:
            rows = conn.execute(self._q("SELECT from_seq, to_seq, dropped, unwritten, reason FROM log_gaps"
                                        " WHERE device_id = ? ORDER BY from_seq"), (device_id,)).fetchall()
        return [Gap(device_id, *r) for r in rows]


class SqliteLogStore(SqlLogStore):
    """`LogStore` on a SQLite file (WAL), possibly the hub's main database file.

    Only touches `log_*` tables. One connection per store object, guarded by a lock; every
    write is one short `BEGIN IMMEDIATE` transaction (which also orders two writers of one
    device: no row lock needed).
    """

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     timeout=busy_timeout_ms / 1000)
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        with self._lock:
            self.schema_version = migrate_sqlite(self._conn, "logs", MIGRATIONS)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[Executes]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[Executes]:
        with self._lock:
            yield self._conn
