"""The job store: jobs, their state transitions and their metrics in one SQLite file.

The file is `data_home()/ftdesk.sqlite3` (so `FTDESK_HOME` moves it). It runs in WAL mode with
`synchronous=NORMAL`: a commit survives the process being killed (kill -9), readers never wait
for the writer, and a GUI and a CLI (two processes) share the file; a writer that finds the
other one mid-transaction waits up to `busy_timeout_s` instead of failing with "database is
locked".

Tables (schema version in `meta`, upgraded by `MIGRATIONS` when an older file is opened):

- `jobs`: one row per job, the full `Job` snapshot as JSON plus the columns we filter and sort
  on (state, created_at, provider, name).
- `transitions`: every state change (job_id, old, new, time, reason).
- `metrics`: one value of one series at one step. The key is (job_id, step, name) and rows are
  written with INSERT OR REPLACE, so a resumed run that logs a step again keeps the newest value
  and counts nothing twice. The key is ordered by step, the order every reader wants and the
  order a run appends in.

`record_progress` commits metric points, the job snapshot (which carries how far
`events.jsonl` has been read) and an optional transition in ONE transaction: after a crash the
stored points are exactly those of the events before the stored offset, so a reader restarted
from that offset loses nothing and doubles nothing.

`points_from_events(job_id, events)` turns trainer events into MetricPoints without validating
the already-validated values again; with block inserts it keeps the ingest (read + convert +
store) near a bare json.loads + executemany loop (bench/ingest.py).

Threads: one connection, opened with `check_same_thread=False` and guarded by a lock, so the
asyncio loop and a worker thread may share one `JobStore`. Qt-free and torch-free.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, islice, repeat
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO, cast

from pydantic import BaseModel, ValidationError

from desktop.core.errors import FtdeskError, JobNotFoundError
from desktop.models import Job, JobState, MetricPoint, StateTransition, can_transition, data_home
from trainer.protocol import Event, MetricEvent

__all__ = [
    "DB_FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "JobStore",
    "StoreError",
    "migrate",
    "points_from_events",
    "schema_version",
]

log = logging.getLogger(__name__)

DB_FILENAME = "ftdesk.sqlite3"

# Series that come first in a CSV export, in this order; any other series follow by name.
_CSV_SERIES_ORDER = (
    "loss",
    "eval_loss",
    "learning_rate",
    "grad_norm",
    "epoch",
    "tokens_seen",
    "samples_per_second",
    "eta_seconds",
)


class StoreError(FtdeskError):
    """The job database cannot be used (locked too long, corrupt, or from a newer app)."""


# --------------------------------------------------------------------------------------------
# Schema and migrations


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


# --------------------------------------------------------------------------------------------
# Metric points


def _probe_series() -> tuple[str, ...] | None:
    """The series MetricEvent.values() reports, in its order: probed, so it stays the one
    source. None when the probe does not work (points then come from values() per event)."""
    optional = {
        name: 1
        for name, field in MetricEvent.model_fields.items()
        if name not in {"seq", "time", "kind", "step"} and not field.is_required()
    }
    try:
        probe = MetricEvent.model_validate({"seq": 0, "time": 0.0, "step": 0, **optional})
    except ValidationError:
        return None
    return tuple(probe.values())


_SERIES = _probe_series()
_point_row = attrgetter("job_id", "step", "name", "value", "time")
_point_job = attrgetter("job_id")
_consume = deque[object](maxlen=0).extend


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch of points is built.

    Every new point is a tracked object, so building thousands of them sets off collections
    that find nothing (points hold no cycles) yet cost ~40% of the building. Pausing for one
    batch (milliseconds) only postpones collection; whatever was enabled is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _construct_points(fields: list[dict[str, Any]]) -> list[MetricPoint]:
    """MetricPoints from field dicts that are already checked, the way `model_construct` does.

    The regular path: one `model_construct` per point.
    """
    construct = MetricPoint.model_construct
    return [construct(**f) for f in fields]


def _assemble_points(fields: list[dict[str, Any]]) -> list[MetricPoint]:
    """The same as `_construct_points`, ~3x faster: the four slots `model_construct` fills are
    filled here in C-level loops (map over builtins), not one Python call per point.

    Validating five plain fields would cost more than anything else on the ingest path (reading,
    storing), and the values come from validated events or our own database.
    """
    with _gc_paused():
        points: list[MetricPoint] = list(map(_new, repeat(MetricPoint, len(fields))))
        _consume(map(_setattr, points, repeat("__dict__"), fields))
        _consume(map(_set_fields_set, points, repeat(_ALL_FIELDS)))
        _consume(map(_set_extra, points, repeat(None)))
        _consume(map(_set_private, points, repeat(None)))
    return points


def _pick_points_factory() -> Callable[[list[dict[str, Any]]], list[MetricPoint]]:
    """`_assemble_points` while it makes exactly what `model_construct` makes, else the latter.

    It relies on MetricPoint being five plain fields in pydantic's four instance slots; a
    change to either (a new field with a default, a private attribute, another pydantic)
    falls back to the regular path instead of making broken points.
    """
    sample = [{"job_id": "j", "step": 1, "name": "loss", "value": 0.5, "time": 2.0}]
    try:
        fast = _assemble_points(sample)[0]
    except (AttributeError, TypeError):
        return _construct_points
    regular = MetricPoint(**sample[0])
    plain = (
        not MetricPoint.__pydantic_post_init__
        and not MetricPoint.__private_attributes__
        and fast == regular
        and fast.model_dump() == regular.model_dump()
        and fast.model_fields_set == regular.model_fields_set
        and fast.model_dump_json() == regular.model_dump_json()
    )
    return _assemble_points if plain else _construct_points


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    descriptor = BaseModel.__dict__.get(name)
    setter = getattr(descriptor, "__set__", None)
    if setter is None:  # not a slot in this pydantic: the generic (slower) way

        def set_attr(obj: Any, value: Any) -> None:
            object.__setattr__(obj, name, value)

        return set_attr
    return cast(Callable[[Any, Any], None], setter)


_new = object.__new__
_setattr = object.__setattr__
_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")
# Shared by every point made here: all fields are always set (pydantic copies it on copy).
_ALL_FIELDS = set(MetricPoint.model_fields)
_make_points = _pick_points_factory()


def points_from_events(job_id: str, events: Iterable[Event]) -> list[MetricPoint]:
    """The metric points in `events`: one per series of each metric event (others ignored).

    This is the ingest hot path (about six points per event): the values come from validated
    events, so the points are assembled without validating them again.
    """
    fields: list[dict[str, Any]] = []
    append = fields.append
    series = _SERIES
    for event in events:
        if not isinstance(event, MetricEvent):
            continue
        if series is None:
            fields += (
                {"job_id": job_id, "step": event.step, "name": n, "value": v, "time": event.time}
                for n, v in event.values().items()
            )
            continue
        values = event.__dict__
        step = values["step"]
        t = values["time"]
        for name in series:
            value = values[name]
            if value is not None:
                append(
                    {"job_id": job_id, "step": step, "name": name, "value": float(value), "time": t}
                )
    return _make_points(fields)


_INSERT_POINT = (
    "INSERT OR REPLACE INTO metrics (job_id, step, name, value, time) VALUES (?, ?, ?, ?, ?)"
)
# Points go in blocks of this many rows per statement: binding and stepping one statement
# per row costs more than the B-tree insert itself (a block makes the ingest ~40% faster).
_BLOCK_ROWS = 200
_INSERT_BLOCK = (
    "INSERT OR REPLACE INTO metrics (job_id, step, name, value, time) VALUES "
    + ", ".join(["(?, ?, ?, ?, ?)"] * _BLOCK_ROWS)
)


def _insert_points(conn: sqlite3.Connection, points: Sequence[MetricPoint]) -> None:
    """Insert (or replace) points in order, so a later duplicate keeps the newest value."""
    n = len(points)
    full = n - n % _BLOCK_ROWS
    if full:
        # One flat stream of values, cut into tuples of a block's parameters each.
        values = chain.from_iterable(map(_point_row, islice(points, full)))
        conn.executemany(_INSERT_BLOCK, zip(*[values] * (5 * _BLOCK_ROWS), strict=False))
    if n > full:
        conn.executemany(_INSERT_POINT, map(_point_row, islice(points, full, None)))


# --------------------------------------------------------------------------------------------
# The store


class JobStore:
    """Jobs, transitions and metrics in SQLite (see the module docstring).

    Args:
        path: the database file; default `data_home()/ftdesk.sqlite3`. Its folder is created.
        busy_timeout_s: how long a write waits for another process's transaction to finish.

    Raises:
        StoreError: the file is not a database, or comes from a newer app.
    """

    def __init__(self, path: Path | None = None, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path) if path is not None else data_home() / DB_FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        conn = sqlite3.connect(
            self.path,
            timeout=busy_timeout_s,
            isolation_level=None,  # we open every transaction ourselves (BEGIN IMMEDIATE)
            check_same_thread=False,  # shared between threads behind self._lock
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("%s: WAL mode unavailable (journal_mode=%s)", self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA temp_store = MEMORY")
            migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._error(exc, "open") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # -- plumbing --------------------------------------------------------------------------

    def __enter__(self) -> JobStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database; further calls raise StoreError. Closing twice is fine."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):  # best effort; data is committed
                    self._conn.execute("PRAGMA optimize")
                self._conn.close()
                self._conn = None

    def _error(self, exc: sqlite3.Error, what: str) -> StoreError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreError(
                f"{self.path}: the job database stayed locked by another process for over "
                f"{self._busy_timeout_s:g} s while trying to {what}; close other Finetune Desk "
                "windows or commands and try again"
            )
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
            return StoreError(
                f"{self.path}: this file is not a Finetune Desk job database ({text}); move it "
                "away or point FTDESK_HOME at another folder"
            )
        return StoreError(f"{self.path}: cannot {what}: {text}")

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the job store is closed")
        return self._conn

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._db()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._error(exc, what) from exc

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front, so a busy
        database is waited for (busy_timeout) instead of failing halfway through."""
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc, what) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc, what) from exc
                raise

    @staticmethod
    def _job_from_row(job_id: str, snapshot: str) -> Job:
        try:
            return Job.model_validate_json(snapshot)
        except ValidationError as exc:
            raise StoreError(
                f"job {job_id}: its stored record cannot be read by this version of the app "
                f"({exc.error_count()} problem(s), first: {exc.errors()[0]['msg']})"
            ) from exc

    @staticmethod
    def _save(conn: sqlite3.Connection, job: Job) -> None:
        cur = conn.execute(
            "UPDATE jobs SET snapshot = ?, state = ?, created_at = ?, provider = ?, name = ?"
            " WHERE id = ?",
            (
                job.model_dump_json(),
                job.state.value,
                job.created_at,
                job.provider,
                job.name,
                job.id,
            ),
        )
        if cur.rowcount == 0:
            raise JobNotFoundError(f"no job '{job.id}' in the store (deleted?)")

    @staticmethod
    def _changed_state(job: Job, new_state: JobState, reason: str, updates: dict[str, Any]) -> Job:
        if not can_transition(job.state, new_state):
            raise ValueError(
                f"job {job.id}: a change from '{job.state.value}' to '{new_state.value}' is not "
                "allowed"
            )
        clash = {"id", "state", "state_reason"} & updates.keys()
        if clash:
            raise ValueError(f"transition updates may not set {sorted(clash)}")
        unknown = updates.keys() - Job.model_fields.keys()
        if unknown:
            raise ValueError(f"transition updates name unknown Job fields: {sorted(unknown)}")
        # Validate the new snapshot (nested models are taken as they are, so this is cheap).
        return Job.model_validate(
            {**dict(job), **updates, "state": new_state, "state_reason": reason}
        )

    @staticmethod
    def _insert_transition(
        conn: sqlite3.Connection, job_id: str, old: JobState | None, new: JobState, reason: str
    ) -> None:
        conn.execute(
            "INSERT INTO transitions (job_id, old, new, time, reason) VALUES (?, ?, ?, ?, ?)",
            (job_id, old.value if old is not None else None, new.value, time.time(), reason),
        )

    # -- jobs ------------------------------------------------------------------------------

    def add_job(self, job: Job, reason: str = "created") -> None:
        """Store a new job and its first transition (None → job.state).

        Raises:
            ValueError: a job with this id exists already.
        """
        with self._write("add a job") as conn:
            try:
                conn.execute(
                    "INSERT INTO jobs (id, snapshot, state, created_at, provider, name)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        job.id,
                        job.model_dump_json(),
                        job.state.value,
                        job.created_at,
                        job.provider,
                        job.name,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"a job with id '{job.id}' exists already") from exc
            self._insert_transition(conn, job.id, None, job.state, reason)

    def get_job(self, job_id_or_prefix: str) -> Job:
        """The job with this id, or with the only id that starts with this prefix.

        Raises:
            JobNotFoundError: no job matches, or the prefix matches several.
        """
        key = job_id_or_prefix.strip()
        if not key:
            raise JobNotFoundError("no job id given; `finetune-desk jobs` lists them")
        with self._read("read a job") as conn:
            row = conn.execute("SELECT id, snapshot FROM jobs WHERE id = ?", (key,)).fetchone()
            if row is None:
                rows = conn.execute(
                    "SELECT id, snapshot FROM jobs WHERE substr(id, 1, ?) = ?"
                    " ORDER BY created_at, rowid LIMIT 6",
                    (len(key), key),
                ).fetchall()
                if not rows:
                    raise JobNotFoundError(
                        f"no job '{job_id_or_prefix}'; `finetune-desk jobs` lists them"
                    )
                if len(rows) > 1:
                    shown = ", ".join(r[0] for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
                    raise JobNotFoundError(
                        f"job id prefix '{job_id_or_prefix}' matches several jobs ({shown}); "
                        "give more characters of the id"
                    )
                row = rows[0]
        return self._job_from_row(row[0], row[1])

    def list_jobs(self, states: Iterable[JobState] | None = None) -> list[Job]:
        """Every job (or those in `states`), oldest first.

        A record this version cannot read is left out with a warning in the log, so one bad
        row never hides the others.
        """
        sql = "SELECT id, snapshot FROM jobs"
        params: tuple[str, ...] = ()
        if states is not None:
            params = tuple(JobState(s).value for s in states)
            if not params:
                return []
            sql += f" WHERE state IN ({', '.join('?' * len(params))})"
        sql += " ORDER BY created_at, rowid"
        with self._read("list jobs") as conn:
            rows = conn.execute(sql, params).fetchall()
        jobs: list[Job] = []
        for job_id, snapshot in rows:
            try:
                jobs.append(self._job_from_row(job_id, snapshot))
            except StoreError as exc:
                log.warning("%s", exc)
        return jobs

    def save_job(self, job: Job) -> None:
        """Replace the stored snapshot of `job` (no transition is recorded).

        Raises:
            JobNotFoundError: the job is not in the store.
        """
        with self._write("save a job") as conn:
            self._save(conn, job)

    def transition(self, job: Job, new_state: JobState, reason: str, **updates: Any) -> Job:
        """Move `job` to `new_state`: store the transition and the new snapshot together.

        Args:
            job: the current snapshot; its state is the transition's old state.
            new_state: the state to move to (checked with `can_transition`).
            reason: why, in words a person understands (stored, shown in the job list).
            **updates: other Job fields to change in the same snapshot (exit_code=...).

        Returns:
            The new snapshot.

        Raises:
            ValueError: the transition is not allowed (the message names both states), or
                `updates` names a field Job does not have or a value it rejects.
            JobNotFoundError: the job is not in the store.
        """
        new = self._changed_state(job, new_state, reason, updates)
        with self._write("record a state change") as conn:
            self._insert_transition(conn, job.id, job.state, new_state, reason)
            self._save(conn, new)
        return new

    def record_progress(
        self,
        job: Job,
        points: Sequence[MetricPoint],
        transition: tuple[JobState, str] | None = None,
    ) -> Job:
        """Store metric points, the job snapshot and an optional transition in ONE transaction.

        `job` is the snapshot to save; it carries `events_offset` / `events_last_seq`, so the
        stored points always match the stored offset, even after a kill -9.

        Returns:
            The saved snapshot (`job`, moved to the transition's state when one is given).

        Raises:
            ValueError: a point belongs to another job, or the transition is not allowed.
            JobNotFoundError: the job is not in the store.
        """
        job_id = job.id
        others = set(map(_point_job, points)) - {job_id}
        if others:
            raise ValueError(
                f"metric points of job(s) {sorted(others)} were given for job '{job_id}'"
            )
        new = job
        if transition is not None:
            new = self._changed_state(job, transition[0], transition[1], {})
        with self._write("store metrics") as conn:
            _insert_points(conn, points)
            if transition is not None:
                self._insert_transition(conn, job_id, job.state, transition[0], transition[1])
            self._save(conn, new)
        return new

    def delete_job(self, job_id: str) -> None:
        """Delete the job's rows (snapshot, transitions, metrics). Its files are the caller's.

        Raises:
            JobNotFoundError: no job with this id.
        """
        with self._write("delete a job") as conn:
            cur = conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            if cur.rowcount == 0:
                raise JobNotFoundError(f"no job '{job_id}'; `finetune-desk jobs` lists them")
            conn.execute("DELETE FROM transitions WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM metrics WHERE job_id = ?", (job_id,))

    # -- history ---------------------------------------------------------------------------

    def transitions(self, job_id: str) -> list[StateTransition]:
        """The job's state changes, oldest first (empty for an unknown id)."""
        with self._read("read transitions") as conn:
            rows = conn.execute(
                "SELECT old, new, time, reason FROM transitions WHERE job_id = ? ORDER BY id",
                (job_id,),
            ).fetchall()
        return [
            StateTransition(
                job_id=job_id,
                old=JobState(old) if old is not None else None,
                new=JobState(new),
                time=t,
                reason=reason,
            )
            for old, new, t, reason in rows
        ]

    def metrics(
        self,
        job_id: str,
        names: Iterable[str] | None = None,
        since_step: int | None = None,
    ) -> list[MetricPoint]:
        """The job's metric points ordered by step (then series name).

        Args:
            names: only these series (loss, eval_loss, ...); default all.
            since_step: only steps >= this one (a chart catching up).
        """
        sql = "SELECT step, name, value, time FROM metrics WHERE job_id = ?"
        params: list[Any] = [job_id]
        if since_step is not None:
            sql += " AND step >= ?"
            params.append(since_step)
        if names is not None:
            wanted = list(dict.fromkeys(names))
            if not wanted:
                return []
            sql += f" AND name IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        sql += " ORDER BY step, name"
        with self._read("read metrics") as conn:
            rows = conn.execute(sql, params).fetchall()
        nan = float("nan")
        return _make_points(
            [
                {
                    "job_id": job_id,
                    "step": step,
                    "name": name,
                    "value": nan if value is None else value,
                    "time": t,
                }
                for step, name, value, t in rows
            ]
        )

    def metric_count(self, job_id: str) -> int:
        """How many metric points the job has stored."""
        with self._read("count metrics") as conn:
            row = conn.execute("SELECT count(*) FROM metrics WHERE job_id = ?", (job_id,))
            return int(row.fetchone()[0])

    def export_metrics_csv(self, job_id: str, out: TextIO) -> int:
        """Write the job's metrics as a wide CSV: step, time, then one column per series.

        A series without a value at a step leaves its cell empty; `time` is the latest point
        time at that step. Returns the number of data rows (steps) written.
        """
        with self._read("export metrics") as conn:
            present = {
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT name FROM metrics WHERE job_id = ?", (job_id,)
                )
            }
            series = [n for n in _CSV_SERIES_ORDER if n in present]
            series += sorted(present - set(series))
            column = {name: i for i, name in enumerate(series, start=2)}
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["step", "time", *series])
            rows = 0
            current: list[Any] | None = None
            cursor = conn.execute(
                "SELECT step, name, value, time FROM metrics WHERE job_id = ? ORDER BY step",
                (job_id,),
            )
            for step, name, value, t in cursor:
                if current is None or current[0] != step:
                    if current is not None:
                        writer.writerow(current)
                        rows += 1
                    current = [step, t] + [""] * len(series)
                elif t > current[1]:
                    current[1] = t
                current[column[name]] = "nan" if value is None else value
            if current is not None:
                writer.writerow(current)
                rows += 1
        return rows

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check`: "ok", or its findings one per line."""
        with self._read("check the database") as conn:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)
