"""The agent's local whitelist: one SQLite file, records encrypted at rest.

A bundle is applied in one `BEGIN IMMEDIATE` transaction and committed only if
the resulting state digest equals the one the hub signed, so a crash or a bad
bundle leaves the old whitelist, never a mix. Person records (face templates
included) are stored sealed with the device's storage key; `secure_delete`
zeroes removed rows, and the WAL is truncated after each apply, so a removed
person's bytes do not survive in the database files.

A door must decide on its last whitelist whatever the disk says: when the
file cannot be opened for writing (a full disk cannot even hold the WAL's
shared-memory file), it is opened read-only; the next bundle reopens it for
writing once space returns.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from doorkeeper.agent.sync import bundle as core
from doorkeeper.runtime import faults
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import digest

log = logging.getLogger("doorkeeper.agent")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS persons(
  person_id TEXT PRIMARY KEY, record_hash BLOB NOT NULL, record_sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS credentials(
  hash BLOB NOT NULL, kind TEXT NOT NULL, person_id TEXT NOT NULL, PRIMARY KEY(hash, kind, person_id));
"""


class StorageError(Exception):
    """The local database cannot be read with this device's storage key."""


class LocalWhitelist:
    """The whitelist a door decides with. Thread-safe; one writer at a time."""

    def __init__(self, path: Path, storage_key: bytes) -> None:
        self.path = Path(path)
        self._box = SecretBox(storage_key)
        self._lock = threading.RLock()
        self.read_only = ""  # why the file is open read-only ("" = writable)
        try:
            self._conn = self._open_writable()
        except sqlite3.OperationalError as exc:
            if not self.path.exists():
                raise  # no whitelist to fall back on: the caller says what is wrong
            self._conn = self._open_read_only()
            self.read_only = str(exc)
            log.warning("whitelist opened READ-ONLY (%s): the door decides on version %d; "
                        "updates resume when the disk has room", exc, self.version)

    def _open_writable(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        """The file as it is, no write at all. Read-only WAL access needs the shared-memory
        file, which a full disk may not hold; then the file is read as immutable (the WAL is
        checkpointed and truncated after every apply, so the main file holds the state)."""
        uri = "file:" + urllib.parse.quote(str(self.path.resolve()))
        for mode in ("?mode=ro", "?mode=ro&immutable=1"):
            conn = sqlite3.connect(uri + mode, uri=True, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("SELECT COUNT(*) FROM meta").fetchone()
                return conn
            except sqlite3.OperationalError:
                conn.close()
        raise StorageError(f"{self.path}: cannot be opened, not even read-only")

    def _writable(self) -> sqlite3.Connection:
        """The connection to write with; a read-only whitelist tries to reopen for writing."""
        if self.read_only:
            try:
                conn = self._open_writable()
            except sqlite3.OperationalError as exc:
                raise StorageError(f"whitelist is read-only ({exc}); update not applied") from None
            self._conn.close()
            self._conn, self.read_only = conn, ""
            log.info("whitelist writable again")
        return self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------ state
    def _meta(self, key: str) -> bytes | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    @property
    def version(self) -> int:
        with self._lock:
            raw = self._meta("version")
        return int.from_bytes(raw, "big") if raw else 0

    @property
    def state_digest(self) -> bytes:
        with self._lock:
            return self._meta("state_digest") or b""

    @property
    def person_count(self) -> int:
        with self._lock:
            (n,) = self._conn.execute("SELECT COUNT(*) FROM persons").fetchone()
        return int(n)

    def site_config(self) -> pb.SiteConfig | None:
        with self._lock:
            sealed = self._meta("config_sealed")
        return pb.SiteConfig.FromString(self._open(sealed)) if sealed else None

    def _open(self, sealed: bytes) -> bytes:
        try:
            return self._box.decrypt(sealed)
        except CryptoError:
            raise StorageError(f"{self.path}: record does not open with this device's storage key") from None

    def _seal(self, raw: bytes) -> bytes:
        return bytes(self._box.encrypt(raw))

    # ------------------------------------------------------------ reads
    def records(self, page: int = 512) -> Iterator[pb.PersonRecord]:
        """Every person record, decrypted, in person id order (for building the face gallery).

        Reads ``page`` sealed rows at a time (under the lock for each page only), so at most
        one page of ciphertext and one decrypted record are held at once, whatever the
        site's size. An apply may land between pages: compare ``version`` before and after
        when the set must be consistent (the door's view does).
        """
        last: str | None = None
        while True:
            with self._lock:
                if last is None:
                    rows = self._conn.execute(
                        "SELECT person_id, record_sealed FROM persons ORDER BY person_id LIMIT ?",
                        (page,)).fetchall()
                else:
                    rows = self._conn.execute(
                        "SELECT person_id, record_sealed FROM persons WHERE person_id > ?"
                        " ORDER BY person_id LIMIT ?", (last, page)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            for _, sealed in rows:
                yield pb.PersonRecord.FromString(self._open(bytes(sealed)))

    def person(self, person_id: str) -> pb.PersonRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT record_sealed FROM persons WHERE person_id = ?", (person_id,)
            ).fetchone()
        return pb.PersonRecord.FromString(self._open(bytes(row[0]))) if row else None

    def by_credential(self, kind: str, cred_hash: bytes) -> list[pb.PersonRecord]:
        """Persons holding a card ("card") or PIN ("pin") with this keyed hash."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT p.record_sealed FROM credentials c JOIN persons p USING(person_id)"
                " WHERE c.hash = ? AND c.kind = ? ORDER BY p.person_id",
                (cred_hash, kind),
            ).fetchall()
        return [pb.PersonRecord.FromString(self._open(bytes(r[0]))) for r in rows]

    def compute_digest(self) -> bytes:
        with self._lock:
            return self._digest(self._conn)

    def _digest(self, conn: sqlite3.Connection) -> bytes:
        config_hash = self._meta("config_hash") or digest.EMPTY_CONFIG
        rows = conn.execute("SELECT person_id, record_hash FROM persons ORDER BY person_id")
        return digest.state_digest(config_hash, ((pid, bytes(h)) for pid, h in rows))

    # ------------------------------------------------------------ apply
    def apply(self, vh: core.VerifiedHeader, changes: Iterable[pb.Change], *, trial: bool = False) -> None:
        """Apply a verified bundle's changes atomically; refuse a digest mismatch.

        Raises a `core.BadBundle` (and rolls back) when a change is malformed or
        the resulting state digest or person count differs from the header's.
        ``trial=True`` does all of that and then rolls back even when every check passed:
        how a bundle held for a later effective time is proven whole on receipt.
        """
        h = vh.header
        with self._lock:
            conn = self._writable()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if vh.is_snapshot:
                    conn.execute("DELETE FROM persons")
                    conn.execute("DELETE FROM credentials")
                    conn.execute("DELETE FROM meta WHERE key IN ('config_sealed', 'config_hash')")
                for change in changes:
                    self._apply_one(conn, change)
                faults.reached("whitelist.apply:written")  # crash tests: inside the transaction
                state = self._digest(conn)
                (count,) = conn.execute("SELECT COUNT(*) FROM persons").fetchone()
                if state != h.state_digest or count != h.person_count:
                    raise core.DigestMismatch(
                        f"state after applying version {h.to_version} does not match the hub's digest"
                    )
                self._set(conn, "version", h.to_version.to_bytes(8, "big"))
                self._set(conn, "state_digest", state)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if trial:
                conn.execute("ROLLBACK")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                return
            conn.execute("COMMIT")
            faults.reached("whitelist.apply:committed")  # crash tests: committed, not checkpointed
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @staticmethod
    def _set(conn: sqlite3.Connection, key: str, value: bytes) -> None:
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _apply_one(self, conn: sqlite3.Connection, change: pb.Change) -> None:
        which = change.WhichOneof("change")
        if which == "upsert_record":
            raw = change.upsert_record
            rec = core.parse_record(raw)
            conn.execute("DELETE FROM credentials WHERE person_id = ?", (rec.person_id,))
            conn.execute(
                "INSERT OR REPLACE INTO persons(person_id, record_hash, record_sealed) VALUES (?,?,?)",
                (rec.person_id, digest.record_hash(raw), self._seal(raw)),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO credentials(hash, kind, person_id) VALUES (?,?,?)",
                [(h, "card", rec.person_id) for h in rec.card_hashes]
                + [(h, "pin", rec.person_id) for h in rec.pin_hashes],
            )
        elif which == "remove_person_id":
            pid = change.remove_person_id
            conn.execute("DELETE FROM credentials WHERE person_id = ?", (pid,))
            conn.execute("DELETE FROM persons WHERE person_id = ?", (pid,))
        elif which == "site_config":
            raw = change.site_config
            try:
                pb.SiteConfig.FromString(raw)
            except Exception:
                raise core.Malformed("site config does not parse") from None
            self._set(conn, "config_sealed", self._seal(raw))
            self._set(conn, "config_hash", digest.record_hash(raw))
        else:
            raise core.Malformed("empty change in bundle")
