"""PostgreSQL backends of `HubStore` and `LogStore`: state for any number of hub replicas.

Every replica holds a `psycopg_pool` of autocommit connections; a write is one explicit
transaction (`conn.transaction()`), a nested one (inside `atomic()`) a savepoint of it.
What must agree across replicas lives here and nowhere else: a site's version is bumped by
`UPDATE ... RETURNING` (the row lock orders concurrent writers, so versions never repeat or
skip), nonces and tokens are spent by single statements, a bundle is stored once per
(site, kind, from, to) with `ON CONFLICT DO NOTHING`, and an entry-log batch moves a
device's watermark under that device's row lock. A change wakes the other replicas with
`pg_notify` in its own transaction (delivered at commit; see `PgChangeListener`).

Text columns use the "C" collation: person ids are ordered byte-wise for the state
digest, exactly as SQLite orders them.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from doorkeeper.hub.logstore import SqlLogStore
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
    Executes,
    View,
    audit_of,
    audit_values,
    base_person_of,
    bundle_of,
    bundle_values,
    device_of,
    device_values,
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
    DECISION_COUNTERS,
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
    Unavailable,
    VersionRow,
)
from doorkeeper.wire import digest

log = logging.getLogger("doorkeeper.hub.pg")

CHANNEL = "doorkeeper_sites"  # NOTIFY payload: the site id whose version moved
# NOTIFY payload: a device id revoked or replaced (its streams end on every replica). A
# revocation also notifies CHANNEL with its site: a replica of the previous release ends the
# stream by re-reading the door's row on that wake-up.
DEVICE_CHANNEL = "doorkeeper_devices"
_MIGRATION_LOCK = 0x646B5F6D  # pg_advisory_xact_lock key: one replica migrates at a time
_BUILD_LOCK = 0x646B  # pg_advisory_lock(this, hashtext(site_id)): one bundle build per site
_REQUEST_LOCK = 0x646C  # pg_advisory_xact_lock(this, hashtext(principal, request id))
_AUDIT_LOCK = 0x646B5F61  # pg_advisory_xact_lock key: one audit append (chain extension) at a time
_OPERATORS_LOCK = 0x646B5F6F  # pg_advisory_xact_lock key: one operator-key change at a time

HUB_V1 = """
CREATE TABLE IF NOT EXISTS sites(
  site_id TEXT COLLATE "C" PRIMARY KEY, name TEXT COLLATE "C" NOT NULL UNIQUE, version BIGINT NOT NULL,
  state_digest BYTEA NOT NULL, person_count BIGINT NOT NULL, config_sealed BYTEA NOT NULL,
  config_hash BYTEA NOT NULL, horizon BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS persons(
  person_id TEXT COLLATE "C" PRIMARY KEY, site_id TEXT COLLATE "C" NOT NULL REFERENCES sites(site_id),
  name_sealed BYTEA NOT NULL, record_sealed BYTEA NOT NULL, record_hash BYTEA NOT NULL,
  updated_version BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS persons_by_site ON persons(site_id, person_id);
CREATE TABLE IF NOT EXISTS credentials(
  site_id TEXT COLLATE "C" NOT NULL, kind TEXT COLLATE "C" NOT NULL, hash BYTEA NOT NULL,
  person_id TEXT COLLATE "C" NOT NULL, PRIMARY KEY(site_id, kind, hash));
CREATE INDEX IF NOT EXISTS credentials_by_person ON credentials(person_id);
CREATE TABLE IF NOT EXISTS changes(
  site_id TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, person_id TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY(site_id, version, person_id));
CREATE TABLE IF NOT EXISTS devices(
  device_id TEXT COLLATE "C" PRIMARY KEY, site_id TEXT COLLATE "C" NOT NULL REFERENCES sites(site_id),
  name TEXT COLLATE "C" NOT NULL, created_at BIGINT NOT NULL, sign_public BYTEA, box_public BYTEA,
  registered_at BIGINT, UNIQUE(site_id, name));
CREATE TABLE IF NOT EXISTS tokens(
  token_id TEXT COLLATE "C" PRIMARY KEY, site_id TEXT COLLATE "C" NOT NULL,
  device_id TEXT COLLATE "C" NOT NULL, secret_hash BYTEA NOT NULL, expires_at BIGINT NOT NULL,
  used_at BIGINT);
CREATE TABLE IF NOT EXISTS bundles(
  bundle_id TEXT COLLATE "C" PRIMARY KEY, site_id TEXT COLLATE "C" NOT NULL, kind INTEGER NOT NULL,
  from_version BIGINT NOT NULL, to_version BIGINT NOT NULL, ciphertext_sha256 BYTEA NOT NULL,
  chunk_sha256 BYTEA NOT NULL, chunk_length TEXT NOT NULL, content_key_sealed BYTEA NOT NULL,
  state_digest BYTEA NOT NULL, person_count BIGINT NOT NULL, created_at BIGINT NOT NULL,
  UNIQUE(site_id, kind, from_version, to_version));
CREATE INDEX IF NOT EXISTS bundles_by_hash ON bundles(site_id, ciphertext_sha256);
CREATE TABLE IF NOT EXISTS bundle_chunks(
  bundle_id TEXT COLLATE "C" NOT NULL, idx INTEGER NOT NULL, data BYTEA NOT NULL,
  PRIMARY KEY(bundle_id, idx));
CREATE TABLE IF NOT EXISTS nonces(
  principal TEXT COLLATE "C" NOT NULL, nonce BYTEA NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY(principal, nonce));
CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces(expires_at);
CREATE TABLE IF NOT EXISTS operators(
  key_id TEXT COLLATE "C" PRIMARY KEY, public_key BYTEA NOT NULL, role TEXT NOT NULL,
  name TEXT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS reports(
  device_id TEXT COLLATE "C" PRIMARY KEY, version BIGINT NOT NULL, state_digest BYTEA NOT NULL,
  person_count BIGINT NOT NULL, reported_at BIGINT NOT NULL, device_time BIGINT NOT NULL,
  manifest BYTEA NOT NULL, signature BYTEA NOT NULL, stale INTEGER NOT NULL, last_error TEXT NOT NULL,
  outbox_backlog BIGINT NOT NULL, outbox_dropped BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS audit(
  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at BIGINT NOT NULL, principal TEXT NOT NULL,
  action TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests(
  principal TEXT COLLATE "C" NOT NULL, request_id TEXT COLLATE "C" NOT NULL, method TEXT NOT NULL,
  request_hash BYTEA NOT NULL, response_sealed BYTEA NOT NULL, at BIGINT NOT NULL,
  PRIMARY KEY(principal, request_id));
"""

# The same versions as SQLite's (`sqlite_store.MIGRATIONS`): one numbering for both backends.
HUB_MIGRATIONS: list[Migration] = [
    (1, HUB_V1),
    (2, "CREATE INDEX IF NOT EXISTS requests_by_at ON requests(at);"),
    (3, """
ALTER TABLE devices ADD COLUMN revoked_at BIGINT;
ALTER TABLE operators ADD COLUMN revoked_at BIGINT;
ALTER TABLE audit ADD COLUMN prev_hash BYTEA NOT NULL DEFAULT ''::bytea;
ALTER TABLE audit ADD COLUMN entry_hash BYTEA NOT NULL DEFAULT ''::bytea;
ALTER TABLE audit ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN signature BYTEA NOT NULL DEFAULT ''::bytea;
"""),
    (4, """
CREATE TABLE site_versions(
  site_id TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, state_digest BYTEA NOT NULL,
  person_count BIGINT NOT NULL, made_at BIGINT NOT NULL, PRIMARY KEY(site_id, version));
INSERT INTO site_versions SELECT site_id, version, state_digest, person_count, 0 FROM sites;
CREATE TABLE door_versions(
  device_id TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, first_seen_at BIGINT NOT NULL,
  PRIMARY KEY(device_id, version));
CREATE TABLE decision_hours(
  device_id TEXT COLLATE "C" NOT NULL, hour BIGINT NOT NULL,
  granted_face BIGINT NOT NULL DEFAULT 0,
  granted_card BIGINT NOT NULL DEFAULT 0,
  granted_pin BIGINT NOT NULL DEFAULT 0,
  refused_unknown_face BIGINT NOT NULL DEFAULT 0,
  refused_not_allowed_now BIGINT NOT NULL DEFAULT 0,
  refused_expired BIGINT NOT NULL DEFAULT 0,
  refused_stale BIGINT NOT NULL DEFAULT 0,
  refused_ambiguous BIGINT NOT NULL DEFAULT 0,
  refused_credential BIGINT NOT NULL DEFAULT 0,
  refused_other BIGINT NOT NULL DEFAULT 0,
  shadow_would_grant BIGINT NOT NULL DEFAULT 0,
  shadow_would_refuse BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY(device_id, hour));
"""),
    (5, ROLLOUTS_V5.format(blob="BYTEA", int="BIGINT")),
]

LOGS_V1 = """
CREATE TABLE IF NOT EXISTS log_batches(
  device_id TEXT COLLATE "C" NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
  site_id TEXT COLLATE "C" NOT NULL, received_at BIGINT NOT NULL, byte_size BIGINT NOT NULL,
  signed_batch BYTEA NOT NULL, PRIMARY KEY(device_id, first_seq));
CREATE INDEX IF NOT EXISTS log_batches_site ON log_batches(site_id, device_id, last_seq);
CREATE TABLE IF NOT EXISTS log_devices(
  device_id TEXT COLLATE "C" PRIMARY KEY, site_id TEXT COLLATE "C" NOT NULL,
  watermark BIGINT NOT NULL DEFAULT 0, head BYTEA NOT NULL, backlog BIGINT NOT NULL DEFAULT 0,
  gaps BIGINT NOT NULL DEFAULT 0, dropped BIGINT NOT NULL DEFAULT 0,
  unwritten BIGINT NOT NULL DEFAULT 0, duplicates BIGINT NOT NULL DEFAULT 0,
  refused BIGINT NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
  last_error_at BIGINT NOT NULL DEFAULT 0, clock_skew_s BIGINT NOT NULL DEFAULT 0,
  last_received BIGINT NOT NULL DEFAULT 0, stored_batches BIGINT NOT NULL DEFAULT 0,
  stored_bytes BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS log_gaps(
  device_id TEXT COLLATE "C" NOT NULL, from_seq BIGINT NOT NULL, to_seq BIGINT NOT NULL,
  dropped BIGINT NOT NULL, unwritten BIGINT NOT NULL, reason TEXT NOT NULL,
  received_at BIGINT NOT NULL, PRIMARY KEY(device_id, from_seq));
"""
LOGS_MIGRATIONS: list[Migration] = [(1, LOGS_V1)]
COMPONENTS = {"hub": HUB_MIGRATIONS, "logs": LOGS_MIGRATIONS}


def is_postgres_url(store: str | None) -> bool:
    return bool(store) and str(store).startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password, for logs and messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def schema_versions(conn: psycopg.Connection[Any]) -> dict[str, int]:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version(component TEXT PRIMARY KEY,"
                 " version INTEGER NOT NULL, applied_at BIGINT NOT NULL)")
    return dict(conn.execute("SELECT component, version FROM schema_version").fetchall())


def migrate(conn: psycopg.Connection[Any], components: Iterable[str] = COMPONENTS) -> dict[str, int]:
    """Apply every missing migration in one transaction, one replica at a time (the others
    wait on the advisory lock, then find nothing to do). Returns component -> version."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        versions = schema_versions(conn)
        for component in components:
            for number, sql in pending(component, versions.get(component, 0), COMPONENTS[component]):
                conn.execute(sql)  # type: ignore[arg-type]  # trusted literal DDL
                conn.execute(
                    "INSERT INTO schema_version VALUES (%s, %s, %s) ON CONFLICT (component)"
                    " DO UPDATE SET version = excluded.version, applied_at = excluded.applied_at",
                    (component, number, int(time.time())))
                versions[component] = number
    return versions


# A pooled connection back in the pool for longer than this is checked before it is lent out.
CHECK_IDLE_S = 2.0


class _IdleCheck:
    """The pool's `check`: a connection that came back to the pool more than CHECK_IDLE_S ago
    is checked with a round trip before it is lent out again (a restarted server leaves broken
    ones behind); one returned moments ago is lent out as is (`PgHubStore._conn` notes when).
    Checking every loan was a round trip per store call, a third of the hub's statements under
    a fleet. A connection that breaks anyway fails its statement, which the store raises as
    `Unavailable` (the door retries) and the pool then discards."""

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = \
            weakref.WeakKeyDictionary()

    def note(self, conn: psycopg.Connection[Any]) -> None:
        self._returned[conn] = time.monotonic()

    def check(self, conn: psycopg.Connection[Any]) -> None:
        if time.monotonic() - self._returned.get(conn, 0.0) > CHECK_IDLE_S:
            ConnectionPool.check_connection(conn)


_IDLE = _IdleCheck()


_RECORD_REPORT = (
    f"WITH r AS (INSERT INTO reports({REPORT_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (device_id) DO UPDATE SET version = excluded.version,"
    " state_digest = excluded.state_digest, person_count = excluded.person_count,"
    " reported_at = excluded.reported_at, device_time = excluded.device_time,"
    " manifest = excluded.manifest, signature = excluded.signature, stale = excluded.stale,"
    " last_error = excluded.last_error, outbox_backlog = excluded.outbox_backlog,"
    " outbox_dropped = excluded.outbox_dropped),"
    " v AS (INSERT INTO door_versions VALUES (%s,%s,%s) ON CONFLICT DO NOTHING),"
    f" d AS (INSERT INTO decision_hours(device_id, {DECISION_COLS}) SELECT %s, u.* FROM unnest("
    + ", ".join(["%s::bigint[]"] * (1 + len(DECISION_COUNTERS))) + ") AS u"
    " ON CONFLICT (device_id, hour) DO UPDATE SET "
    + ", ".join(f"{c} = GREATEST(decision_hours.{c}, excluded.{c})" for c in DECISION_COUNTERS) + ")"
    " DELETE FROM decision_hours WHERE device_id = %s AND hour < %s"
)


def open_pool(url: str, max_size: int = 20) -> ConnectionPool:
    """A pool of autocommit connections, checked before use when they sat idle (`_IdleCheck`),
    whose first connection must succeed within 30 s."""
    pool = ConnectionPool(url, min_size=1, max_size=max_size, kwargs={"autocommit": True},
                          check=_IDLE.check, open=False, name="doorkeeper", timeout=30)
    try:
        pool.open(wait=True, timeout=30)
    except Exception as exc:
        pool.close()
        raise ConnectionError(f"cannot reach PostgreSQL at {redact(url)}: {exc}") from None
    return pool


class _View(View):
    def _rows(self, sql: str, args: tuple[Any, ...]) -> Iterable[Any]:
        """A server-side cursor: a big site's records stream instead of loading at once."""
        with self._conn.cursor(name="records") as cur:  # type: ignore[attr-defined]
            cur.execute(sql, args)
            yield from cur


class PgHubStore:
    """`HubStore` on a PostgreSQL database shared by every hub replica. Thread-safe."""

    def __init__(self, url: str, pool: ConnectionPool | None = None, pool_size: int = 20) -> None:
        self.url = url
        self.pool = pool or open_pool(url, pool_size)
        self._owns_pool = pool is None
        self._local = threading.local()
        self._nonces_purged_at = 0.0  # `spend_nonce`
        with self.pool.connection() as conn:
            self.schema_versions = migrate(conn)

    # ------------------------------------------------------------ plumbing
    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        pinned = getattr(self._local, "conn", None)
        if pinned is not None:
            yield pinned
            return
        try:
            with self.pool.connection() as conn:
                try:
                    yield conn
                finally:
                    _IDLE.note(conn)
        except psycopg.OperationalError as exc:
            raise Unavailable(f"the database is unavailable ({type(exc).__name__}); retry") from exc

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction; inside `atomic()` a savepoint of the enclosing one."""
        with self._conn() as conn, conn.transaction():
            yield conn

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        with self._conn() as conn:
            return conn.execute(sql, args).fetchone()  # type: ignore[arg-type]

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._conn() as conn:
            return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]

    def _in_change(self) -> bool:
        """Inside `atomic()` on this thread (an operator change)."""
        return getattr(self._local, "conn", None) is not None

    @contextmanager
    def atomic(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            raise RuntimeError("atomic() blocks do not nest")
        # As `_conn`: a pooled connection lent out unchecked (`_IdleCheck`) that the server
        # dropped fails this change as Unavailable (UNAVAILABLE: retry), not as an unmapped error.
        try:
            with self.pool.connection() as conn, conn.transaction():
                self._local.conn = conn
                try:
                    yield
                finally:
                    self._local.conn = None
                    _IDLE.note(conn)
        except psycopg.OperationalError as exc:
            raise Unavailable(f"the database is unavailable ({type(exc).__name__}); retry") from exc

    def close(self) -> None:
        if self._owns_pool:
            self.pool.close()

    # ------------------------------------------------------------ sites
    def create_site(self, site: Site) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    f"INSERT INTO sites({SITE_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    (site.site_id, site.name, site.version, site.state_digest, site.person_count,
                     site.config_sealed, site.config_hash, site.created_at))
                conn.execute("INSERT INTO changes(site_id, version, person_id) VALUES (%s,%s,%s)",
                             (site.site_id, site.version, CONFIG_ROW))
                conn.execute(f"INSERT INTO site_versions({VERSION_COLS}) VALUES (%s,%s,%s,%s,%s)",
                             (site.site_id, site.version, site.state_digest, site.person_count,
                              site.created_at))
        except pg_errors.UniqueViolation:
            raise Conflict(f"a site named {site.name!r} already exists") from None

    def get_site(self, name_or_id: str) -> Site:
        # Inside an operator change the site row is locked from this read on, as SQLite's
        # write transaction locks the file: a change computed from what it read (a config
        # edit) cannot be overwritten by another replica's change computed from the same.
        lock = " FOR UPDATE" if self._in_change() else ""
        row = self._one(f"SELECT {SITE_COLS} FROM sites WHERE site_id = %s OR name = %s{lock}",
                        (name_or_id, name_or_id))
        if row is None:
            raise NotFound(f"no site {name_or_id!r}")
        return site_of(row)

    def list_sites(self) -> list[Site]:
        return [site_of(r) for r in self._all(f"SELECT {SITE_COLS} FROM sites ORDER BY name")]

    def site_versions(self) -> dict[str, int]:
        return dict(self._all("SELECT site_id, version FROM sites"))  # type: ignore[arg-type]

    def list_persons(self, site_id: str) -> list[PersonRow]:
        return [person_of(r) for r in self._all(
            f"SELECT {PERSON_COLS} FROM persons WHERE site_id = %s ORDER BY person_id", (site_id,))]

    def get_person(self, person_id: str) -> PersonRow:
        with self._conn() as conn:
            if self._in_change():
                # An update is computed from this read: lock the person's site first (the row
                # every writer of the site locks), then read the person as committed by then,
                # so a change on another replica cannot be overwritten with the older record.
                site = conn.execute("SELECT site_id FROM persons WHERE person_id = %s",
                                    (person_id,)).fetchone()
                if site is not None:
                    conn.execute("SELECT 1 FROM sites WHERE site_id = %s FOR UPDATE", (site[0],))
            row = conn.execute(f"SELECT {PERSON_COLS} FROM persons WHERE person_id = %s",
                               (person_id,)).fetchone()
        if row is None:
            raise NotFound(f"no person {person_id!r}")
        return person_of(row)

    def person_site(self, person_id: str) -> str:
        row = self._one("SELECT site_id FROM persons WHERE person_id = %s", (person_id,))
        if row is None:
            raise NotFound(f"no person {person_id!r}")
        return str(row[0])

    def apply_changes(self, site_id: str, changes: ChangeSet, now: int) -> Site:
        with self._write() as conn:
            # The row lock taken here orders every writer of this site, on every replica.
            row = conn.execute(
                "UPDATE sites SET version = version + 1 WHERE site_id = %s"
                " RETURNING version, config_sealed, config_hash", (site_id,)).fetchone()
            if row is None:
                raise NotFound(f"no site {site_id!r}")
            version, config_sealed, config_hash = row[0], bytes(row[1]), bytes(row[2])
            for pid in changes.removes:
                cur = conn.execute("DELETE FROM persons WHERE site_id = %s AND person_id = %s",
                                   (site_id, pid))
                if cur.rowcount != 1:
                    raise NotFound(f"no person {pid!r} in this site")
                conn.execute("DELETE FROM credentials WHERE person_id = %s", (pid,))
                conn.execute("INSERT INTO changes VALUES (%s,%s,%s)", (site_id, version, pid))
            for p in changes.upserts:  # first, so credentials may move between them
                conn.execute("DELETE FROM credentials WHERE person_id = %s", (p.person_id,))
            for p in changes.upserts:
                conn.execute(
                    "INSERT INTO persons(person_id, site_id, name_sealed, record_sealed, record_hash,"
                    " updated_version) VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT(person_id) DO UPDATE SET"
                    " name_sealed = excluded.name_sealed, record_sealed = excluded.record_sealed,"
                    " record_hash = excluded.record_hash, updated_version = excluded.updated_version"
                    " WHERE persons.site_id = excluded.site_id",
                    (p.person_id, site_id, p.name_sealed, p.record_sealed, p.record_hash, version))
                conn.execute("INSERT INTO changes VALUES (%s,%s,%s)", (site_id, version, p.person_id))
                for kind, cred_hash in p.credentials:
                    held = conn.execute(
                        "INSERT INTO credentials VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                        (site_id, kind, cred_hash, p.person_id)).rowcount
                    if held != 1:
                        what = "PIN" if kind == "pin" else "card"
                        raise Conflict(f"that {what} belongs to another person of this site")
            if changes.config_sealed is not None and changes.config_hash is not None:
                config_sealed, config_hash = changes.config_sealed, changes.config_hash
                conn.execute("INSERT INTO changes VALUES (%s,%s,%s)", (site_id, version, CONFIG_ROW))
            pairs = [(pid, bytes(h)) for pid, h in conn.execute(
                "SELECT person_id, record_hash FROM persons WHERE site_id = %s ORDER BY person_id",
                (site_id,))]
            state = digest.state_digest(config_hash, pairs)
            site = conn.execute(
                f"UPDATE sites SET state_digest = %s, person_count = %s, config_sealed = %s,"
                f" config_hash = %s WHERE site_id = %s RETURNING {SITE_COLS}",
                (state, len(pairs), config_sealed, config_hash, site_id)).fetchone()
            assert site is not None
            conn.execute(f"INSERT INTO site_versions({VERSION_COLS}) VALUES (%s,%s,%s,%s,%s)",
                         (site_id, version, state, len(pairs), now))
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, site_id))  # sent at commit only
            return site_of(site)

    @contextmanager
    def reading(self, site_id: str) -> Iterator[_View]:
        with self._conn() as conn, conn.transaction():
            if getattr(self._local, "conn", None) is None:  # its own transaction: one snapshot
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute(f"SELECT {SITE_COLS}, horizon FROM sites WHERE site_id = %s",
                               (site_id,)).fetchone()
            if row is None:
                raise NotFound(f"no site {site_id!r}")
            yield _View(conn, site_of(row), row[8], "%s")

    def compact(self, site_id: str, keep_after_version: int) -> int:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM changes WHERE site_id = %s AND version <= %s",
                               (site_id, keep_after_version))
            conn.execute("UPDATE sites SET horizon = GREATEST(horizon, %s) WHERE site_id = %s",
                         (keep_after_version, site_id))
            conn.execute("DELETE FROM door_versions WHERE version <= %s AND device_id IN"
                         " (SELECT device_id FROM devices WHERE site_id = %s)", (keep_after_version, site_id))
            return cur.rowcount

    # ------------------------------------------------------------ devices
    def create_device(self, device: Device, token: Token) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    f"INSERT INTO devices({DEVICE_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    device_values(device))
                conn.execute("INSERT INTO tokens VALUES (%s,%s,%s,%s,%s,%s)",
                             (token.token_id, token.site_id, token.device_id, token.secret_hash,
                              token.expires_at, token.used_at))
        except pg_errors.UniqueViolation:
            raise Conflict(f"a device named {device.name!r} already exists in this site") from None

    def get_device(self, device_id: str) -> Device:
        row = self._one(f"SELECT {DEVICE_COLS} FROM devices WHERE device_id = %s", (device_id,))
        if row is None:
            raise NotFound(f"no device {device_id!r}")
        return device_of(row)

    def list_devices(self, site_id: str | None = None) -> list[Device]:
        if site_id is None:
            rows = self._all(f"SELECT {DEVICE_COLS} FROM devices ORDER BY site_id, name")
        else:
            rows = self._all(f"SELECT {DEVICE_COLS} FROM devices WHERE site_id = %s ORDER BY name",
                             (site_id,))
        return [device_of(r) for r in rows]

    def device_keys(self, device_ids: Iterable[str]) -> dict[str, bytes | None]:
        rows = self._all("SELECT device_id, sign_public, revoked_at FROM devices WHERE device_id = ANY(%s)",
                         (list(device_ids),))
        return {r[0]: None if r[2] is not None or r[1] is None else bytes(r[1]) for r in rows}

    def get_token(self, token_id: str) -> Token:
        row = self._one("SELECT token_id, site_id, device_id, secret_hash, expires_at, used_at"
                        " FROM tokens WHERE token_id = %s", (token_id,))
        if row is None:
            raise NotFound("unknown token")
        return Token(row[0], row[1], row[2], bytes(row[3]), row[4], row[5])

    def bind_token_keys(self, token_id: str, sign_public: bytes, box_public: bytes, now: int) -> Device:
        with self._write() as conn:
            row = conn.execute(
                "SELECT device_id FROM tokens WHERE token_id = %s AND used_at IS NULL"
                " AND expires_at > %s FOR UPDATE", (token_id, now)).fetchone()
            if row is None:
                raise Conflict("token already used or expired")
            device = conn.execute(
                f"UPDATE devices SET sign_public = %s, box_public = %s WHERE device_id = %s"
                f" RETURNING {DEVICE_COLS}", (sign_public, box_public, row[0])).fetchone()
            assert device is not None
            return device_of(device)

    def _lock_tokens(self, conn: psycopg.Connection[Any], device_id: str) -> None:
        """The door's unused tokens, then its row: the order `bind_token_keys` and
        `complete_registration` lock them in, so a revoke racing a registration waits
        instead of deadlocking, and the registration then finds its token spent."""
        conn.execute("SELECT token_id FROM tokens WHERE device_id = %s AND used_at IS NULL"
                     " ORDER BY token_id FOR UPDATE", (device_id,))

    def revoke_device(self, device_id: str, now: int) -> Device:
        with self._write() as conn:
            self._lock_tokens(conn, device_id)
            row = conn.execute(f"UPDATE devices SET revoked_at = COALESCE(revoked_at, %s)"
                               f" WHERE device_id = %s RETURNING {DEVICE_COLS}", (now, device_id)).fetchone()
            if row is None:
                raise NotFound(f"no device {device_id!r}")
            conn.execute("UPDATE tokens SET used_at = %s WHERE device_id = %s AND used_at IS NULL",
                         (now, device_id))
            # A revoked door's stream ends on every replica too (at commit).
            self._notify_ended(conn, device_id, row[1])
            return device_of(row)

    def replace_device(self, device_id: str, token: Token) -> Device:
        with self._write() as conn:
            self._lock_tokens(conn, device_id)
            row = conn.execute(
                "UPDATE devices SET sign_public = NULL, box_public = NULL, registered_at = NULL,"
                f" revoked_at = NULL WHERE device_id = %s RETURNING {DEVICE_COLS}", (device_id,)).fetchone()
            if row is None:
                raise NotFound(f"no device {device_id!r}")
            conn.execute("UPDATE tokens SET used_at = expires_at WHERE device_id = %s AND used_at IS NULL",
                         (device_id,))
            conn.execute("INSERT INTO tokens VALUES (%s,%s,%s,%s,%s,%s)",
                         (token.token_id, token.site_id, token.device_id, token.secret_hash,
                          token.expires_at, token.used_at))
            self._notify_ended(conn, device_id, row[1])  # the old keys' streams end
            return device_of(row)

    @staticmethod
    def _notify_ended(conn: psycopg.Connection[Any], device_id: str, site_id: str) -> None:
        conn.execute("SELECT pg_notify(%s, %s), pg_notify(%s, %s)",
                     (DEVICE_CHANNEL, device_id, CHANNEL, site_id))

    def complete_registration(self, device_id: str, now: int) -> bool:
        with self._write() as conn:
            spent = conn.execute("UPDATE tokens SET used_at = %s WHERE device_id = %s AND used_at IS NULL",
                                 (now, device_id)).rowcount
            if spent == 1:
                conn.execute("UPDATE devices SET registered_at = %s WHERE device_id = %s", (now, device_id))
            row = conn.execute("SELECT registered_at FROM devices WHERE device_id = %s",
                               (device_id,)).fetchone()
            return row is not None and row[0] is not None

    # ------------------------------------------------------------ bundles
    @contextmanager
    def building(self, site_id: str) -> Iterator[None]:
        """A session advisory lock per site, across replicas (released by the server too if
        this replica dies holding it)."""
        with self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_BUILD_LOCK, site_id))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_BUILD_LOCK, site_id))

    def put_bundle(self, meta: BundleMeta, chunks: Iterable[bytes]) -> BundleMeta:
        with self._write() as conn:
            inserted = conn.execute(
                f"INSERT INTO bundles({BUNDLE_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT (site_id, kind, from_version, to_version) DO NOTHING",
                bundle_values(meta)).rowcount
            if inserted != 1:  # another replica (or thread) stored it first: serve that one
                row = conn.execute(
                    f"SELECT {BUNDLE_COLS} FROM bundles WHERE site_id = %s AND kind = %s"
                    " AND from_version = %s AND to_version = %s",
                    (meta.site_id, meta.kind, meta.from_version, meta.to_version)).fetchone()
                assert row is not None
                return bundle_of(row)
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO bundle_chunks(bundle_id, idx, data) VALUES (%s,%s,%s)",
                                ((meta.bundle_id, i, data) for i, data in enumerate(chunks)))
        return meta

    def find_bundle(self, site_id: str, kind: int, from_version: int, to_version: int) -> BundleMeta | None:
        row = self._one(f"SELECT {BUNDLE_COLS} FROM bundles WHERE site_id = %s AND kind = %s"
                        " AND from_version = %s AND to_version = %s",
                        (site_id, kind, from_version, to_version))
        return bundle_of(row) if row else None

    def find_bundle_by_hash(self, site_id: str, ciphertext_sha256: bytes) -> BundleMeta | None:
        row = self._one(f"SELECT {BUNDLE_COLS} FROM bundles WHERE site_id = %s"
                        " AND ciphertext_sha256 = %s", (site_id, ciphertext_sha256))
        return bundle_of(row) if row else None

    def read_chunk(self, bundle_id: str, index: int) -> bytes:
        row = self._one("SELECT data FROM bundle_chunks WHERE bundle_id = %s AND idx = %s",
                        (bundle_id, index))
        if row is None:
            raise NotFound(f"bundle {bundle_id} has no chunk {index} (pruned?)")
        return bytes(row[0])

    def prune_bundles(self, site_id: str, below_version: int) -> int:
        with self._write() as conn:
            # A staged rollout's base snapshot stays: held doors below the base fetch it.
            ids = [r[0] for r in conn.execute(
                "DELETE FROM bundles WHERE site_id = %s AND to_version < %s AND to_version NOT IN"
                " (SELECT base_version FROM rollouts WHERE site_id = %s AND state = 'staged')"
                " RETURNING bundle_id", (site_id, below_version, site_id))]
            if ids:
                conn.execute("DELETE FROM bundle_chunks WHERE bundle_id = ANY(%s)", (ids,))
            return len(ids)

    # ------------------------------------------------------------ auth
    def spend_nonce(self, principal: str, nonce: bytes, expires_at: float, now: float) -> bool:
        # One statement in autocommit (no BEGIN/COMMIT round trips); the purge of expired rows
        # runs by itself every NONCE_PURGE_S per replica (whichever replica runs it, it only
        # deletes what no replica can accept any more).
        if now >= self._nonces_purged_at + NONCE_PURGE_S:
            self._nonces_purged_at = now
            with self._conn() as conn:
                conn.execute("DELETE FROM nonces WHERE expires_at < %s", (now - NONCE_PURGE_SLACK_S,))
        with self._conn() as conn:
            return conn.execute("INSERT INTO nonces VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
                                (principal, nonce, expires_at)).rowcount == 1

    def add_operator(self, operator: Operator) -> None:
        try:
            with self._write() as conn:
                conn.execute(f"INSERT INTO operators({OPERATOR_COLS}) VALUES (%s,%s,%s,%s,%s,%s)",
                             operator_values(operator))
        except pg_errors.UniqueViolation:
            raise Conflict(f"operator key {operator.key_id} already exists") from None

    def get_operator(self, key_id: str) -> Operator:
        row = self._one(f"SELECT {OPERATOR_COLS} FROM operators WHERE key_id = %s", (key_id,))
        if row is None:
            raise NotFound(f"no operator key {key_id!r}")
        return operator_of(row)

    def list_operators(self) -> list[Operator]:
        with self._conn() as conn:
            if self._in_change():
                # An operator change decides from this list (a name taken, the last admin):
                # the same change on another replica waits until this one commits.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_OPERATORS_LOCK,))
            rows = conn.execute(f"SELECT {OPERATOR_COLS} FROM operators ORDER BY created_at, name").fetchall()
        return [operator_of(r) for r in rows]

    def revoke_operator(self, key_id: str, now: int) -> Operator:
        with self._write() as conn:
            row = conn.execute(f"UPDATE operators SET revoked_at = COALESCE(revoked_at, %s)"
                               f" WHERE key_id = %s RETURNING {OPERATOR_COLS}", (now, key_id)).fetchone()
        if row is None:
            raise NotFound(f"no operator key {key_id!r}")
        return operator_of(row)

    # ------------------------------------------------------------ rollouts
    def _stage(self, conn: psycopg.Connection[Any], rollout_id: str, site_id: str, now: int) -> None:
        """Take the base of a rollout from the site as it is in this transaction (the site row
        is locked first: a change committing on another replica is either in it or after it)."""
        site = conn.execute(f"SELECT {SITE_COLS} FROM sites WHERE site_id = %s FOR UPDATE",
                            (site_id,)).fetchone()
        if site is None:
            raise NotFound(f"no site {site_id!r}")
        conn.execute(
            "UPDATE rollouts SET state = 'staged', started_at = %s, stage_started_at = %s,"
            " base_version = %s, base_digest = %s, base_person_count = %s, base_config_sealed = %s,"
            " base_config_hash = %s, audit_from = (SELECT COALESCE(MAX(id), 0) FROM audit),"
            " scheduled_at = 0, scheduled_action = '' WHERE rollout_id = %s",
            (now, now, site[2], site[3], site[4], site[5], site[6], rollout_id))
        conn.execute(BASE_PERSONS_COPY.format(p="%s"), (rollout_id, site_id))  # type: ignore[arg-type]
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, site_id))

    def _rollout(self, conn: psycopg.Connection[Any], rollout_id: str) -> Rollout:
        return rollout_of(conn.execute(f"SELECT {ROLLOUT_COLS} FROM rollouts WHERE rollout_id = %s",
                                       (rollout_id,)).fetchone())

    def start_rollout(self, rollout: Rollout) -> Rollout:
        try:
            with self._write() as conn:
                conn.execute(f"INSERT INTO rollouts({ROLLOUT_COLS}) VALUES ({','.join(['%s'] * 23)})",
                             rollout_values(rollout))
                if rollout.state == "staged":
                    self._stage(conn, rollout.rollout_id, rollout.site_id, rollout.created_at)
                return self._rollout(conn, rollout.rollout_id)
        except pg_errors.UniqueViolation:
            raise Conflict("this site already has an open rollout (abort or promote it first)") from None

    def stage_rollout(self, rollout_id: str, expect_rev: int, now: int) -> Rollout | None:
        with self._write() as conn:
            row = conn.execute("UPDATE rollouts SET rev = rev + 1 WHERE rollout_id = %s AND rev = %s"
                               " AND state = 'scheduled' RETURNING site_id",
                               (rollout_id, expect_rev)).fetchone()
            if row is None:
                return None
            self._stage(conn, rollout_id, row[0], now)
            return self._rollout(conn, rollout_id)

    def update_rollout(self, rollout: Rollout, expect_rev: int) -> bool:
        sets = ", ".join(f"{c} = %s" for c in ROLLOUT_MUTABLE)
        with self._write() as conn:
            # The row lock orders replicas: the second finds the rev moved and changes nothing.
            done = conn.execute(f"UPDATE rollouts SET {sets}, rev = rev + 1 WHERE rollout_id = %s"  # type: ignore[arg-type]
                                " AND rev = %s", (*rollout_update_values(rollout), rollout.rollout_id,
                                                  expect_rev)).rowcount == 1
            if done:
                if rollout.state not in ROLLOUT_OPEN:  # its base is no longer served
                    conn.execute("DELETE FROM rollout_persons WHERE rollout_id = %s", (rollout.rollout_id,))
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, rollout.site_id))  # targets moved
            return done

    def site_and_rollout(self, site_id: str) -> tuple[Site, Rollout | None]:
        with self._conn() as conn, conn.transaction():
            if not self._in_change():  # its own transaction: one snapshot for both reads
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute(f"SELECT {SITE_COLS} FROM sites WHERE site_id = %s OR name = %s",
                               (site_id, site_id)).fetchone()
            if row is None:
                raise NotFound(f"no site {site_id!r}")
            return site_of(row), self._latest_rollout(conn, row[0])

    def _latest_rollout(self, conn: psycopg.Connection[Any], site_id: str) -> Rollout | None:
        row = conn.execute(f"SELECT {ROLLOUT_COLS} FROM rollouts WHERE site_id = %s"
                           f" ORDER BY state IN {OPEN_STATES} DESC, created_at DESC LIMIT 1",
                           (site_id,)).fetchone()
        return rollout_of(row) if row else None

    def get_rollout(self, site_id: str) -> Rollout | None:
        with self._conn() as conn:
            return self._latest_rollout(conn, site_id)

    def open_rollouts(self) -> list[Rollout]:
        return [rollout_of(r) for r in self._all(
            f"SELECT {ROLLOUT_COLS} FROM rollouts WHERE state IN {OPEN_STATES} ORDER BY created_at")]

    def rollout_persons(self, rollout_id: str) -> list[BasePerson]:
        return [base_person_of(r) for r in self._all(
            f"SELECT {BASE_PERSON_COLS} FROM rollout_persons WHERE rollout_id = %s"
            " ORDER BY person_id COLLATE \"C\"", (rollout_id,))]

    # ------------------------------------------------------------ fleet and audit
    def record_report(self, report: DeviceReport) -> None:
        # One statement, so one round trip and atomic without BEGIN/COMMIT: the latest report,
        # the first report of its version, and the decision hours as arrays (any number of
        # hours, one INSERT). Hours older than kept are deleted; `checked_rows` keeps none of
        # those, so the upsert and the delete never touch one row.
        columns = list(zip(*report.decisions, strict=True)) if report.decisions else \
            [() for _ in range(1 + len(DECISION_COUNTERS))]
        with self._conn() as conn:
            conn.execute(_RECORD_REPORT, (
                *report_values(report), report.device_id, report.version, report.reported_at,
                report.device_id, *(list(c) for c in columns),
                report.device_id, report.reported_at - DECISION_KEEP_S))

    def latest_report(self, device_id: str) -> DeviceReport | None:
        row = self._one(f"SELECT {REPORT_COLS} FROM reports WHERE device_id = %s", (device_id,))
        return report_of(row) if row else None

    def latest_reports(self, site_id: str) -> dict[str, DeviceReport]:
        return {r.device_id: r for r in map(report_of, self._all(SITE_REPORTS.format(mark="%s"), (site_id,)))}

    def decision_rows(self, device_ids: Sequence[str], since: int, until: int
                      ) -> list[tuple[str, DecisionRow]]:
        rows = self._all(
            f"SELECT device_id, {DECISION_COLS} FROM decision_hours WHERE device_id = ANY(%s)"
            " AND hour >= %s AND hour < %s ORDER BY device_id, hour", (list(device_ids), since, until))
        return [(r[0], tuple(r[1:])) for r in rows]

    def door_versions(self, device_ids: Sequence[str], min_version: int) -> list[tuple[str, int, int]]:
        rows = self._all(
            "SELECT device_id, version, first_seen_at FROM door_versions WHERE device_id = ANY(%s)"
            " AND version >= %s ORDER BY device_id, version", (list(device_ids), min_version))
        return [(r[0], r[1], r[2]) for r in rows]

    def version_rows(self, site_id: str, limit: int) -> list[VersionRow]:
        return [version_of(r) for r in self._all(
            f"SELECT {VERSION_COLS} FROM site_versions WHERE site_id = %s ORDER BY version DESC LIMIT %s",
            (site_id, limit))]

    def version_row(self, site_id: str, version: int) -> VersionRow | None:
        row = self._one(f"SELECT {VERSION_COLS} FROM site_versions WHERE site_id = %s AND version = %s",
                        (site_id, version))
        return version_of(row) if row else None

    def audit(self, entry: AuditEntry) -> None:
        with self._write() as conn:
            # Held to the end of the enclosing transaction, like `last_audit`'s inside atomic().
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_AUDIT_LOCK,))
            seq = entry.seq
            if not seq:  # an entry from outside the chain: the next free position
                seq = conn.execute("SELECT COALESCE(max(id), 0) + 1 FROM audit").fetchone()[0]  # type: ignore[index]
            conn.execute(f"INSERT INTO audit({AUDIT_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                         audit_values(seq, entry))

    def last_audit(self) -> AuditEntry | None:
        with self._conn() as conn:
            if self._in_change():
                # Inside an operator change: the chain is extended from what this reads, so a
                # change on another replica waits here until this one commits, then reads the
                # entry it appended (SQLite gets the same from its single writer). Without it
                # two replicas would chain off the same entry.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_AUDIT_LOCK,))
            row = conn.execute(f"SELECT {AUDIT_COLS} FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        return audit_of(row) if row is not None else None

    def audit_page(self, after_seq: int, limit: int) -> list[AuditEntry]:
        return [audit_of(r) for r in self._all(
            f"SELECT {AUDIT_COLS} FROM audit WHERE id > %s ORDER BY id LIMIT %s", (after_seq, limit))]

    def list_audit(self, limit: int = 100) -> list[AuditEntry]:
        return [audit_of(r) for r in self._all(
            f"SELECT {AUDIT_COLS} FROM audit ORDER BY id DESC LIMIT %s", (limit,))]

    def recall_call(self, principal: str, request_id: str) -> CallRecord | None:
        with self._conn() as conn:
            if self._in_change():
                # Inside an operator change: the same request id retried through another
                # replica waits here until this transaction ends, then finds its answer.
                conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                             (_REQUEST_LOCK, f"{principal} {request_id}"))
            row = conn.execute("SELECT method, request_hash, response_sealed FROM requests"
                               " WHERE principal = %s AND request_id = %s",
                               (principal, request_id)).fetchone()
        return CallRecord(row[0], bytes(row[1]), bytes(row[2])) if row else None

    def remember_call(self, principal: str, request_id: str, record: CallRecord, now: int) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM requests WHERE at < %s", (now - CALL_MEMORY_S,))
            conn.execute("INSERT INTO requests VALUES (%s,%s,%s,%s,%s,%s)",
                         (principal, request_id, record.method, record.request_hash,
                          record.response_sealed, now))


class PgLogStore(SqlLogStore):
    """`LogStore` on the replicas' PostgreSQL database (the `log_*` tables). The device's
    row lock taken when its watermark is read orders two replicas ingesting one device."""

    MARK = "%s"
    LOCK_ROW = " FOR UPDATE"
    NULL_TEXT = "%s::text"

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        with pool.connection() as conn:
            self.schema_version = migrate(conn, ["logs"])["logs"]

    def close(self) -> None:
        """The pool belongs to the hub store."""

    @contextmanager
    def _tx(self) -> Iterator[Executes]:
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Executes]:
        with self.pool.connection() as conn:
            yield conn


class PgChangeListener:
    """Wakes this replica's watch streams when any replica commits a site change.

    One dedicated autocommit connection (not from the pool, never through a pooler in
    transaction mode: LISTEN belongs to a session) runs LISTEN in a thread. A notification
    is a hint only: after every (re)connect and every `reconcile_s` the listener compares
    every site's version with what it last saw and wakes the sites that moved, so a lost
    notification (a dropped connection, a restarted server) delays a door by at most that.
    """

    def __init__(self, url: str, versions: Callable[[], dict[str, int]], wake: Callable[[str], None],
                 reconcile_s: float = 30.0, retry_s: float = 1.0,
                 end: Callable[[str], None] | None = None,
                 check_devices: Callable[[], int] | None = None) -> None:
        """``end(device_id)``: a door was revoked or replaced (its streams end);
        ``check_devices()``: run with every reconcile, ends the streams of doors whose
        revocation this replica missed (`SiteNotifier.end_stale`)."""
        self.url = url
        self.versions = versions
        self.wake = wake
        self.end = end
        self.check_devices = check_devices
        self.reconcile_s = reconcile_s
        self.retry_s = retry_s
        self.backend_pid: int | None = None  # of the LISTEN session (tests terminate it)
        self.connects = 0
        self.reconciles = 0
        self._seen: dict[str, int] = {}  # empty at first: the first reconcile wakes every site
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="doorkeeper-listen", daemon=True)

    def start(self) -> PgChangeListener:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def reconcile(self) -> list[str]:
        """Wake every site whose version moved since the last look; the ones woken."""
        now = self.versions()
        moved = [site for site, version in now.items() if self._seen.get(site) != version]
        self._seen = now
        self.reconciles += 1
        for site in moved:
            self.wake(site)
        if self.check_devices is not None:
            self.check_devices()
        return moved

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # a lost session or server: reconnect; reconcile covers the gap
                log.warning("LISTEN connection lost (%s); reconnecting in %.0f s", exc, self.retry_s)
            self.backend_pid = None
            self._stop.wait(self.retry_s)

    def _listen(self) -> None:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            if self.end is not None:
                conn.execute(f"LISTEN {DEVICE_CHANNEL}")
            conn.execute(f"LISTEN {CHANNEL}")
            self.backend_pid = conn.info.backend_pid
            self.connects += 1
            self.reconcile()  # whatever was missed while no session listened
            due = time.monotonic() + self.reconcile_s
            while not self._stop.is_set():
                for note in conn.notifies(timeout=min(1.0, max(0.0, due - time.monotonic()))):
                    if note.channel == DEVICE_CHANNEL and self.end is not None:
                        self.end(note.payload)
                    else:
                        self.wake(note.payload)
                if time.monotonic() >= due:
                    self.reconcile()
                    due = time.monotonic() + self.reconcile_s
