"""The job table widget: the table over the item models of `job_model`, its progress
delegate, filters and context menu.

`JobTableView` emits what the user asked for
(cancel, resume, ...) as signals carrying job ids; the main window wires them to operations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from PySide6.QtCore import (
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    Qt,
    Signal,
)
from PySide6.QtGui import QAction, QPainter, QPalette
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
from desktop.views.job_columns import ColumnFitter
from desktop.views.job_model import (
    COLUMNS,
    ENDED_ROLE,
    JOB_ID_ROLE,
    PROGRESS_ROLE,
    SORT_ROLE,
    STATE_COLORS,
    Column,
    JobFilterProxy,
    QtJobTableModel,
    format_duration,
)
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
    "JobTableView",
    "ProgressDelegate",
    "QtJobTableModel",
    "StateDelegate",
    "format_duration",
]

ModelIndex = QModelIndex | QPersistentModelIndex

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


class ProgressDelegate(QStyledItemDelegate):
    """Paints `PROGRESS_ROLE` as a progress bar; cells without progress paint as text.

    The bar of a job that ended (`ENDED_ROLE`) is painted disabled, grey: only a live job's bar
    looks live.
    """

    def bar_option(
        self, option: QStyleOptionViewItem, index: ModelIndex
    ) -> QStyleOptionProgressBar:
        """The progress bar drawn in a cell (its value, text and enabled or ended state)."""
        value = int(index.data(PROGRESS_ROLE) or 0)
        ended = bool(index.data(ENDED_ROLE))
        bar = QStyleOptionProgressBar()
        # The text goes beside the bar, not over its fill (where some styles paint it in
        # the fill's own colour): the bar leaves room for "100%" on its right.
        text_width = option.fontMetrics.horizontalAdvance("100%") + 8
        bar.rect = option.rect.adjusted(3, 3, -3 - text_width, -3)
        bar.minimum = 0
        bar.maximum = 100
        bar.progress = value
        bar.text = f"{value}%"
        bar.textVisible = False
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        bar.state = option.state | QStyle.StateFlag.State_Horizontal
        if ended:
            bar.state &= ~QStyle.StateFlag.State_Enabled
        return bar

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
        bar = self.bar_option(option, index)
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, widget)
        text_rect = option.rect.adjusted(bar.rect.right() - option.rect.left() + 4, 0, -3, 0)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        painter.save()
        painter.setPen(option.palette.color(role))
        painter.drawText(text_rect, int(Qt.AlignmentFlag.AlignVCenter), bar.text)
        painter.restore()


class StateDelegate(QStyledItemDelegate):
    """The state cell, elided in the middle: a failed job's reason usually ends with the cause
    ("… (killed by SIGKILL)"), which an end elision would hide."""

    def initStyleOption(self, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        """The usual option, eliding in the middle."""
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideMiddle


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
        export_requested(str): merge a completed job and/or push it to the Hub.
    """

    cancel_requested = Signal(str)
    resume_requested = Signal(str)
    duplicate_requested = Signal(str)
    open_output_requested = Signal(str)
    show_log_requested = Signal(str)
    delete_requested = Signal(str)
    export_requested = Signal(str)

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
        header = self.table.horizontalHeader()
        # Columns that do not fit hide, least needed first; the header's menu chooses.
        self.column_fitter = ColumnFitter(
            self.table, {c: header.sectionSize(c) for c in range(len(COLUMNS))}
        )
        self.progress_delegate = ProgressDelegate(self.table)
        self.table.setItemDelegateForColumn(Column.PROGRESS, self.progress_delegate)
        self._state_delegate = StateDelegate(self.table)
        self.table.setItemDelegateForColumn(Column.STATE, self._state_delegate)
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
            if column in (Column.NAME, Column.STATE):  # the state holds a failure's reason
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
            "Export…",
            self.export_requested,
            [single] if single and single.state is JobState.COMPLETED else [],
            "Merge the adapter into the base model and/or push it to the Hub.",
            "export",
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
