"""What the SQL backends of `HubStore` share: column lists, rows to dataclasses, and the
consistent site view. Each backend keeps only its SQL dialect and transactions, so a new
store method is one SQL function per backend (plus one contract test).

Rows are read by position (sqlite3.Row and psycopg tuples both index), in the order of the
column lists here. `View` takes the backend's parameter marker ("?" or "%s").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from doorkeeper.hub.store import (
    DECISION_COUNTERS,
    ROLLOUT_OPEN,
    AuditEntry,
    BasePerson,
    BundleMeta,
    Changed,
    Device,
    DeviceReport,
    Operator,
    PersonRow,
    Rollout,
    Site,
    VersionRow,
)

CALL_MEMORY_S = 7 * 24 * 3600  # how long a request id is answered with its first result
CONFIG_ROW = ""  # the changes-table person_id that marks a site-config change
SITE_COLS = "site_id, name, version, state_digest, person_count, config_sealed, config_hash, created_at"
DEVICE_COLS = "device_id, site_id, name, created_at, sign_public, box_public, registered_at, revoked_at"
PERSON_COLS = "person_id, site_id, name_sealed, record_sealed, updated_version"
OPERATOR_COLS = "key_id, public_key, role, name, created_at, revoked_at"
AUDIT_COLS = "id, at, principal, action, detail, prev_hash, entry_hash, key_id, signature"
BUNDLE_COLS = (
    "bundle_id, site_id, kind, from_version, to_version, ciphertext_sha256, chunk_sha256,"
    " chunk_length, content_key_sealed, state_digest, person_count, created_at"
)
REPORT_COLS = (
    "device_id, version, state_digest, person_count, reported_at, device_time, manifest,"
    " signature, stale, last_error, outbox_backlog, outbox_dropped"
)

# The latest report of every door of a site (one parameter: the site id).
SITE_REPORTS = (
    "SELECT " + ", ".join(f"r.{c.strip()}" for c in REPORT_COLS.split(",")) +
    " FROM reports r JOIN devices d ON d.device_id = r.device_id WHERE d.site_id = {mark}"
)
# How often a store deletes expired call nonces (on a spend, at most this often), and how long
# past their expiry by this replica's clock: a replica whose clock runs ahead must not delete a
# row another replica still accepts (that would reopen a replay window).
NONCE_PURGE_S = 10.0
NONCE_PURGE_SLACK_S = 300.0

ROLLOUT_COLS = (
    "rollout_id, site_id, state, created_at, principal, rev, started_at, stage_started_at,"
    " base_version, base_digest, base_person_count, base_config_sealed, base_config_hash,"
    " audit_from, auto_stop, stop_reason, stage, scheduled_at, scheduled_action, scheduled_doors,"
    " scheduled_percent, closed_at, closed_version"
)
# The columns `update_rollout` writes, in `rollout_update_values` order.
ROLLOUT_MUTABLE = ("state", "stage_started_at", "stop_reason", "stage", "scheduled_at",
                   "scheduled_action", "scheduled_doors", "scheduled_percent", "closed_at",
                   "closed_version")
OPEN_STATES = "(" + ",".join(f"'{s}'" for s in ROLLOUT_OPEN) + ")"
# Base snapshot of a rollout, copied from the site's persons in the starting transaction.
BASE_PERSONS_COPY = (
    "INSERT INTO rollout_persons(rollout_id, person_id, name_sealed, record_sealed, record_hash)"
    " SELECT {p}, person_id, name_sealed, record_sealed, record_hash FROM persons WHERE site_id = {p}")
BASE_PERSON_COLS = "person_id, name_sealed, record_sealed, record_hash"


def _ids(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


def rollout_of(row: Any) -> Rollout:
    return Rollout(
        rollout_id=row[0], site_id=row[1], state=row[2], created_at=row[3], principal=row[4],
        rev=row[5], started_at=row[6], stage_started_at=row[7], base_version=row[8],
        base_digest=bytes(row[9]), base_person_count=row[10], base_config_sealed=bytes(row[11]),
        base_config_hash=bytes(row[12]), audit_from=row[13], auto_stop=row[14], stop_reason=row[15],
        stage=_ids(row[16]), scheduled_at=row[17], scheduled_action=row[18],
        scheduled_doors=_ids(row[19]), scheduled_percent=row[20], closed_at=row[21],
        closed_version=row[22])


def rollout_values(r: Rollout) -> tuple[Any, ...]:
    """In ROLLOUT_COLS order."""
    return (r.rollout_id, r.site_id, r.state, r.created_at, r.principal, r.rev, r.started_at,
            r.stage_started_at, r.base_version, r.base_digest, r.base_person_count,
            r.base_config_sealed, r.base_config_hash, r.audit_from, r.auto_stop, r.stop_reason,
            ",".join(r.stage), r.scheduled_at, r.scheduled_action, ",".join(r.scheduled_doors),
            r.scheduled_percent, r.closed_at, r.closed_version)


def rollout_update_values(r: Rollout) -> tuple[Any, ...]:
    """In ROLLOUT_MUTABLE order."""
    return (r.state, r.stage_started_at, r.stop_reason, ",".join(r.stage), r.scheduled_at,
            r.scheduled_action, ",".join(r.scheduled_doors), r.scheduled_percent, r.closed_at,
            r.closed_version)


def base_person_of(row: Any) -> BasePerson:
    return BasePerson(row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]))


DECISION_COLS = ", ".join(("hour", *DECISION_COUNTERS))
VERSION_COLS = "site_id, version, state_digest, person_count, made_at"


def decision_upsert(ph: str, greatest: str) -> str:
    """An hour's counters: inserted, or each raised to the larger of stored and sent."""
    raised = ", ".join(f"{c} = {greatest}(decision_hours.{c}, excluded.{c})" for c in DECISION_COUNTERS)
    marks = ",".join([ph] * (2 + len(DECISION_COUNTERS)))
    return (f"INSERT INTO decision_hours(device_id, {DECISION_COLS}) VALUES ({marks})"
            f" ON CONFLICT(device_id, hour) DO UPDATE SET {raised}")


def version_of(row: Any) -> VersionRow:
    return VersionRow(row[0], row[1], bytes(row[2]), row[3], row[4])


def in_list(ph: str, n: int) -> str:
    return "(" + ",".join([ph] * n) + ")"


class Executes(Protocol):
    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


def _opt(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None


def site_of(row: Any) -> Site:
    return Site(row[0], row[1], row[2], bytes(row[3]), row[4], bytes(row[5]), bytes(row[6]), row[7])


def device_of(row: Any) -> Device:
    return Device(row[0], row[1], row[2], row[3], _opt(row[4]), _opt(row[5]), row[6], row[7])


def device_values(d: Device) -> tuple[Any, ...]:
    return (d.device_id, d.site_id, d.name, d.created_at, d.sign_public, d.box_public,
            d.registered_at, d.revoked_at)


def person_of(row: Any) -> PersonRow:
    return PersonRow(row[0], row[1], bytes(row[2]), bytes(row[3]), row[4])


def operator_of(row: Any) -> Operator:
    return Operator(row[0], bytes(row[1]), row[2], row[3], row[4], row[5])


def operator_values(o: Operator) -> tuple[Any, ...]:
    return (o.key_id, o.public_key, o.role, o.name, o.created_at, o.revoked_at)


def audit_of(row: Any) -> AuditEntry:
    return AuditEntry(at=row[1], principal=row[2], action=row[3], detail=row[4], seq=row[0],
                      prev_hash=bytes(row[5]), entry_hash=bytes(row[6]), key_id=row[7],
                      signature=bytes(row[8]))


def audit_values(seq: int | None, e: AuditEntry) -> tuple[Any, ...]:
    """In AUDIT_COLS order, stored at position `seq`."""
    return (seq, e.at, e.principal, e.action, e.detail, e.prev_hash, e.entry_hash, e.key_id,
            e.signature)


def bundle_of(row: Any) -> BundleMeta:
    hashes = bytes(row[6])
    return BundleMeta(
        bundle_id=row[0], site_id=row[1], kind=row[2], from_version=row[3], to_version=row[4],
        ciphertext_sha256=bytes(row[5]),
        chunk_sha256=tuple(hashes[i : i + 32] for i in range(0, len(hashes), 32)),
        chunk_length=tuple(int(x) for x in row[7].split(",") if x),
        content_key_sealed=bytes(row[8]), state_digest=bytes(row[9]), person_count=row[10],
        created_at=row[11],
    )


def bundle_values(meta: BundleMeta) -> tuple[Any, ...]:
    return (meta.bundle_id, meta.site_id, meta.kind, meta.from_version, meta.to_version,
            meta.ciphertext_sha256, b"".join(meta.chunk_sha256),
            ",".join(str(n) for n in meta.chunk_length), meta.content_key_sealed,
            meta.state_digest, meta.person_count, meta.created_at)


def report_of(row: Any) -> DeviceReport:
    return DeviceReport(row[0], row[1], bytes(row[2]), row[3], row[4], row[5], bytes(row[6]),
                        bytes(row[7]), bool(row[8]), row[9], row[10], row[11])


def report_values(r: DeviceReport) -> tuple[Any, ...]:
    return (r.device_id, r.version, r.state_digest, r.person_count, r.reported_at, r.device_time,
            r.manifest, r.signature, int(r.stale), r.last_error, r.outbox_backlog, r.outbox_dropped)


class View:
    """A `StateView` over one open read transaction of either backend."""

    def __init__(self, conn: Executes, site: Site, horizon: int, marker: str) -> None:
        self._conn = conn
        self.site = site
        self._horizon = horizon
        self._p = marker

    def _rows(self, sql: str, args: tuple[Any, ...]) -> Iterable[Any]:
        return self._conn.execute(sql, args)  # type: ignore[no-any-return]

    def changed_since(self, version: int) -> Changed | None:
        if version < self._horizon:
            return None
        p = self._p
        rows = self._conn.execute(
            f"SELECT DISTINCT person_id FROM changes WHERE site_id = {p} AND version > {p}"
            " ORDER BY person_id", (self.site.site_id, version))
        changed = Changed()
        for (pid,) in rows:
            if pid == CONFIG_ROW:
                changed.config = True
            else:
                changed.person_ids.append(pid)
        return changed

    def records(self, person_ids: Iterable[str] | None = None) -> Iterator[tuple[str, bytes | None]]:
        p = self._p
        if person_ids is None:
            for pid, rec in self._rows(f"SELECT person_id, record_sealed FROM persons WHERE site_id = {p}"
                                       " ORDER BY person_id", (self.site.site_id,)):
                yield pid, bytes(rec)
            return
        for pid in person_ids:
            row = self._conn.execute(
                f"SELECT record_sealed FROM persons WHERE site_id = {p} AND person_id = {p}",
                (self.site.site_id, pid)).fetchone()
            yield pid, (bytes(row[0]) if row else None)
