"""Forward-only schema migrations, recorded per component in a `schema_version` table.

Each backend lists its migrations as `(version, sql)` per component ("hub", "logs"); a
store applies the missing ones when it opens (and `doorkeeper hub migrate` does so on its
own). A database written by a newer hub (a version this code does not know) is refused
rather than guessed at. Version 1 is the schema of the hubs before versioning, written
with `IF NOT EXISTS`, so such a database is recorded as version 1 without change.
"""

from __future__ import annotations

from collections.abc import Sequence

Migration = tuple[int, str]


class SchemaTooNew(Exception):
    """The database was migrated by a newer hub."""


def pending(component: str, current: int, migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations still to apply after `current`, in order; refuses a version from the future."""
    latest = migrations[-1][0]
    if current > latest:
        raise SchemaTooNew(f"the database's {component} schema is version {current}, newer than this "
                           f"hub knows ({latest}); run the newer hub (migrations are forward-only)")
    return [m for m in migrations if m[0] > current]


def latest(migrations: Sequence[Migration]) -> int:
    return migrations[-1][0]


# Schema 5 (both backends, column types filled in per dialect): staged rollouts.
ROLLOUTS_V5 = """
CREATE TABLE IF NOT EXISTS rollouts(
  rollout_id TEXT PRIMARY KEY, site_id TEXT NOT NULL, state TEXT NOT NULL,
  created_at {int} NOT NULL, principal TEXT NOT NULL, rev {int} NOT NULL,
  started_at {int} NOT NULL, stage_started_at {int} NOT NULL, base_version {int} NOT NULL,
  base_digest {blob} NOT NULL, base_person_count {int} NOT NULL, base_config_sealed {blob} NOT NULL,
  base_config_hash {blob} NOT NULL, audit_from {int} NOT NULL, auto_stop TEXT NOT NULL,
  stop_reason TEXT NOT NULL, stage TEXT NOT NULL, scheduled_at {int} NOT NULL,
  scheduled_action TEXT NOT NULL, scheduled_doors TEXT NOT NULL, scheduled_percent {int} NOT NULL,
  closed_at {int} NOT NULL, closed_version {int} NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS rollouts_one_open ON rollouts(site_id)
  WHERE state IN ('scheduled', 'staged', 'promoting');
CREATE INDEX IF NOT EXISTS rollouts_by_site ON rollouts(site_id, created_at);
CREATE TABLE IF NOT EXISTS rollout_persons(
  rollout_id TEXT NOT NULL, person_id TEXT NOT NULL, name_sealed {blob} NOT NULL,
  record_sealed {blob} NOT NULL, record_hash {blob} NOT NULL, PRIMARY KEY(rollout_id, person_id));
"""
