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
