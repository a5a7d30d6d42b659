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

Every write of a job's snapshot is compare-and-set on its state (`UPDATE ... WHERE id = ? AND
state = ?`): a transition names the state it expects, and when another process got there first
(two `run --resume` at once) it writes nothing and raises `JobStateError`.

`points_from_events(job_id, events)` (in `metric_points`, re-exported here) turns trainer
events into MetricPoints without validating the already-validated values again; with block
inserts it keeps the ingest (read + convert + store) near a bare json.loads + executemany loop
(bench/ingest.py). The schema and its migrations live in `store_schema`; one job's series for
the chart, downsampled in SQL, in `series_query`. Past 600 lines because it is one class whose
every method is one transaction under the store's lock; the SQL that grows lives beside it.

Threads: a `JobStore` may be built on one thread and used from any other. It holds one
connection, opened with `check_same_thread=False`, and every method takes the store's lock
around its SQLite work, so an asyncio loop, its worker threads and the Qt thread can share
one store without corrupting it or each other's transactions. The rule for callers: writes
(`add_job`, `save_job`, `transition`, `record_progress`, `delete_job`) belong on a worker
thread (`asyncio.to_thread`), never on the Qt thread or the event loop's thread: a write can
wait up to `busy_timeout_s` for another process's transaction, and a big `record_progress`
batch takes milliseconds. Reads are short and may run anywhere. Qt-free and torch-free.

A full disk never stops a read: a failed write is a `DiskFullError` (one sentence, nothing
stored before is lost), and a file that cannot even be opened normally on a full drive (WAL
mode must create its `-shm` index) is opened read-only as it stands on disk, when no
uncheckpointed WAL could hide newer rows; its writes then raise `DiskFullError`.

The module runs past 600 lines because every way the database can fail (locked, damaged, from
a newer app, read-only, a full disk) becomes its one sentence here, next to the SQL that meets
it; split apart, a new query could miss one of them.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from pydantic import ValidationError

from desktop.core import store_schema
from desktop.core.errors import (
    DiskFullError,
    JobNotFoundError,
    JobStateError,
    StoreError,
    is_disk_full,
)
from desktop.core.metric_points import insert_points, make_points, points_from_events
from desktop.core.series_query import read_series_columns
from desktop.core.store_schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from desktop.models import Job, JobState, MetricPoint, StateTransition, can_transition, data_home
from desktop.models.job import SeriesColumns

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

_point_job = attrgetter("job_id")

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


# --------------------------------------------------------------------------------------------
# The store


class JobStore:
    """Jobs, transitions and metrics in SQLite (see the module docstring).

    Thread-safe: usable from any thread, whichever built it; call the writes from a worker
    thread, never from the Qt or event-loop thread (they may wait `busy_timeout_s`).

    Args:
        path: the database file; default `data_home()/ftdesk.sqlite3`. Its folder is created.
        busy_timeout_s: how long a write waits for another process's transaction to finish.
        check_history: False checks only the jobs' own tables at open (milliseconds, where the
            whole file takes ~1 s per 400 MB of points); the window does, then runs
            `check_history()` on a thread of its own once it is ready.

    Raises:
        StoreError: the file is not a database, comes from a newer app, or is damaged
            (`PRAGMA quick_check` runs on every open, and again after any SQLite error that
            is not a lock or a constraint: the message names the file and the way out).
    """

    def __init__(
        self, path: Path | None = None, *, busy_timeout_s: float = 10.0, check_history: bool = True
    ) -> None:
        self.path = Path(path) if path is not None else data_home() / DB_FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self.read_only_reason: str | None = None  # set when opened read-only on a full disk
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
            tables = () if check_history else ("meta", "jobs", "transitions")
            finding = store_schema.quick_check(conn, tables)
        except sqlite3.DatabaseError as exc:
            error = self._error(exc, "open", conn)  # checks the file: before closing it
            conn.close()
            if not isinstance(error, DiskFullError) or self._wal_holds_rows():
                raise error from exc
            conn, finding = self._open_as_it_stands(error)
        except StoreError as exc:  # a newer schema: name the file, so the person knows which
            conn.close()
            raise StoreError(f"{self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if finding is not None:
            conn.close()
            raise self._damaged(finding)
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

    def _wal_holds_rows(self) -> bool:
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            return wal.stat().st_size > 0
        except FileNotFoundError:
            return False

    def _open_as_it_stands(self, full: DiskFullError) -> tuple[sqlite3.Connection, str | None]:
        """Open the file read-only without the WAL index (immutable: nothing else can write to
        a full drive, and the WAL is empty); its writes say why they cannot be done."""
        uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            migrate(conn)  # only checks the version: a current file needs no change
            finding = store_schema.quick_check(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise full from exc
        self.read_only_reason = str(self._full("save anything"))
        return conn, finding

    def check_history(self) -> None:
        """The whole file's `quick_check`, on a connection of its own (the store's lock is not
        held, so reads and writes go on meanwhile).

        Raises:
            StoreError: the file is damaged (the sentence says how to repair it).
        """
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s)
        try:
            finding = store_schema.quick_check(conn)
        except sqlite3.DatabaseError as exc:
            finding = str(exc)
        finally:
            conn.close()
        if finding is not None:
            raise self._damaged(finding)

    def _damaged(self, finding: str) -> StoreError:
        return store_schema.StoreDamagedError(
            f"{self.path}: the job database is damaged (SQLite's check says: {finding}), so "
            "nothing was read from it; move it aside (for example to "
            f"{self.path.name}.damaged) and run the command again with a new, empty one, or "
            "rebuild it from the job folders with: finetune-desk repair"
        )

    def _error(
        self, exc: sqlite3.Error, what: str, conn: sqlite3.Connection | None = None
    ) -> StoreError:
        text = str(exc)
        if is_disk_full(exc) or ("disk I/O error" in text and self._drive_full()):
            return self._full(what)
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
            exc, sqlite3.OperationalError | sqlite3.IntegrityError
        ):
            # A damaged page shows first as some query's error: check the whole file, so the
            # person hears "damaged" and the way out, not a query's words.
            checked = conn if conn is not None else self._conn
            finding: str | None = None
            if checked is not None:
                try:
                    finding = store_schema.quick_check(checked)
                except sqlite3.DatabaseError as again:
                    finding = str(again)
            if finding is not None and "not a database" not in text:
                return self._damaged(finding)
        if "locked" in text or "busy" in text:
            return StoreError(
                f"{self.path}: the job database stayed locked by another process for over "
                f"{self._busy_timeout_s:g} s while trying to {what}; close other Finetune Desk "
                "windows or commands and try again"
            )
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
            return store_schema.StoreDamagedError(
                f"{self.path}: this file is not a Finetune Desk job database ({text}); move it "
                "away or point FTDESK_HOME at another folder"
            )
        if "readonly" in text or "read-only" in text:
            return StoreError(
                f"{self.path}: the job database is read-only, so this app cannot {what}; make "
                "the file and its folder writable, or point FTDESK_HOME at another folder"
            )
        return StoreError(f"{self.path}: cannot {what}: {text}")

    def _full(self, what: str) -> DiskFullError:
        return DiskFullError(
            f"{self.path}: the disk holding the job database is full, so this app could not "
            f"{what} (everything stored before is intact); free space on that drive, or point "
            "FTDESK_HOME at another one, and run the command again"
        )

    def _drive_full(self) -> bool:
        try:
            return shutil.disk_usage(self.path.parent).free < 1024 * 1024
        except OSError:
            return False

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
                raise self._error(exc, what, conn) from exc

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front, so a busy
        database is waited for (busy_timeout) instead of failing halfway through."""
        with self._lock:
            conn = self._db()
            if self.read_only_reason is not None:
                raise self._full(what)
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
                    raise self._error(exc, what, conn) from exc
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
    def _save(conn: sqlite3.Connection, job: Job, expected: JobState) -> None:
        """Write the snapshot only while the stored state is still `expected` (compare-and-set).

        Another process (a second `run --resume`, a window's watcher) may have changed the
        state since `job` was read; overwriting its change would misstate the job.
        """
        cur = conn.execute(
            "UPDATE jobs SET snapshot = ?, state = ?, created_at = ?, provider = ?, name = ?"
            " WHERE id = ? AND state = ?",
            (
                job.model_dump_json(),
                job.state.value,
                job.created_at,
                job.provider,
                job.name,
                job.id,
                expected.value,
            ),
        )
        if cur.rowcount == 1:
            return
        row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job '{job.id}' in the store (deleted?)")
        raise JobStateError(
            f"job {job.id}: another process changed it to '{row[0]}' first (this one expected "
            f"'{expected.value}'); see: finetune-desk show {job.id}"
        )

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
        conn: sqlite3.Connection,
        job_id: str,
        old: JobState | None,
        new: JobState,
        reason: str,
        at: float | None = None,
    ) -> None:
        # `at`: when the change happened (a poll may read it long after); None: now.
        stamp = time.time() if at is None else at
        conn.execute(
            "INSERT INTO transitions (job_id, old, new, time, reason) VALUES (?, ?, ?, ?, ?)",
            (job_id, old.value if old is not None else None, new.value, stamp, reason),
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
            JobStateError: the stored state is no longer `job.state` (another process moved it).
        """
        with self._write("save a job") as conn:
            self._save(conn, job, job.state)

    def transition(
        self, job: Job, new_state: JobState, reason: str, *, at: float | None = None, **updates: Any
    ) -> Job:
        """Move `job` to `new_state`: store the transition and the new snapshot together.

        Args:
            job: the current snapshot; its state is the transition's old state.
            new_state: the state to move to (checked with `can_transition`).
            reason: why, in words a person understands (stored, shown in the job list).
            at: when the change happened (Unix time); default: now.
            **updates: other Job fields to change in the same snapshot (exit_code=...).

        Returns:
            The new snapshot.

        Raises:
            ValueError: the transition is not allowed (the message names both states), or
                `updates` names a field Job does not have or a value it rejects.
            JobNotFoundError: the job is not in the store.
            JobStateError: the stored state is no longer `job.state`: another process got
                there first (compare-and-set), and nothing was written.
        """
        new = self._changed_state(job, new_state, reason, updates)
        with self._write("record a state change") as conn:
            self._save(conn, new, job.state)
            self._insert_transition(conn, job.id, job.state, new_state, reason, at)
        return new

    def record_progress(
        self,
        job: Job,
        points: Sequence[MetricPoint],
        transition: tuple[JobState, str] | tuple[JobState, str, float | None] | None = None,
        resumed_from_step: int | None = None,
    ) -> Job:
        """Store metric points, the job snapshot and an optional transition in ONE transaction.

        `job` is the snapshot to save; it carries `events_offset` / `events_last_seq`, so the
        stored points always match the stored offset, even after a kill -9. A transition's
        optional third item is when it happened (default: now). `resumed_from_step` (a resumed
        attempt started there) first deletes the stored points past it.

        Returns:
            The saved snapshot (`job`, moved to the transition's state when one is given).

        Raises:
            ValueError: a point belongs to another job, or the transition is not allowed.
            JobNotFoundError: the job is not in the store.
            JobStateError: the stored state is no longer `job.state` (nothing was written).
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
            insert_points(conn, points, job_id=job_id, resumed_from_step=resumed_from_step)
            if transition is not None:
                self._insert_transition(conn, job_id, job.state, *transition)
            self._save(conn, new, job.state)
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
        return make_points(
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

    def series_columns(
        self, job_id: str, max_points: int | None = None
    ) -> dict[str, SeriesColumns]:
        """Every series of one job as columns in step order; a series longer than `max_points`
        downsampled for the screen, its extremes and ends kept (`read_series_columns`)."""
        with self._read("read a job's series") as conn:
            return read_series_columns(conn, job_id, max_points)

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
