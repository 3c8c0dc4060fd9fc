"""SQLite backend of `HubStore`: the embedded default.

WAL mode, one connection per thread, explicit transactions
(`isolation_level=None`, `BEGIN IMMEDIATE` for writes), a busy timeout, and
`secure_delete` so removed rows do not linger in free pages.

`synchronous=FULL`: every commit fsyncs the WAL before it returns, so a change
whose version was answered to an operator survives a power cut and its version
number is never handed out again. (NORMAL fsyncs only at checkpoints: a cut
lost every change since the last one; tests/powerloss/test_hub_store.py.)
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from doorkeeper.hub.migrations import ROLLOUTS_V5, Migration, pending
from doorkeeper.hub.sqlrows import (
    AUDIT_COLS,
    BASE_PERSON_COLS,
    BASE_PERSONS_COPY,
    BUNDLE_COLS,
    CALL_MEMORY_S,
    CONFIG_ROW,
    DECISION_COLS,
    DEVICE_COLS,
    NONCE_PURGE_S,
    NONCE_PURGE_SLACK_S,
    OPEN_STATES,
    OPERATOR_COLS,
    PERSON_COLS,
    REPORT_COLS,
    ROLLOUT_COLS,
    ROLLOUT_MUTABLE,
    SITE_COLS,
    SITE_REPORTS,
    VERSION_COLS,
    View,
    audit_of,
    audit_values,
    base_person_of,
    bundle_of,
    bundle_values,
    decision_upsert,
    device_of,
    device_values,
    in_list,
    operator_of,
    operator_values,
    person_of,
    report_of,
    report_values,
    rollout_of,
    rollout_update_values,
    rollout_values,
    site_of,
    version_of,
)
from doorkeeper.hub.store import (
    DECISION_KEEP_S,
    ROLLOUT_OPEN,
    AuditEntry,
    BasePerson,
    BundleMeta,
    CallRecord,
    ChangeSet,
    Conflict,
    DecisionRow,
    Device,
    DeviceReport,
    NotFound,
    Operator,
    PersonRow,
    Rollout,
    Site,
    Token,
    VersionRow,
)
from doorkeeper.wire import digest

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS sites(
  site_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
  state_digest BLOB NOT NULL, person_count INTEGER NOT NULL, config_sealed BLOB NOT NULL,
  config_hash BLOB NOT NULL, horizon INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS persons(
  person_id TEXT PRIMARY KEY, site_id TEXT NOT NULL REFERENCES sites(site_id),
  name_sealed BLOB NOT NULL, record_sealed BLOB NOT NULL, record_hash BLOB NOT NULL,
  updated_version INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS persons_by_site ON persons(site_id, person_id);
CREATE TABLE IF NOT EXISTS credentials(
  site_id TEXT NOT NULL, kind TEXT NOT NULL, hash BLOB NOT NULL, person_id TEXT NOT NULL,
  PRIMARY KEY(site_id, kind, hash));
CREATE INDEX IF NOT EXISTS credentials_by_person ON credentials(person_id);
CREATE TABLE IF NOT EXISTS changes(
  site_id TEXT NOT NULL, version INTEGER NOT NULL, person_id TEXT NOT NULL,
  PRIMARY KEY(site_id, version, person_id));
CREATE TABLE IF NOT EXISTS devices(
  device_id TEXT PRIMARY KEY, site_id TEXT NOT NULL REFERENCES sites(site_id), name TEXT NOT NULL,
  created_at INTEGER NOT NULL, sign_public BLOB, box_public BLOB, registered_at INTEGER,
  UNIQUE(site_id, name));
CREATE TABLE IF NOT EXISTS tokens(
  token_id TEXT PRIMARY KEY, site_id TEXT NOT NULL, device_id TEXT NOT NULL,
  secret_hash BLOB NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER);
CREATE TABLE IF NOT EXISTS bundles(
  bundle_id TEXT PRIMARY KEY, site_id TEXT NOT NULL, kind INTEGER NOT NULL,
  from_version INTEGER NOT NULL, to_version INTEGER NOT NULL, ciphertext_sha256 BLOB NOT NULL,
  chunk_sha256 BLOB NOT NULL, chunk_length TEXT NOT NULL, content_key_sealed BLOB NOT NULL,
  state_digest BLOB NOT NULL, person_count INTEGER NOT NULL, created_at INTEGER NOT NULL,
  UNIQUE(site_id, kind, from_version, to_version));
CREATE INDEX IF NOT EXISTS bundles_by_hash ON bundles(site_id, ciphertext_sha256);
CREATE TABLE IF NOT EXISTS bundle_chunks(
  bundle_id TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(bundle_id, idx));
CREATE TABLE IF NOT EXISTS nonces(
  principal TEXT NOT NULL, nonce BLOB NOT NULL, expires_at REAL NOT NULL,
  PRIMARY KEY(principal, nonce));
CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces(expires_at);
CREATE TABLE IF NOT EXISTS operators(
  key_id TEXT PRIMARY KEY, public_key BLOB NOT NULL, role TEXT NOT NULL, name TEXT NOT NULL,
  created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reports(
  device_id TEXT PRIMARY KEY, version INTEGER NOT NULL, state_digest BLOB NOT NULL,
  person_count INTEGER NOT NULL, reported_at INTEGER NOT NULL, device_time INTEGER NOT NULL,
  manifest BLOB NOT NULL, signature BLOB NOT NULL, stale INTEGER NOT NULL, last_error TEXT NOT NULL,
  outbox_backlog INTEGER NOT NULL, outbox_dropped INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit(
  id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, principal TEXT NOT NULL,
  action TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests(
  principal TEXT NOT NULL, request_id TEXT NOT NULL, method TEXT NOT NULL,
  request_hash BLOB NOT NULL, response_sealed BLOB NOT NULL, at INTEGER NOT NULL,
  PRIMARY KEY(principal, request_id));
"""

MIGRATIONS: list[Migration] = [
    (1, SCHEMA_V1),
    # 2: forgetting old request ids (`remember_call`) no longer scans the whole table.
    (2, "CREATE INDEX IF NOT EXISTS requests_by_at ON requests(at);"),
    # 3: revoked doors and operator keys; the audit trail's hash chain and hub signatures
    # (entries written before it keep empty chain fields).
    (3, """
ALTER TABLE devices ADD COLUMN revoked_at INTEGER;
ALTER TABLE operators ADD COLUMN revoked_at INTEGER;
ALTER TABLE audit ADD COLUMN prev_hash BLOB NOT NULL DEFAULT x'';
ALTER TABLE audit ADD COLUMN entry_hash BLOB NOT NULL DEFAULT x'';
ALTER TABLE audit ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN signature BLOB NOT NULL DEFAULT x'';
"""),
    # 4: every site version with when it was made; when each door first reported each
    # version; hourly decision counts per door (no identities). Versions made before keep
    # made_at 0 (unknown).
    (4, """
CREATE TABLE site_versions(
  site_id TEXT NOT NULL, version INTEGER NOT NULL, state_digest BLOB NOT NULL,
  person_count INTEGER NOT NULL, made_at INTEGER NOT NULL, PRIMARY KEY(site_id, version));
INSERT INTO site_versions SELECT site_id, version, state_digest, person_count, 0 FROM sites;
CREATE TABLE door_versions(
  device_id TEXT NOT NULL, version INTEGER NOT NULL, first_seen_at INTEGER NOT NULL,
  PRIMARY KEY(device_id, version));
CREATE TABLE decision_hours(
  device_id TEXT NOT NULL, hour INTEGER NOT NULL,
  granted_face INTEGER NOT NULL DEFAULT 0,
  granted_card INTEGER NOT NULL DEFAULT 0,
  granted_pin INTEGER NOT NULL DEFAULT 0,
  refused_unknown_face INTEGER NOT NULL DEFAULT 0,
  refused_not_allowed_now INTEGER NOT NULL DEFAULT 0,
  refused_expired INTEGER NOT NULL DEFAULT 0,
  refused_stale INTEGER NOT NULL DEFAULT 0,
  refused_ambiguous INTEGER NOT NULL DEFAULT 0,
  refused_credential INTEGER NOT NULL DEFAULT 0,
  refused_other INTEGER NOT NULL DEFAULT 0,
  shadow_would_grant INTEGER NOT NULL DEFAULT 0,
  shadow_would_refuse INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(device_id, hour));
"""),
    # 5: staged rollouts (`doorkeeper.hub.rollouts`): one row per rollout (at most one open per
    # site) and the sealed records of its base, copied when its stage begins.
    (5, ROLLOUTS_V5.format(blob="BLOB", int="INTEGER")),
]


def schema_version(conn: sqlite3.Connection, component: str) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version(component TEXT PRIMARY KEY,"
                 " version INTEGER NOT NULL, applied_at INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version WHERE component = ?", (component,)).fetchone()
    return int(row[0]) if row else 0


def migrate_sqlite(conn: sqlite3.Connection, component: str, migrations: list[Migration]) -> int:
    """Apply the missing migrations of `component`, each in its own transaction; the version
    it ends at. (`executescript` commits what was pending, so each script carries its own
    BEGIN and COMMIT.)"""
    version = schema_version(conn, component)
    for number, sql in pending(component, version, migrations):
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\nINSERT OR REPLACE INTO schema_version VALUES"
                f" ('{component}', {number}, CAST(strftime('%s','now') AS INTEGER));\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        version = number
    return version

class SqliteHubStore:
    """`HubStore` on one SQLite file. Safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._nonces_purged_at = 0.0  # `spend_nonce`
        # Every open connection with the thread it belongs to: a connection outlives its
        # thread's thread-local, so a dead thread's is closed here, not at shutdown.
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        self._builds: dict[str, threading.Lock] = {}
        self.schema_version = migrate_sqlite(self._conn(), "hub", MIGRATIONS)

    # ------------------------------------------------------------ plumbing
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                self._reap()
                self._all.append((threading.current_thread(), conn))
        return conn

    def _reap(self) -> None:
        """Close the connections of threads that have ended (two descriptors each: db and WAL)."""
        alive = []
        for thread, conn in self._all:
            if thread.is_alive():
                alive.append((thread, conn))
            else:
                conn.close()
        self._all = alive

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; inside `atomic()` a savepoint of the enclosing one."""
        conn = self._conn()
        if getattr(self._local, "atomic", False):
            conn.execute("SAVEPOINT nested")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK TO nested")
                conn.execute("RELEASE nested")
                raise
            conn.execute("RELEASE nested")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def atomic(self) -> Iterator[None]:
        if getattr(self._local, "atomic", False):
            raise RuntimeError("atomic() blocks do not nest")
        with self._write():
            self._local.atomic = True
            try:
                yield
            finally:
                self._local.atomic = False

    def close(self) -> None:
        with self._lock:
            for _, conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # ------------------------------------------------------------ sites
    def create_site(self, site: Site) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    f"INSERT INTO sites({SITE_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                    (site.site_id, site.name, site.version, site.state_digest, site.person_count,
                     site.config_sealed, site.config_hash, site.created_at),
                )
                conn.execute(
                    "INSERT INTO changes(site_id, version, person_id) VALUES (?,?,?)",
                    (site.site_id, site.version, CONFIG_ROW),
                )
                conn.execute(f"INSERT INTO site_versions({VERSION_COLS}) VALUES (?,?,?,?,?)",
                             (site.site_id, site.version, site.state_digest, site.person_count,
                              site.created_at))
        except sqlite3.IntegrityError:
            raise Conflict(f"a site named {site.name!r} already exists") from None

    def _site(self, conn: sqlite3.Connection, name_or_id: str) -> sqlite3.Row:
        row = conn.execute(
            f"SELECT {SITE_COLS}, horizon FROM sites WHERE site_id = ? OR name = ?",
            (name_or_id, name_or_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no site {name_or_id!r}")
        return row

    def get_site(self, name_or_id: str) -> Site:
        return site_of(self._site(self._conn(), name_or_id))

    def list_sites(self) -> list[Site]:
        rows = self._conn().execute(f"SELECT {SITE_COLS} FROM sites ORDER BY name").fetchall()
        return [site_of(r) for r in rows]

    def site_versions(self) -> dict[str, int]:
        return dict(self._conn().execute("SELECT site_id, version FROM sites").fetchall())

    def person_site(self, person_id: str) -> str:
        row = self._conn().execute(
            "SELECT site_id FROM persons WHERE person_id = ?", (person_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no person {person_id!r}")
        return str(row[0])

    def list_persons(self, site_id: str) -> list[PersonRow]:
        rows = self._conn().execute(
            f"SELECT {PERSON_COLS} FROM persons WHERE site_id = ? ORDER BY person_id", (site_id,))
        return [person_of(r) for r in rows.fetchall()]

    def get_person(self, person_id: str) -> PersonRow:
        row = self._conn().execute(
            f"SELECT {PERSON_COLS} FROM persons WHERE person_id = ?", (person_id,)).fetchone()
        if row is None:
            raise NotFound(f"no person {person_id!r}")
        return person_of(row)

    def apply_changes(self, site_id: str, changes: ChangeSet, now: int) -> Site:
        with self._write() as conn:
            row = self._site(conn, site_id)
            version = row["version"] + 1
            for pid in changes.removes:
                cur = conn.execute(
                    "DELETE FROM persons WHERE site_id = ? AND person_id = ?", (site_id, pid)
                )
                if cur.rowcount != 1:
                    raise NotFound(f"no person {pid!r} in this site")
                conn.execute("DELETE FROM credentials WHERE person_id = ?", (pid,))
                conn.execute("INSERT INTO changes VALUES (?,?,?)", (site_id, version, pid))
            for p in changes.upserts:  # first, so credentials may move between them
                conn.execute("DELETE FROM credentials WHERE person_id = ?", (p.person_id,))
            for p in changes.upserts:
                conn.execute(
                    "INSERT INTO persons(person_id, site_id, name_sealed, record_sealed, record_hash,"
                    " updated_version) VALUES (?,?,?,?,?,?) ON CONFLICT(person_id) DO UPDATE SET"
                    " name_sealed = excluded.name_sealed, record_sealed = excluded.record_sealed,"
                    " record_hash = excluded.record_hash, updated_version = excluded.updated_version"
                    " WHERE persons.site_id = excluded.site_id",
                    (p.person_id, site_id, p.name_sealed, p.record_sealed, p.record_hash, version),
                )
                conn.execute("INSERT INTO changes VALUES (?,?,?)", (site_id, version, p.person_id))
                for kind, cred_hash in p.credentials:
                    try:
                        conn.execute("INSERT INTO credentials VALUES (?,?,?,?)",
                                     (site_id, kind, cred_hash, p.person_id))
                    except sqlite3.IntegrityError:
                        what = "PIN" if kind == "pin" else "card"
                        raise Conflict(f"that {what} belongs to another person of this site") from None
            config_sealed, config_hash = bytes(row["config_sealed"]), bytes(row["config_hash"])
            if changes.config_sealed is not None and changes.config_hash is not None:
                config_sealed, config_hash = changes.config_sealed, changes.config_hash
                conn.execute("INSERT INTO changes VALUES (?,?,?)", (site_id, version, CONFIG_ROW))
            hashes = conn.execute(
                "SELECT person_id, record_hash FROM persons WHERE site_id = ? ORDER BY person_id",
                (site_id,),
            )
            pairs = [(pid, bytes(h)) for pid, h in hashes]
            state = digest.state_digest(config_hash, pairs)
            conn.execute(
                "UPDATE sites SET version = ?, state_digest = ?, person_count = ?, config_sealed = ?,"
                " config_hash = ? WHERE site_id = ?",
                (version, state, len(pairs), config_sealed, config_hash, site_id),
            )
            conn.execute(f"INSERT INTO site_versions({VERSION_COLS}) VALUES (?,?,?,?,?)",
                         (site_id, version, state, len(pairs), now))
            return site_of(self._site(conn, site_id))

    @contextmanager
    def reading(self, site_id: str) -> Iterator[View]:
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            row = self._site(conn, site_id)
            yield View(conn, site_of(row), row["horizon"], "?")
        finally:
            conn.execute("COMMIT")

    def compact(self, site_id: str, keep_after_version: int) -> int:
        """Forget change-log rows at or below `keep_after_version` (devices older get snapshots)."""
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM changes WHERE site_id = ? AND version <= ?", (site_id, keep_after_version)
            )
            conn.execute(
                "UPDATE sites SET horizon = MAX(horizon, ?) WHERE site_id = ?",
                (keep_after_version, site_id),
            )
            # A door's reports of versions the log no longer explains are history nobody reads.
            conn.execute("DELETE FROM door_versions WHERE version <= ? AND device_id IN"
                         " (SELECT device_id FROM devices WHERE site_id = ?)", (keep_after_version, site_id))
            return cur.rowcount

    # ------------------------------------------------------------ devices
    def create_device(self, device: Device, token: Token) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    f"INSERT INTO devices({DEVICE_COLS}) VALUES (?,?,?,?,?,?,?,?)", device_values(device))
                conn.execute(
                    "INSERT INTO tokens VALUES (?,?,?,?,?,?)",
                    (token.token_id, token.site_id, token.device_id, token.secret_hash,
                     token.expires_at, token.used_at),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"a device named {device.name!r} already exists in this site") from None

    def get_device(self, device_id: str) -> Device:
        row = self._conn().execute(
            f"SELECT {DEVICE_COLS} FROM devices WHERE device_id = ?", (device_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no device {device_id!r}")
        return device_of(row)

    def list_devices(self, site_id: str | None = None) -> list[Device]:
        if site_id is None:
            rows = self._conn().execute(f"SELECT {DEVICE_COLS} FROM devices ORDER BY site_id, name")
        else:
            rows = self._conn().execute(
                f"SELECT {DEVICE_COLS} FROM devices WHERE site_id = ? ORDER BY name", (site_id,)
            )
        return [device_of(r) for r in rows.fetchall()]

    def device_keys(self, device_ids: Iterable[str]) -> dict[str, bytes | None]:
        conn = self._conn()
        keys: dict[str, bytes | None] = {}
        for device_id in device_ids:
            row = conn.execute("SELECT sign_public, revoked_at FROM devices WHERE device_id = ?",
                               (device_id,)).fetchone()
            if row is not None:
                keys[device_id] = None if row[1] is not None or row[0] is None else bytes(row[0])
        return keys

    def get_token(self, token_id: str) -> Token:
        row = self._conn().execute(
            "SELECT token_id, site_id, device_id, secret_hash, expires_at, used_at FROM tokens"
            " WHERE token_id = ?",
            (token_id,),
        ).fetchone()
        if row is None:
            raise NotFound("unknown token")
        return Token(row[0], row[1], row[2], bytes(row[3]), row[4], row[5])

    def bind_token_keys(self, token_id: str, sign_public: bytes, box_public: bytes, now: int) -> Device:
        with self._write() as conn:
            row = conn.execute(
                "SELECT device_id FROM tokens WHERE token_id = ? AND used_at IS NULL AND expires_at > ?",
                (token_id, now),
            ).fetchone()
            if row is None:
                raise Conflict("token already used or expired")
            device_id = row[0]
            conn.execute(
                "UPDATE devices SET sign_public = ?, box_public = ? WHERE device_id = ?",
                (sign_public, box_public, device_id),
            )
            row = conn.execute(
                f"SELECT {DEVICE_COLS} FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
            return device_of(row)

    def revoke_device(self, device_id: str, now: int) -> Device:
        with self._write() as conn:
            if conn.execute("UPDATE devices SET revoked_at = COALESCE(revoked_at, ?) WHERE device_id = ?",
                            (now, device_id)).rowcount != 1:
                raise NotFound(f"no device {device_id!r}")
            conn.execute("UPDATE tokens SET used_at = ? WHERE device_id = ? AND used_at IS NULL",
                         (now, device_id))
            return device_of(conn.execute(
                f"SELECT {DEVICE_COLS} FROM devices WHERE device_id = ?", (device_id,)).fetchone())

    def replace_device(self, device_id: str, token: Token) -> Device:
        with self._write() as conn:
            if conn.execute(
                "UPDATE devices SET sign_public = NULL, box_public = NULL, registered_at = NULL,"
                " revoked_at = NULL WHERE device_id = ?", (device_id,)
            ).rowcount != 1:
                raise NotFound(f"no device {device_id!r}")
            conn.execute("UPDATE tokens SET used_at = expires_at WHERE device_id = ? AND used_at IS NULL",
                         (device_id,))
            conn.execute("INSERT INTO tokens VALUES (?,?,?,?,?,?)",
                         (token.token_id, token.site_id, token.device_id, token.secret_hash,
                          token.expires_at, token.used_at))
            return device_of(conn.execute(
                f"SELECT {DEVICE_COLS} FROM devices WHERE device_id = ?", (device_id,)).fetchone())

    def complete_registration(self, device_id: str, now: int) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE tokens SET used_at = ? WHERE device_id = ? AND used_at IS NULL", (now, device_id)
            )
            if cur.rowcount == 1:
                conn.execute("UPDATE devices SET registered_at = ? WHERE device_id = ?", (now, device_id))
            row = conn.execute(
                "SELECT registered_at FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
            return row is not None and row[0] is not None

    # ------------------------------------------------------------ bundles
    @contextmanager
    def building(self, site_id: str) -> Iterator[None]:
        """One process owns a SQLite hub (DIR/hub.lock), so a lock per site is all it takes."""
        with self._lock:
            lock = self._builds.setdefault(site_id, threading.Lock())
        with lock:
            yield

    def put_bundle(self, meta: BundleMeta, chunks: Iterable[bytes]) -> BundleMeta:
        with self._write() as conn:
            existing = conn.execute(
                f"SELECT {BUNDLE_COLS} FROM bundles WHERE site_id = ? AND kind = ?"
                " AND from_version = ? AND to_version = ?",
                (meta.site_id, meta.kind, meta.from_version, meta.to_version),
            ).fetchone()
            if existing is not None:
                return bundle_of(existing)
            conn.execute(
                f"INSERT INTO bundles({BUNDLE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                bundle_values(meta),
            )
            for index, data in enumerate(chunks):
                conn.execute(
                    "INSERT INTO bundle_chunks(bundle_id, idx, data) VALUES (?,?,?)",
                    (meta.bundle_id, index, data),
                )
        return meta

    def find_bundle(self, site_id: str, kind: int, from_version: int, to_version: int) -> BundleMeta | None:
        row = self._conn().execute(
            f"SELECT {BUNDLE_COLS} FROM bundles WHERE site_id = ? AND kind = ? AND from_version = ?"
            " AND to_version = ?",
            (site_id, kind, from_version, to_version),
        ).fetchone()
        return bundle_of(row) if row else None

    def find_bundle_by_hash(self, site_id: str, ciphertext_sha256: bytes) -> BundleMeta | None:
        row = self._conn().execute(
            f"SELECT {BUNDLE_COLS} FROM bundles WHERE site_id = ? AND ciphertext_sha256 = ?",
            (site_id, ciphertext_sha256),
        ).fetchone()
        return bundle_of(row) if row else None

    def read_chunk(self, bundle_id: str, index: int) -> bytes:
        row = self._conn().execute(
            "SELECT data FROM bundle_chunks WHERE bundle_id = ? AND idx = ?", (bundle_id, index)
        ).fetchone()
        if row is None:
            raise NotFound(f"bundle {bundle_id} has no chunk {index} (pruned?)")
        return bytes(row[0])

    def prune_bundles(self, site_id: str, below_version: int) -> int:
        # Chunks are ciphertext: zeroing their pages (secure_delete) would only hold the
        # write lock longer (0.2 s for a 57 MB snapshot), delaying every signed call.
        self._conn().execute("PRAGMA secure_delete=OFF")
        try:
            return self._prune(site_id, below_version)
        finally:
            self._conn().execute("PRAGMA secure_delete=ON")

    def _prune(self, site_id: str, below_version: int) -> int:
        with self._write() as conn:
            # A staged rollout's base snapshot stays: held doors below the base fetch it.
            ids = [r[0] for r in conn.execute(
                "SELECT bundle_id FROM bundles WHERE site_id = ? AND to_version < ? AND to_version"
                " NOT IN (SELECT base_version FROM rollouts WHERE site_id = ? AND state = 'staged')",
                (site_id, below_version, site_id),
            )]
            for bid in ids:
                conn.execute("DELETE FROM bundle_chunks WHERE bundle_id = ?", (bid,))
                conn.execute("DELETE FROM bundles WHERE bundle_id = ?", (bid,))
            return len(ids)

    # ------------------------------------------------------------ auth
    def spend_nonce(self, principal: str, nonce: bytes, expires_at: float, now: float) -> bool:
        with self._write() as conn:
            if now >= self._nonces_purged_at + NONCE_PURGE_S:
                conn.execute("DELETE FROM nonces WHERE expires_at < ?", (now - NONCE_PURGE_SLACK_S,))
                self._nonces_purged_at = now
            cur = conn.execute(
                "INSERT OR IGNORE INTO nonces VALUES (?,?,?)", (principal, nonce, expires_at)
            )
            return cur.rowcount == 1

    def add_operator(self, operator: Operator) -> None:
        try:
            with self._write() as conn:
                conn.execute(f"INSERT INTO operators({OPERATOR_COLS}) VALUES (?,?,?,?,?,?)",
                             operator_values(operator))
        except sqlite3.IntegrityError:
            raise Conflict(f"operator key {operator.key_id} already exists") from None

    def get_operator(self, key_id: str) -> Operator:
        row = self._conn().execute(
            f"SELECT {OPERATOR_COLS} FROM operators WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"no operator key {key_id!r}")
        return operator_of(row)

    def list_operators(self) -> list[Operator]:
        rows = self._conn().execute(f"SELECT {OPERATOR_COLS} FROM operators ORDER BY created_at, name")
        return [operator_of(r) for r in rows.fetchall()]

    def revoke_operator(self, key_id: str, now: int) -> Operator:
        with self._write() as conn:
            if conn.execute("UPDATE operators SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?",
                            (now, key_id)).rowcount != 1:
                raise NotFound(f"no operator key {key_id!r}")
        return self.get_operator(key_id)

    # ------------------------------------------------------------ rollouts
    def _stage(self, conn: sqlite3.Connection, rollout_id: str, site_id: str, now: int) -> None:
        """Take the base of a rollout from the site as it is in this transaction."""
        site = self._site(conn, site_id)
        conn.execute(
            "UPDATE rollouts SET state = 'staged', started_at = ?, stage_started_at = ?,"
            " base_version = ?, base_digest = ?, base_person_count = ?, base_config_sealed = ?,"
            " base_config_hash = ?, audit_from = (SELECT COALESCE(MAX(id), 0) FROM audit),"
            " scheduled_at = 0, scheduled_action = '' WHERE rollout_id = ?",
            (now, now, site["version"], site["state_digest"], site["person_count"],
             site["config_sealed"], site["config_hash"], rollout_id))
        conn.execute(BASE_PERSONS_COPY.format(p="?"), (rollout_id, site_id))

    def _rollout(self, conn: sqlite3.Connection, rollout_id: str) -> Rollout:
        return rollout_of(conn.execute(f"SELECT {ROLLOUT_COLS} FROM rollouts WHERE rollout_id = ?",
                                       (rollout_id,)).fetchone())

    def start_rollout(self, rollout: Rollout) -> Rollout:
        try:
            with self._write() as conn:
                conn.execute(f"INSERT INTO rollouts({ROLLOUT_COLS}) VALUES ({','.join('?' * 23)})",
                             rollout_values(rollout))
                if rollout.state == "staged":
                    self._stage(conn, rollout.rollout_id, rollout.site_id, rollout.created_at)
                return self._rollout(conn, rollout.rollout_id)
        except sqlite3.IntegrityError:
            raise Conflict("this site already has an open rollout (abort or promote it first)") from None

    def stage_rollout(self, rollout_id: str, expect_rev: int, now: int) -> Rollout | None:
        with self._write() as conn:
            row = conn.execute("UPDATE rollouts SET rev = rev + 1 WHERE rollout_id = ? AND rev = ?"
                               " AND state = 'scheduled' RETURNING site_id",
                               (rollout_id, expect_rev)).fetchone()
            if row is None:
                return None
            self._stage(conn, rollout_id, row[0], now)
            return self._rollout(conn, rollout_id)

    def update_rollout(self, rollout: Rollout, expect_rev: int) -> bool:
        sets = ", ".join(f"{c} = ?" for c in ROLLOUT_MUTABLE)
        with self._write() as conn:
            done = conn.execute(f"UPDATE rollouts SET {sets}, rev = rev + 1 WHERE rollout_id = ?"
                                " AND rev = ?", (*rollout_update_values(rollout), rollout.rollout_id,
                                                 expect_rev)).rowcount == 1
            if done and rollout.state not in ROLLOUT_OPEN:  # its base is no longer served
                conn.execute("DELETE FROM rollout_persons WHERE rollout_id = ?", (rollout.rollout_id,))
            return done

    def site_and_rollout(self, site_id: str) -> tuple[Site, Rollout | None]:
        conn = self._conn()
        if getattr(self._local, "atomic", False):  # already one transaction
            return site_of(self._site(conn, site_id)), self.get_rollout(site_id)
        conn.execute("BEGIN")  # a read transaction: one snapshot of the WAL
        try:
            return site_of(self._site(conn, site_id)), self.get_rollout(site_id)
        finally:
            conn.execute("COMMIT")

    def get_rollout(self, site_id: str) -> Rollout | None:
        row = self._conn().execute(
            f"SELECT {ROLLOUT_COLS} FROM rollouts WHERE site_id = ?"
            f" ORDER BY state IN {OPEN_STATES} DESC, created_at DESC, rowid DESC LIMIT 1",
            (site_id,)).fetchone()
        return rollout_of(row) if row else None

    def open_rollouts(self) -> list[Rollout]:
        rows = self._conn().execute(
            f"SELECT {ROLLOUT_COLS} FROM rollouts WHERE state IN {OPEN_STATES} ORDER BY created_at")
        return [rollout_of(r) for r in rows.fetchall()]

    def rollout_persons(self, rollout_id: str) -> list[BasePerson]:
        rows = self._conn().execute(f"SELECT {BASE_PERSON_COLS} FROM rollout_persons"
                                    " WHERE rollout_id = ? ORDER BY person_id", (rollout_id,))
        return [base_person_of(r) for r in rows.fetchall()]

    # ------------------------------------------------------------ fleet and audit
    def record_report(self, report: DeviceReport) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO reports({REPORT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                report_values(report),
            )
            conn.execute("INSERT OR IGNORE INTO door_versions VALUES (?,?,?)",
                         (report.device_id, report.version, report.reported_at))
            if report.decisions:
                conn.executemany(decision_upsert("?", "max"),
                                 [(report.device_id, *row) for row in report.decisions])
                conn.execute("DELETE FROM decision_hours WHERE device_id = ? AND hour < ?",
                             (report.device_id, report.reported_at - DECISION_KEEP_S))

    def latest_report(self, device_id: str) -> DeviceReport | None:
        row = self._conn().execute(
            f"SELECT {REPORT_COLS} FROM reports WHERE device_id = ?", (device_id,)
        ).fetchone()
        return report_of(row) if row else None

    def latest_reports(self, site_id: str) -> dict[str, DeviceReport]:
        rows = self._conn().execute(SITE_REPORTS.format(mark="?"), (site_id,)).fetchall()
        return {r.device_id: r for r in map(report_of, rows)}

    def decision_rows(self, device_ids: Sequence[str], since: int, until: int
                      ) -> list[tuple[str, DecisionRow]]:
        if not device_ids:
            return []
        rows = self._conn().execute(
            f"SELECT device_id, {DECISION_COLS} FROM decision_hours WHERE device_id IN"
            f" {in_list('?', len(device_ids))} AND hour >= ? AND hour < ? ORDER BY device_id, hour",
            (*device_ids, since, until))
        return [(r[0], tuple(r[1:])) for r in rows.fetchall()]

    def door_versions(self, device_ids: Sequence[str], min_version: int) -> list[tuple[str, int, int]]:
        if not device_ids:
            return []
        rows = self._conn().execute(
            f"SELECT device_id, version, first_seen_at FROM door_versions WHERE device_id IN"
            f" {in_list('?', len(device_ids))} AND version >= ? ORDER BY device_id, version",
            (*device_ids, min_version))
        return [(r[0], r[1], r[2]) for r in rows.fetchall()]

    def version_rows(self, site_id: str, limit: int) -> list[VersionRow]:
        rows = self._conn().execute(
            f"SELECT {VERSION_COLS} FROM site_versions WHERE site_id = ? ORDER BY version DESC LIMIT ?",
            (site_id, limit))
        return [version_of(r) for r in rows.fetchall()]

    def version_row(self, site_id: str, version: int) -> VersionRow | None:
        row = self._conn().execute(
            f"SELECT {VERSION_COLS} FROM site_versions WHERE site_id = ? AND version = ?",
            (site_id, version)).fetchone()
        return version_of(row) if row else None

    def audit(self, entry: AuditEntry) -> None:
        with self._write() as conn:
            # seq 0 (an entry from outside the chain): the next free id
            conn.execute(f"INSERT INTO audit({AUDIT_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
                         audit_values(entry.seq or None, entry))

    def last_audit(self) -> AuditEntry | None:
        row = self._conn().execute(f"SELECT {AUDIT_COLS} FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        return audit_of(row) if row is not None else None

    def audit_page(self, after_seq: int, limit: int) -> list[AuditEntry]:
        rows = self._conn().execute(
            f"SELECT {AUDIT_COLS} FROM audit WHERE id > ? ORDER BY id LIMIT ?", (after_seq, limit))
        return [audit_of(r) for r in rows.fetchall()]

    def recall_call(self, principal: str, request_id: str) -> CallRecord | None:
        row = self._conn().execute(
            "SELECT method, request_hash, response_sealed FROM requests"
            " WHERE principal = ? AND request_id = ?",
            (principal, request_id),
        ).fetchone()
        return CallRecord(row[0], bytes(row[1]), bytes(row[2])) if row else None

    def remember_call(self, principal: str, request_id: str, record: CallRecord, now: int) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM requests WHERE at < ?", (now - CALL_MEMORY_S,))
            conn.execute(
                "INSERT INTO requests VALUES (?,?,?,?,?,?)",
                (principal, request_id, record.method, record.request_hash, record.response_sealed, now),
            )

    def list_audit(self, limit: int = 100) -> list[AuditEntry]:
        rows = self._conn().execute(f"SELECT {AUDIT_COLS} FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [audit_of(r) for r in rows.fetchall()]
