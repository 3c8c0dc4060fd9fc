"""Moving a single hub from SQLite to PostgreSQL (`doorkeeper hub migrate --from --to`).

Copies every row of the hub's `hub.db` (and `logs.db` beside it) into an empty PostgreSQL
database migrated to this version, in one PostgreSQL transaction from one SQLite read
snapshot: all of it lands or none. Device ids, keys, tokens, versions and digests are
copied as they are, so doors keep syncing without registering again (the hub keys stay in
the data directory, which the replicas are then given). Built bundles are a cache and are
not copied: the first fetch builds them again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from doorkeeper.hub.logstore import SqliteLogStore
from doorkeeper.hub.pg_store import is_postgres_url, migrate, open_pool, redact
from doorkeeper.hub.sqlite_store import SqliteHubStore

HUB_TABLES = ("sites", "persons", "credentials", "changes", "devices", "tokens", "nonces",
              "operators", "reports", "audit", "requests", "site_versions", "door_versions",
              "decision_hours")
LOG_TABLES = ("log_devices", "log_batches", "log_gaps")


class CopyError(Exception):
    pass


def copy_sqlite_to_pg(hub_db: Path, url: str) -> dict[str, int]:
    """Copy; returns rows per table. Refuses a target that already holds a hub."""
    if not is_postgres_url(url):
        raise CopyError("--to must be a postgresql:// URL")
    hub_db = Path(hub_db)
    SqliteHubStore(hub_db).close()  # bring the source to this version's schema first
    logs_db = hub_db.parent / "logs.db"
    sources: list[tuple[Path, tuple[str, ...]]] = [(hub_db, HUB_TABLES)]
    if logs_db.exists():
        SqliteLogStore(logs_db).close()
        sources.append((logs_db, LOG_TABLES))
    pool = open_pool(url, max_size=1)
    counts: dict[str, int] = {}
    try:
        with pool.connection() as conn:
            migrate(conn)
            with conn.transaction():
                for table in HUB_TABLES + LOG_TABLES:
                    if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                        raise CopyError(f"{redact(url)} already holds hub data ({table}); give an "
                                        "empty database")
                for path, tables in sources:
                    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
                    try:
                        src.execute("BEGIN")  # one snapshot of the whole file
                        for table in tables:
                            cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
                            names = ", ".join(cols)
                            n = 0
                            with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                                for row in src.execute(f"SELECT {names} FROM {table}"):
                                    copy.write_row(row)
                                    n += 1
                            counts[table] = n
                        src.execute("COMMIT")
                    finally:
                        src.close()
                # New audit rows continue after the copied ones.
                conn.execute("SELECT setval(pg_get_serial_sequence('audit', 'id'),"
                             " COALESCE((SELECT max(id) FROM audit), 0) + 1, false)")
    finally:
        pool.close()
    return counts
