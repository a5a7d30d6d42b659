"""The job table's item models: `QtJobTableModel`, a thin adapter over AppState's rows,
and `JobFilterProxy`, which sorts and filters them.

`QtJobTableModel` only translates AppState's row signals into `beginInsertRows` /
`dataChanged` for one row; it never resets. The columns, roles and cell texts live here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
)
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QWidget,
)

from desktop.models.job import ACTIVE_STATES, Job, JobState
from desktop.views.state import AppState

__all__ = [
    "COLUMNS",
    "ENDED_ROLE",
    "JOB_ID_ROLE",
    "PROGRESS_ROLE",
    "SORT_ROLE",
    "STATE_COLORS",
    "Column",
    "JobFilterProxy",
    "QtJobTableModel",
    "format_duration",
    "state_text",
]

ModelIndex = QModelIndex | QPersistentModelIndex

JOB_ID_ROLE = int(Qt.ItemDataRole.UserRole) + 1
"""The job id (str) of a row, in every column."""
PROGRESS_ROLE = int(Qt.ItemDataRole.UserRole) + 2
"""Progress in percent (int 0-100) in the progress column; None when the total is unknown."""
SORT_ROLE = int(Qt.ItemDataRole.UserRole) + 3
"""A value that sorts naturally (numbers as numbers, states in lifecycle order)."""
ENDED_ROLE = int(Qt.ItemDataRole.UserRole) + 4
"""True once the job ended (completed, failed, cancelled): its progress bar stops and greys."""

NO_VALUE = "—"


class Column:
    """Column numbers of the job table."""

    NAME = 0
    TARGET = 1
    STATE = 2
    PROGRESS = 3
    STEP = 4
    LOSS = 5
    EVAL_LOSS = 6
    ETA = 7
    ELAPSED = 8
    COST = 9
    GPU = 10


COLUMNS: tuple[str, ...] = (
    "Name",
    "Target",
    "State",
    "Progress",
    "Step / total",
    "Last loss",
    "Best eval loss",
    "ETA",
    "Elapsed",
    "$ spent / budget",
    "GPU",
)

STATE_COLORS: dict[JobState, str] = {
    JobState.QUEUED: "#7f8c8d",
    JobState.PROVISIONING: "#8e44ad",
    JobState.STARTING: "#2471a3",
    JobState.TRAINING: "#2e86de",
    JobState.SAVING: "#17a589",
    JobState.COMPLETED: "#229954",
    JobState.FAILED: "#c0392b",
    JobState.CANCELLED: "#ca6f1e",
    JobState.UNKNOWN: "#5d6d7e",
}

_STATE_ORDER = {state: i for i, state in enumerate(JobState)}

_NUMERIC_COLUMNS = frozenset(
    {
        Column.PROGRESS,
        Column.STEP,
        Column.LOSS,
        Column.EVAL_LOSS,
        Column.ETA,
        Column.ELAPSED,
        Column.COST,
    }
)


def format_duration(seconds: float | None) -> str:
    """`3h 07m`, `12m 05s`, `42s`; `—` for None or a negative value."""
    if seconds is None or seconds < 0 or seconds != seconds:
        return NO_VALUE
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 24:
        return f"{hours // 24}d {hours % 24:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def state_text(job: Job) -> str:
    """The state as a row shows it: a failed job with the first line of its reason."""
    reason = job.state_reason.strip()
    if job.state is JobState.FAILED and reason:
        return f"{job.state.value}: {reason.splitlines()[0]}"
    return job.state.value


def _progress(job: Job) -> int | None:
    if job.state is JobState.COMPLETED:
        return 100
    if job.step is None or not job.total_steps:
        return None
    return max(0, min(100, int(100 * job.step / job.total_steps)))


def _elapsed(job: Job, now: float) -> float | None:
    if job.started_at is None:
        return None
    end = job.finished_at if job.finished_at is not None else now
    if job.finished_at is None and job.is_final:
        return None  # ended without a recorded end time: no honest figure
    return max(0.0, end - job.started_at)


def _money(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def _cost_text(job: Job) -> str:
    if job.provider == "local":
        return NO_VALUE
    spent = _money(job.cost_usd) if job.cost_usd is not None else NO_VALUE
    if job.budget_usd is None:
        return spent
    return f"{spent} / {_money(job.budget_usd)}"


def _gpu_text(job: Job) -> str:
    handle = job.handle
    if handle is not None:
        gpu_type = handle.extra.get("gpu_type") or handle.extra.get("gpu")
        count = handle.extra.get("gpu_count") or (str(len(handle.gpus)) if handle.gpus else "")
        if gpu_type:
            return f"{count} × {gpu_type}" if count and count != "1" else gpu_type
        if handle.gpus:
            return "GPU " + ",".join(str(g) for g in handle.gpus)
    if job.gpus_requested == 0:
        return "CPU"
    return f"{job.gpus_requested} GPU" + ("s" if job.gpus_requested > 1 else "")


def _pod_text(job: Job) -> str:
    """A cloud job's pod in its details: id, GPU, price and state."""
    assert job.handle is not None
    extra = job.handle.extra
    gpu = extra.get("gpu_type") or extra.get("gpu") or "GPU unknown"
    price = f", ${extra['cost_per_hour']}/h" if extra.get("cost_per_hour") else ""
    return f"{job.provider} pod {job.handle.pod_id}\nGPU: {gpu}{price}\nstate: {state_text(job)}"


class QtJobTableModel(QAbstractTableModel):
    """A read-only table of AppState's jobs, one row per job, updated one row at a time.

    Elapsed time of running jobs is refreshed once a second (one `dataChanged` over that
    column of the active rows) and only while some job is active.
    """

    def __init__(
        self,
        state: AppState,
        parent: QWidget | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(parent)
        self._state = state
        self._clock = clock
        self._icons: dict[JobState, QIcon] = {}
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._on_tick_timeout)
        state.row_about_to_be_added.connect(self._on_state_row_about_to_be_added)
        state.row_added.connect(self._on_state_row_added)
        state.row_changed.connect(self._on_state_row_changed)
        state.row_about_to_be_removed.connect(self._on_state_row_about_to_be_removed)
        state.row_removed.connect(self._on_state_row_removed)
        self._update_tick()

    @property
    def state(self) -> AppState:
        """The AppState this model shows."""
        return self._state

    def job_at(self, row: int) -> Job:
        """The job snapshot of a source row."""
        return self._state.job_at(row)

    # -- Qt overrides -------------------------------------------------------------------------

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:
        """Jobs (0 under any valid parent: this is a flat table)."""
        return 0 if parent.isValid() else self._state.job_count()

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:
        """Columns (0 under any valid parent)."""
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        """Column titles."""
        if (
            orientation == Qt.Orientation.Horizontal
            and role == Qt.ItemDataRole.DisplayRole
            and 0 <= section < len(COLUMNS)
        ):
            return COLUMNS[section]
        return None

    def flags(self, index: ModelIndex) -> Qt.ItemFlag:
        """Selectable, enabled, never editable."""
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """The value of one cell for one role."""
        if not index.isValid() or index.row() >= self._state.job_count():
            return None
        job = self._state.job_at(index.row())
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(job, column)
        if role == JOB_ID_ROLE:
            return job.id
        if role == SORT_ROLE:
            return self._sort_value(job, column)
        if role == PROGRESS_ROLE:
            return _progress(job) if column == Column.PROGRESS else None
        if role == ENDED_ROLE:
            return job.is_final
        if role == Qt.ItemDataRole.ForegroundRole and job.state is JobState.FAILED:
            return QBrush(QColor(STATE_COLORS[JobState.FAILED]))  # the whole row reads failed
        if column == Column.STATE:
            color = QColor(STATE_COLORS[job.state])
            if role == Qt.ItemDataRole.ForegroundRole:
                return QBrush(color)
            if role == Qt.ItemDataRole.BackgroundRole:
                tint = QColor(color)
                tint.setAlpha(36)
                return QBrush(tint)
            if role == Qt.ItemDataRole.DecorationRole:
                return self._state_icon(job.state)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(job, column)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in _NUMERIC_COLUMNS:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        return None

    # -- cells --------------------------------------------------------------------------------

    def _display(self, job: Job, column: int) -> str:
        if column == Column.NAME:
            return job.name
        if column == Column.TARGET:
            return job.provider
        if column == Column.STATE:
            return state_text(job)
        if column == Column.PROGRESS:
            progress = _progress(job)
            return NO_VALUE if progress is None else f"{progress}%"
        if column == Column.STEP:
            if job.step is None:
                return NO_VALUE
            return f"{job.step} / {job.total_steps}" if job.total_steps else str(job.step)
        if column == Column.LOSS:
            return NO_VALUE if job.last_loss is None else f"{job.last_loss:.4f}"
        if column == Column.EVAL_LOSS:
            return NO_VALUE if job.best_eval_loss is None else f"{job.best_eval_loss:.4f}"
        if column == Column.ETA:
            return format_duration(job.eta_seconds) if not job.is_final else NO_VALUE
        if column == Column.ELAPSED:
            return format_duration(_elapsed(job, self._clock()))
        if column == Column.COST:
            return _cost_text(job)
        if column == Column.GPU:
            return _gpu_text(job)
        return ""

    def _sort_value(self, job: Job, column: int) -> Any:
        missing = float("inf")
        if column == Column.NAME:
            return job.name.casefold()
        if column == Column.TARGET:
            return job.provider
        if column == Column.STATE:
            return _STATE_ORDER[job.state]
        if column == Column.PROGRESS:
            progress = _progress(job)
            return -1 if progress is None else progress
        if column == Column.STEP:
            return -1 if job.step is None else job.step
        if column == Column.LOSS:
            return missing if job.last_loss is None else job.last_loss
        if column == Column.EVAL_LOSS:
            return missing if job.best_eval_loss is None else job.best_eval_loss
        if column == Column.ETA:
            return missing if job.eta_seconds is None or job.is_final else job.eta_seconds
        if column == Column.ELAPSED:
            elapsed = _elapsed(job, self._clock())
            return -1.0 if elapsed is None else elapsed
        if column == Column.COST:
            return -1.0 if job.cost_usd is None else float(job.cost_usd)
        return self._display(job, column)

    def _tooltip(self, job: Job, column: int) -> str | None:
        if column == Column.NAME:
            return f"{job.name}\nid: {job.id}\nmodel: {job.config.model.name_or_path}"
        if column == Column.STATE:
            return f"{job.state.value}: {job.state_reason}" if job.state_reason else None
        if column == Column.TARGET and job.handle is not None and job.handle.pod_id:
            return _pod_text(job)
        if column == Column.COST and job.provider != "local":
            return "Spent so far / budget (the pod stops itself at the budget)."
        return None

    def _state_icon(self, state: JobState) -> QIcon:
        icon = self._icons.get(state)
        if icon is None:
            pixmap = QPixmap(12, 12)
            pixmap.fill(Qt.GlobalColor.transparent)
            painter = QPainter(pixmap)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(STATE_COLORS[state]))
            painter.drawEllipse(1, 1, 10, 10)
            painter.end()
            icon = self._icons[state] = QIcon(pixmap)
        return icon

    # -- AppState → row signals ---------------------------------------------------------------

    def _on_state_row_about_to_be_added(self, row: int) -> None:
        self.beginInsertRows(QModelIndex(), row, row)

    def _on_state_row_added(self, row: int) -> None:
        self.endInsertRows()
        self._update_tick()

    def _on_state_row_changed(self, row: int) -> None:
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
        self._update_tick()

    def _on_state_row_about_to_be_removed(self, row: int) -> None:
        self.beginRemoveRows(QModelIndex(), row, row)

    def _on_state_row_removed(self, row: int) -> None:
        self.endRemoveRows()
        self._update_tick()

    def _active_rows(self) -> list[int]:
        return [
            row
            for row, job in enumerate(self._state.jobs())
            if job.state in ACTIVE_STATES and job.started_at is not None
        ]

    def _update_tick(self) -> None:
        if self._active_rows():
            if not self._tick.isActive():
                self._tick.start()
        else:
            self._tick.stop()

    def _on_tick_timeout(self) -> None:
        rows = self._active_rows()
        if not rows:
            self._tick.stop()
            return
        for row in rows:
            index = self.index(row, Column.ELAPSED)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DisplayRole])


class JobFilterProxy(QSortFilterProxyModel):
    """Sorts by `SORT_ROLE` and keeps the rows whose state is in a set and that match a text.

    The text matches (case-insensitively, as a substring) the name, target, state, id and
    model of a job; every whitespace-separated word must match.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._states: frozenset[JobState] | None = None
        self._words: tuple[str, ...] = ()
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)

    @property
    def state_filter(self) -> frozenset[JobState] | None:
        """The states shown; None shows every state."""
        return self._states

    def set_state_filter(self, states: Collection[JobState] | None) -> None:
        """Show only jobs in these states (None: all)."""
        new = None if states is None else frozenset(JobState(s) for s in states)
        if new != self._states:
            self.beginFilterChange()
            self._states = new
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    @property
    def text_filter(self) -> str:
        """The text filter, as words joined by spaces."""
        return " ".join(self._words)

    def set_text_filter(self, text: str) -> None:
        """Show only jobs matching every word of `text` (empty: all)."""
        words = tuple(text.casefold().split())
        if words != self._words:
            self.beginFilterChange()
            self._words = words
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: ModelIndex) -> bool:
        """Whether a source row passes the state and text filters."""
        source = self.sourceModel()
        if not isinstance(source, QtJobTableModel) or source_parent.isValid():
            return True
        job = source.job_at(source_row)
        if self._states is not None and job.state not in self._states:
            return False
        if self._words:
            haystack = " ".join(
                (job.name, job.provider, job.state.value, job.id, job.config.model.name_or_path)
            ).casefold()
            return all(word in haystack for word in self._words)
        return True
