"""AppState: the one mutable state the views see.

The `JobService` (desktop/core/service.py) calls the `JobListener` methods on the Qt thread;
AppState keeps frozen `Job` snapshots in order, the metric series of each job in growable numpy
buffers, the recent log lines of each job and the selected job ids, and re-emits everything as Qt
signals that item models translate one row at a time.

History is loaded lazily (`lazy_history`, which `operations.serve_history` turns on): the
window starts from the snapshots alone. Selecting a job whose stored history is not in memory
emits `history_wanted(job_id)`; the window reads it off the UI
thread (`operations.serve_history`) and hands it to `set_history`, which puts the stored points
before any that streamed in meanwhile. Live points stream in through `metrics_added` whether or
not the history is loaded. At most `max_loaded_jobs` finished, unselected jobs keep their
loaded series (least recently selected dropped first), so memory is bounded by what is looked
at, not by how many runs the store holds.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from PySide6.QtCore import QObject, Signal

from desktop.models.job import Job, SeriesColumns
from desktop.views.chart.smoothing import FloatArray, GrowableArray

__all__ = ["DEFAULT_LOADED_JOBS", "DEFAULT_LOG_LINES", "AppState", "MetricSeries"]

log = logging.getLogger(__name__)


DEFAULT_LOG_LINES = 10_000
DEFAULT_LOADED_JOBS = 16
"""Finished, unselected jobs whose loaded series are kept (a click back is instant)."""


class MetricSeries:
    """One metric (loss, eval_loss, learning_rate, grad_norm, tokens_seen ...) of one job.

    Three float64 columns that grow by amortised doubling: `step`, `value`, `time` (unix
    seconds). The properties return no-copy views of the filled part.

    The series is keyed by step, as the store is (one value per step, the newest): steps
    strictly increase. A resumed run logs again the steps after its checkpoint; those replace
    the old values (the series is cut at the first step logged again, then the new points are
    appended), so a curve never doubles back. Each cut bumps `rewrites`, which tells a consumer
    that caches built on the old points (the chart's pyramids) must be rebuilt.
    """

    __slots__ = ("_step", "_time", "_value", "rewrites", "version")

    def __init__(self, capacity: int = 1024) -> None:
        self._step = GrowableArray(capacity)
        self._value = GrowableArray(capacity)
        self._time = GrowableArray(capacity)
        self.version = 0
        """Bumped on every append, so a consumer can tell it has new points."""
        self.rewrites = 0
        """Bumped whenever points already held were replaced (steps logged again)."""

    def __len__(self) -> int:
        return len(self._step)

    def extend(self, steps: npt.ArrayLike, values: npt.ArrayLike, times: npt.ArrayLike) -> None:
        """Add points in the order they were logged; the three inputs must have the same length.

        A point whose step is not past the last one held replaces that step and every later
        one (see the class docstring); O(new points) when the steps only grow.
        """
        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        if not s.shape == v.shape == t.shape:
            raise ValueError(
                f"steps, values and times differ in length: {s.shape[0]}, {v.shape[0]}, "
                f"{t.shape[0]}"
            )
        # Runs of strictly increasing steps; a batch that goes back (a poll that read across a
        # resume) starts a new run, which replaces what it logs again.
        back = (np.flatnonzero(s[1:] <= s[:-1]) + 1).tolist()
        bounds = [0, *back, s.shape[0]]
        for start, end in itertools.pairwise(bounds):
            self._append_run(s[start:end], v[start:end], t[start:end])
        self.version += 1

    def _append_run(self, s: FloatArray, v: FloatArray, t: FloatArray) -> None:
        held = self._step.view()
        if s.shape[0] and held.shape[0] and s[0] <= held[-1]:
            keep = int(np.searchsorted(held, s[0], side="left"))
            for column in (self._step, self._value, self._time):
                column.truncate(keep)
            self.rewrites += 1
        self._step.extend(s)
        self._value.extend(v)
        self._time.extend(t)

    @property
    def step(self) -> FloatArray:
        """Steps (as float64), a view."""
        return self._step.view()

    @property
    def value(self) -> FloatArray:
        """Values, a view."""
        return self._value.view()

    @property
    def time(self) -> FloatArray:
        """Unix times of the points, a view."""
        return self._time.view()


class AppState(QObject):
    """The one mutable state of the GUI; implements the `JobListener` protocol.

    Rows are the jobs in the order they were added. Insertions and removals are announced
    before and after, so an item model can call `beginInsertRows` / `beginRemoveRows` while
    the old rows are still in place.

    The listener methods keep the `JobListener` names (`job_added(job)` ...), so the signals,
    which cannot share those names on one class, are named after rows.

    Signals:
        row_about_to_be_added(int row): a job will be inserted at `row`.
        row_added(int row): the job at `row` was inserted.
        row_changed(int row): the snapshot at `row` was replaced (state, progress, loss ...).
        row_about_to_be_removed(int row): the job at `row` will be removed.
        row_removed(int row): the job that was at `row` is gone.
        metrics_appended(str job_id): new points in one or more metric series of the job.
        log_appended(str job_id, list lines): new log lines of the job.
        selection_changed(list job_ids): the selected jobs changed (in row order).
        history_wanted(str job_id): a selected job's stored series are needed (load them and
            call `set_history`, or `history_failed`).
        history_changed(str job_id): a job's history started or stopped loading.
    """

    row_about_to_be_added = Signal(int)
    row_added = Signal(int)
    row_changed = Signal(int)
    row_about_to_be_removed = Signal(int)
    row_removed = Signal(int)
    metrics_appended = Signal(str)
    log_appended = Signal(str, list)
    selection_changed = Signal(list)
    history_wanted = Signal(str)
    history_changed = Signal(str)

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        log_lines: int = DEFAULT_LOG_LINES,
        max_loaded_jobs: int = DEFAULT_LOADED_JOBS,
    ):
        super().__init__(parent)
        # job id -> True once its stored history is in memory, False while it is being read;
        # in least-recently-selected order.
        self._history: OrderedDict[str, bool] = OrderedDict()
        self._max_loaded = max_loaded_jobs
        self.lazy_history = False
        """True once something answers `history_wanted` (the window); without it, a state
        holds what it is given and asks for nothing (benchmarks, tests of the chart)."""
        self._jobs: list[Job] = []
        self._rows: dict[str, int] = {}
        self._metrics: dict[str, dict[str, MetricSeries]] = {}
        self._logs: dict[str, deque[str]] = {}
        self._log_lines = log_lines
        self._selected: tuple[str, ...] = ()

    # -- reading ------------------------------------------------------------------------------

    def jobs(self) -> tuple[Job, ...]:
        """All job snapshots in row order."""
        return tuple(self._jobs)

    def job_count(self) -> int:
        """Number of jobs (rows)."""
        return len(self._jobs)

    def job_at(self, row: int) -> Job:
        """The snapshot at `row` (IndexError when out of range)."""
        return self._jobs[row]

    def job(self, job_id: str) -> Job | None:
        """The snapshot of `job_id`, or None when unknown."""
        row = self._rows.get(job_id)
        return None if row is None else self._jobs[row]

    def row_of(self, job_id: str) -> int:
        """The row of `job_id`, or -1 when unknown."""
        return self._rows.get(job_id, -1)

    def series(self, job_id: str, name: str) -> MetricSeries | None:
        """The `name` series of a job, or None when it has no such points (yet)."""
        return self._metrics.get(job_id, {}).get(name)

    def series_names(self, job_id: str) -> list[str]:
        """Names of the series a job has points in."""
        return list(self._metrics.get(job_id, {}))

    def log_tail(self, job_id: str) -> list[str]:
        """The most recent log lines of a job (bounded by `log_lines`)."""
        return list(self._logs.get(job_id, ()))

    @property
    def selected_job_ids(self) -> tuple[str, ...]:
        """The selected jobs, in row order."""
        return self._selected

    def set_selected_job_ids(self, job_ids: Iterable[str]) -> None:
        """Select these jobs (unknown ids are ignored); emits `selection_changed` on change,
        and `history_wanted` for each selected job whose stored history is not in memory."""
        wanted = {job_id for job_id in job_ids if job_id in self._rows}
        ordered = tuple(sorted(wanted, key=self._rows.__getitem__))
        if ordered == self._selected:
            return
        self._selected = ordered
        missing = []
        for job_id in ordered if self.lazy_history else ():
            if job_id in self._history:
                self._history.move_to_end(job_id)
            else:
                self._history[job_id] = False
                missing.append(job_id)
        self.selection_changed.emit(list(ordered))
        for job_id in missing:
            self.history_changed.emit(job_id)
            self.history_wanted.emit(job_id)

    def history_loading(self, job_id: str) -> bool:
        """Whether the job's stored history is being read (asked for, not yet given)."""
        return self._history.get(job_id) is False

    # -- JobListener ----------------------------------------------------------------------------

    def job_added(self, job: Job) -> None:
        """A job record was created or loaded: append it (or replace it if already known)."""
        if job.id in self._rows:
            self.job_changed(job)
            return
        row = len(self._jobs)
        self.row_about_to_be_added.emit(row)
        self._jobs.append(job)
        self._rows[job.id] = row
        self.row_added.emit(row)

    def job_changed(self, job: Job) -> None:
        """Replace a job's snapshot; emits `row_changed(row)` only when something differs."""
        row = self._rows.get(job.id)
        if row is None:
            log.warning("job %s changed before it was added; adding it", job.id)
            self.job_added(job)
            return
        if self._jobs[row] == job:
            return
        self._jobs[row] = job
        self.row_changed.emit(row)

    def job_removed(self, job_id: str) -> None:
        """Drop a job record, its metrics, its log lines and its selection."""
        row = self._rows.get(job_id)
        if row is None:
            return
        self.row_about_to_be_removed.emit(row)
        del self._jobs[row]
        self._rows = {job.id: i for i, job in enumerate(self._jobs)}
        self._metrics.pop(job_id, None)
        self._logs.pop(job_id, None)
        self._history.pop(job_id, None)
        self.row_removed.emit(row)
        if job_id in self._selected:
            self._selected = tuple(i for i in self._selected if i != job_id)
            self.selection_changed.emit(list(self._selected))

    def metrics_added(self, job_id: str, columns: Mapping[str, SeriesColumns]) -> None:
        """Append new points, as columns per series, to the job's buffers (one signal)."""
        if not columns:
            return
        for name, column in columns.items():
            self._series_for(job_id, name).extend(column.steps, column.values, column.times)
        self.metrics_appended.emit(job_id)

    def log_added(self, job_id: str, lines: list[str]) -> None:
        """Keep the job's most recent log lines and pass the new ones on."""
        if not lines:
            return
        tail = self._logs.get(job_id)
        if tail is None:
            tail = self._logs[job_id] = deque(maxlen=self._log_lines)
        tail.extend(lines)
        self.log_appended.emit(job_id, list(lines))

    # -- bulk loading ---------------------------------------------------------------------------

    def set_history(self, job_id: str, columns: Mapping[str, SeriesColumns]) -> None:
        """The job's stored series, read on selection: they go before the points that
        streamed in since (a stored point at or after a streamed series' first step is one the
        stream holds already, or one a resumed run replaced)."""
        if job_id not in self._rows:
            return
        per_job = self._metrics.setdefault(job_id, {})
        for name, column in columns.items():
            steps = np.asarray(column.steps, dtype=np.float64)
            values = np.asarray(column.values, dtype=np.float64)
            times = np.asarray(column.times, dtype=np.float64)
            live = per_job.get(name)
            if live is not None and len(live):
                keep = steps < live.step[0]
                steps = np.concatenate([steps[keep], live.step])
                values = np.concatenate([values[keep], live.value])
                times = np.concatenate([times[keep], live.time])
            series = per_job[name] = MetricSeries(max(len(steps), 1))
            series.extend(steps, values, times)
        self._history[job_id] = True
        self._history.move_to_end(job_id)
        self._evict()
        self.history_changed.emit(job_id)
        self.metrics_appended.emit(job_id)

    def history_failed(self, job_id: str) -> None:
        """Reading the job's history failed (the error was reported); a later selection
        asks again."""
        if self._history.get(job_id) is False:
            del self._history[job_id]
            self.history_changed.emit(job_id)

    def _evict(self) -> None:
        """Drop the loaded series of the least recently selected finished jobs beyond
        `max_loaded_jobs`; selected and live jobs keep theirs."""
        idle = [
            job_id
            for job_id, loaded in self._history.items()
            if loaded and job_id not in self._selected and self._finished(job_id)
        ]
        for job_id in idle[: max(0, len(idle) - self._max_loaded)]:
            del self._history[job_id]
            self._metrics.pop(job_id, None)

    def _finished(self, job_id: str) -> bool:
        job = self.job(job_id)
        return job is None or job.is_final

    def add_metric_arrays(
        self,
        job_id: str,
        name: str,
        steps: npt.ArrayLike,
        values: npt.ArrayLike,
        times: npt.ArrayLike,
    ) -> None:
        """Append many points of one series at once (history from the store, benchmarks).

        Same effect as `metrics_added` with one `MetricPoint` per element, without building them.
        """
        self._series_for(job_id, name).extend(steps, values, times)
        self.metrics_appended.emit(job_id)

    def _series_for(self, job_id: str, name: str) -> MetricSeries:
        per_job = self._metrics.setdefault(job_id, {})
        series = per_job.get(name)
        if series is None:
            series = per_job[name] = MetricSeries()
        return series

    def clear_metrics(self, job_id: str, names: Sequence[str] | None = None) -> None:
        """Forget a job's series (all, or those named), e.g. before reloading them."""
        per_job = self._metrics.get(job_id)
        if per_job is None:
            return
        for name in list(per_job) if names is None else names:
            per_job.pop(name, None)
        self.metrics_appended.emit(job_id)
