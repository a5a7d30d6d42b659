"""The job table: a thin item model over AppState, a filter/sort proxy and the table widget.

`QtJobTableModel` only translates AppState's row signals into `beginInsertRows` /
`dataChanged` for one row; it never resets. `JobTableView` emits what the user asked for
(cancel, resume, ...) as signals carrying job ids; the main window wires them to operations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QAction, QBrush, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QMenu,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from desktop.models.job import ACTIVE_STATES, Job, JobState
from desktop.views.state import AppState

__all__ = [
    "COLUMNS",
    "JOB_ID_ROLE",
    "PROGRESS_ROLE",
    "SORT_ROLE",
    "STATE_COLORS",
    "Column",
    "JobFilterProxy",
    "JobTableView",
    "ProgressDelegate",
    "QtJobTableModel",
    "format_duration",
]

ModelIndex = QModelIndex | QPersistentModelIndex

JOB_ID_ROLE = int(Qt.ItemDataRole.UserRole) + 1
"""The job id (str) of a row, in every column."""
PROGRESS_ROLE = int(Qt.ItemDataRole.UserRole) + 2
"""Progress in percent (int 0-100) in the progress column; None when the total is unknown."""
SORT_ROLE = int(Qt.ItemDataRole.UserRole) + 3
"""A value that sorts naturally (numbers as numbers, states in lifecycle order)."""

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

# What a column usually shows at its widest (sizes the columns once).
_TYPICAL_VALUES: dict[int, str] = {
    Column.TARGET: "runpod",
    Column.STATE: "●  provisioning",
    Column.PROGRESS: "100% done",
    Column.STEP: "1,234 / 5,000",
    Column.LOSS: "0.1234",
    Column.EVAL_LOSS: "0.1234",
    Column.ETA: "1h 23m",
    Column.ELAPSED: "1h 23m",
    Column.COST: "$1.23 / $20",
    Column.GPU: "H100 ×2",
}
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
            return job.state.value
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


class ProgressDelegate(QStyledItemDelegate):
    """Paints `PROGRESS_ROLE` as a progress bar; cells without progress paint as text."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        """Draw the cell background (selection) and a progress bar over it."""
        value = index.data(PROGRESS_ROLE)
        if value is None:
            super().paint(painter, option, index)
            return
        widget = option.widget
        style = widget.style() if widget is not None else QApplication.style()
        item = QStyleOptionViewItem(option)
        self.initStyleOption(item, index)
        item.text = ""
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, item, painter, widget)
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(3, 3, -3, -3)
        bar.minimum = 0
        bar.maximum = 100
        bar.progress = int(value)
        bar.text = f"{int(value)}%"
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        bar.state = option.state | QStyle.StateFlag.State_Horizontal
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, widget)


# (label, states shown) for the state filter combo; None shows all.
_STATE_CHOICES: tuple[tuple[str, frozenset[JobState] | None], ...] = (
    ("All states", None),
    ("Active", ACTIVE_STATES),
    ("Finished", frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})),
    ("Completed", frozenset({JobState.COMPLETED})),
    ("Failed", frozenset({JobState.FAILED})),
    ("Cancelled", frozenset({JobState.CANCELLED})),
    ("Unknown", frozenset({JobState.UNKNOWN})),
)

_RESUMABLE = frozenset({JobState.CANCELLED, JobState.FAILED})


class JobTableView(QWidget):
    """The job table with a filter bar and a context menu. It does no work itself.

    Selecting rows sets `AppState.selected_job_ids` (several rows: several ids, compared in
    the chart). Double-clicking a row asks for its log.

    Signals (each carries one job id; an action on several selected jobs emits once per job):
        cancel_requested(str): cancel an active job.
        resume_requested(str): resume a cancelled or failed job from its checkpoint.
        duplicate_requested(str): copy the job's config into the editor.
        open_output_requested(str): open the job's output folder.
        show_log_requested(str): show the job's log.
        delete_requested(str): delete a finished job's record.
    """

    cancel_requested = Signal(str)
    resume_requested = Signal(str)
    duplicate_requested = Signal(str)
    open_output_requested = Signal(str)
    show_log_requested = Signal(str)
    delete_requested = Signal(str)

    STATE_CHOICES: ClassVar[tuple[tuple[str, frozenset[JobState] | None], ...]] = _STATE_CHOICES

    def __init__(
        self,
        state: AppState,
        parent: QWidget | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(parent)
        self._state = state
        self.model = QtJobTableModel(state, self, clock=clock)
        self.proxy = JobFilterProxy(self)
        self.proxy.setSourceModel(self.model)

        self.state_combo = QComboBox(self)
        self.state_combo.setToolTip("Show jobs in these states")
        for label, _states in _STATE_CHOICES:
            self.state_combo.addItem(label)
        self.state_combo.currentIndexChanged.connect(self._on_state_combo_current_index_changed)

        self.text_edit = QLineEdit(self)
        self.text_edit.setPlaceholderText("Filter by name, target, state or model…")
        self.text_edit.setClearButtonEnabled(True)
        self.text_edit.textChanged.connect(self.proxy.set_text_filter)

        self.table = QTableView(self)
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # insertion order until asked
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self._size_columns()
        self._progress_delegate = ProgressDelegate(self.table)
        self.table.setItemDelegateForColumn(Column.PROGRESS, self._progress_delegate)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_table_custom_context_menu_requested)
        self.table.doubleClicked.connect(self._on_table_double_clicked)
        self.table.selectionModel().selectionChanged.connect(
            self._on_selection_model_selection_changed
        )

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.state_combo)
        bar.addWidget(self.text_edit, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.table)

    def _size_columns(self) -> None:
        """The name takes the spare width; every other column fits its header and a typical
        value once (sizing to contents on every tick would cost CPU on each update)."""
        header = self.table.horizontalHeader()
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(40)
        metrics = self.table.fontMetrics()
        for column in range(len(COLUMNS)):
            if column == Column.NAME:
                header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
                continue
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            sample = _TYPICAL_VALUES.get(column, "")
            width = max(header.sectionSizeHint(column), metrics.horizontalAdvance(sample) + 16)
            header.resizeSection(column, width)

    # -- selection ------------------------------------------------------------------------------

    def selected_job_ids(self) -> list[str]:
        """Ids of the selected rows, top to bottom as shown."""
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        return [self.proxy.index(row, 0).data(JOB_ID_ROLE) for row in rows]

    def select_job_ids(self, job_ids: Sequence[str]) -> None:
        """Select these jobs' rows (those visible under the filter)."""
        selection = QItemSelection()
        for job_id in job_ids:
            source_row = self._state.row_of(job_id)
            if source_row < 0:
                continue
            index = self.proxy.mapFromSource(self.model.index(source_row, 0))
            if index.isValid():
                selection.select(index, index)
        flags = (
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows
        )
        self.table.selectionModel().select(selection, flags)

    def _on_selection_model_selection_changed(self, *_args: object) -> None:
        self._state.set_selected_job_ids(self.selected_job_ids())

    # -- filter -------------------------------------------------------------------------------

    def _on_state_combo_current_index_changed(self, index: int) -> None:
        self.proxy.set_state_filter(_STATE_CHOICES[index][1] if index >= 0 else None)

    # -- context menu -------------------------------------------------------------------------

    def context_menu(self, job_ids: Sequence[str]) -> QMenu:
        """The menu for these jobs, actions enabled by their states (the caller shows it)."""
        jobs = [job for job in (self._state.job(i) for i in job_ids) if job is not None]
        single = jobs[0] if len(jobs) == 1 else None
        menu = QMenu(self)

        def add(text: str, signal: Any, targets: list[Job], tip: str, object_name: str) -> QAction:
            action = menu.addAction(text)
            action.setObjectName(object_name)
            action.setEnabled(bool(targets))
            action.setToolTip(tip)
            ids = [job.id for job in targets]
            action.triggered.connect(lambda _checked=False: [signal.emit(i) for i in ids])
            return action

        add(
            "Cancel",
            self.cancel_requested,
            [j for j in jobs if j.state in ACTIVE_STATES],
            "Stop the run (a pod is deleted); its checkpoints are kept.",
            "cancel",
        )
        add(
            "Resume",
            self.resume_requested,
            [j for j in jobs if j.state in _RESUMABLE],
            "Start it again from its last checkpoint.",
            "resume",
        )
        menu.addSeparator()
        add(
            "Duplicate config into editor",
            self.duplicate_requested,
            [single] if single else [],
            "Load this job's config into the editor.",
            "duplicate",
        )
        add(
            "Open output folder",
            self.open_output_requested,
            [single] if single else [],
            "Show the job's output in the file manager.",
            "open_output",
        )
        add(
            "Show log",
            self.show_log_requested,
            [single] if single else [],
            "Show this job's log.",
            "show_log",
        )
        menu.addSeparator()
        finished = jobs and all(j.is_final for j in jobs)
        add(
            "Delete record",
            self.delete_requested,
            jobs if finished else [],
            "Forget the job and its metrics (cancel an active job first).",
            "delete",
        )
        menu.setToolTipsVisible(True)
        return menu

    def _on_table_custom_context_menu_requested(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if not index.isValid():
            return
        if not self.table.selectionModel().isRowSelected(index.row(), QModelIndex()):
            self.table.selectRow(index.row())
        menu = self.context_menu(self.selected_job_ids())
        menu.exec(self.table.viewport().mapToGlobal(pos))
        menu.deleteLater()

    def _on_table_double_clicked(self, index: QModelIndex) -> None:
        job_id = index.data(JOB_ID_ROLE)
        if job_id:
            self.show_log_requested.emit(job_id)
