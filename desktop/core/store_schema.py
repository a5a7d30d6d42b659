"""The job database's schema and its migrations, one SQLite transaction per step.

`MIGRATIONS[n]` upgrades a database at schema version n to n + 1 (0: an empty file); the
version lives in the `meta` table. `JobStore` runs `migrate` when it opens a file, so an older
file is upgraded in place and a file from a newer app is refused with a sentence saying so.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence

from desktop.core.errors import StoreError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "StoreDamagedError",
    "migrate",
    "quick_check",
    "schema_version",
]

log = logging.getLogger("desktop.core.store")


class StoreDamagedError(StoreError):
    """The job database failed SQLite's check, or is not a database at all: it can be rebuilt
    from the job folders (`desktop.core.repair.rebuild_store`, `finetune-desk repair`)."""


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    """The first layout: meta, jobs (snapshot + state + created_at), transitions, metrics."""
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute(
        "CREATE TABLE jobs ("
        " id TEXT PRIMARY KEY,"
        " snapshot TEXT NOT NULL,"
        " state TEXT NOT NULL,"
        " created_at REAL NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE transitions ("
        " id INTEGER PRIMARY KEY,"
        " job_id TEXT NOT NULL,"
        " old TEXT,"
        " new TEXT NOT NULL,"
        " time REAL NOT NULL,"
        " reason TEXT NOT NULL DEFAULT '')"
    )
    # value is nullable: SQLite stores a NaN as NULL, and a diverged run does log NaN losses.
    conn.execute(
        "CREATE TABLE metrics ("
        " job_id TEXT NOT NULL,"
        " step INTEGER NOT NULL,"
        " name TEXT NOT NULL,"
        " value REAL,"
        " time REAL NOT NULL,"
        " PRIMARY KEY (job_id, step, name)) WITHOUT ROWID"
    )


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Provider and name become columns (for the job list's filters) and get indexes."""
    conn.execute("ALTER TABLE jobs ADD COLUMN provider TEXT NOT NULL DEFAULT ''")
    conn.execute("ALTER TABLE jobs ADD COLUMN name TEXT NOT NULL DEFAULT ''")
    rows = conn.execute("SELECT id, snapshot FROM jobs").fetchall()
    for job_id, snapshot in rows:
        try:
            data = json.loads(snapshot)
        except ValueError:
            data = {}
        conn.execute(
            "UPDATE jobs SET provider = ?, name = ? WHERE id = ?",
            (str(data.get("provider", "")), str(data.get("name", "")), job_id),
        )
    conn.execute("CREATE INDEX jobs_state ON jobs (state)")
    conn.execute("CREATE INDEX jobs_created_at ON jobs (created_at)")
    conn.execute("CREATE INDEX jobs_provider ON jobs (provider)")
    conn.execute("CREATE INDEX transitions_job ON transitions (job_id, id)")


#: MIGRATIONS[n] upgrades a database at schema version n to n + 1 (0: an empty file).
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _migrate_0_to_1,
    _migrate_1_to_2,
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database (0 for an empty one)."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Upgrade the database to `target` (default: the newest), one step per transaction.

    Each step re-reads the version inside its write transaction, so two processes opening the
    same old file at once migrate it once. The connection must be in autocommit mode
    (`isolation_level=None`).

    Returns:
        The version the database is at afterwards.

    Raises:
        StoreError: the database was written by a newer version of the app.
    """
    target = SCHEMA_VERSION if target is None else target
    if schema_version(conn) == target:  # the usual case: no write lock needed
        return target
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = schema_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the job database has schema version {version}, newer than this app "
                    f"knows ({SCHEMA_VERSION}): update Finetune Desk, or point FTDESK_HOME "
                    "at another folder"
                )
            if version >= target:
                conn.execute("COMMIT")
                return version
            MIGRATIONS[version](conn)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(version + 1),),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("job database migrated to schema version %d", version + 1)


def quick_check(conn: sqlite3.Connection, tables: Sequence[str] = ()) -> str | None:
    """SQLite's `PRAGMA quick_check` (of the whole file, or of `tables` only): None when the
    file is sound, else its first finding."""
    pragmas = [f"PRAGMA quick_check({t})" for t in tables] or ["PRAGMA quick_check"]
    rows = [row for pragma in pragmas for row in conn.execute(pragma).fetchall()]
    findings = [line for row in rows for line in str(row[0]).splitlines() if line.strip()]
    if set(findings) == {"ok"}:
        return None
    first = next((f for f in findings if not f.startswith("***")), findings[0])
    return first.strip()
