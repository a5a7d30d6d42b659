"""The runs view: the selected runs side by side, one row each, with their final and best
metrics and only the config fields in which they differ; sortable by any column, saved as
CSV, and one click overlays their curves in the chart.

It follows the job table's selection (AppState); what it compares is in runs_compare.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.views.chart.export import save_with_dialog
from desktop.views.runs_compare import (
    METRIC_COLUMNS,
    MISSING,
    RunRow,
    differing_fields,
    run_rows,
    write_rows_csv,
)
from desktop.views.state import AppState

__all__ = ["FIXED_COLUMNS", "QtRunsCompareModel", "RunsView", "chart_tabs"]

FIXED_COLUMNS: tuple[str, ...] = ("run", "state", "step", *(c.title for c in METRIC_COLUMNS))
"""The columns every comparison has; the differing config fields stand between the first
(the run) and the others, where a narrow table still shows them."""

_Index = QModelIndex | QPersistentModelIndex


def _display(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return str(value)


class QtRunsCompareModel(QAbstractTableModel):
    """A thin adapter: one row per run: its name, the differing config fields, then the rest
    of FIXED_COLUMNS (state, step, metrics).

    DisplayRole is the text shown; Qt.UserRole the value (numbers stay numbers, for sorting
    and the CSV).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[RunRow] = []
        self._fields: list[str] = []

    @property
    def fields(self) -> list[str]:
        """The config fields shown: those in which the runs differ."""
        return list(self._fields)

    def set_rows(self, rows: list[RunRow]) -> None:
        """Compare these runs (a reset: the columns depend on the runs)."""
        self.beginResetModel()
        self._rows = rows
        self._fields = differing_fields([row.fields for row in rows])
        self.endResetModel()

    def header(self) -> list[str]:
        """The column titles."""
        return [FIXED_COLUMNS[0], *self._fields, *FIXED_COLUMNS[1:]]

    def value(self, row: int, column: int) -> Any:
        """The value of a cell (None where the run has none)."""
        run = self._rows[row]
        if column == 0:
            return run.name
        if column <= len(self._fields):
            return run.fields.get(self._fields[column - 1])
        rest: tuple[Any, ...] = (run.state, run.step, *run.metrics)
        return rest[column - 1 - len(self._fields)]

    def job_id(self, row: int) -> str:
        """The job of a row."""
        return self._rows[row].job_id

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        """Runs (a table: no children)."""
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        """Fixed columns and differing fields."""
        return 0 if parent.isValid() else len(FIXED_COLUMNS) + len(self._fields)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Text, the raw value (UserRole) or a tooltip naming the field."""
        if not index.isValid():
            return None
        value = self.value(index.row(), index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return _display(value)
        if role == Qt.ItemDataRole.UserRole:
            return value
        if role == Qt.ItemDataRole.TextAlignmentRole and isinstance(value, int | float):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        """Column titles; rows are unnumbered."""
        if orientation == Qt.Orientation.Horizontal and role in (
            Qt.ItemDataRole.DisplayRole,
            Qt.ItemDataRole.ToolTipRole,
        ):
            header = self.header()
            return header[section] if 0 <= section < len(header) else None
        return None


class _SortProxy(QSortFilterProxyModel):
    """Sorts by value: numbers as numbers, text as text, a missing value always last."""

    def lessThan(self, left: _Index, right: _Index) -> bool:
        """Numbers before text, missing after both (whatever the order)."""
        a = left.data(Qt.ItemDataRole.UserRole)
        b = right.data(Qt.ItemDataRole.UserRole)
        ascending = self.sortOrder() == Qt.SortOrder.AscendingOrder
        if a is None and b is None:
            return False
        if a is None or b is None:
            return (a is not None) == ascending  # missing sinks in both orders
        key_a = (0, float(a), "") if isinstance(a, int | float) else (1, 0.0, str(a))
        key_b = (0, float(b), "") if isinstance(b, int | float) else (1, 0.0, str(b))
        return key_a < key_b


class RunsView(QWidget):
    """The selected runs compared (see the module docstring).

    Signals:
        overlay_requested(list): the "Overlay curves" button: these job ids, in view order.
    """

    overlay_requested = Signal(list)

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._job_ids: tuple[str, ...] = ()
        self.model = QtRunsCompareModel(self)
        self.proxy = _SortProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView(self)
        self.table.setObjectName("runs_table")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.summary_label = QLabel(self)
        self.overlay_button = QPushButton("Overlay curves", self)
        self.overlay_button.setToolTip("Show these runs' curves together in the chart")
        self.overlay_button.clicked.connect(self._on_overlay_button_clicked)
        self.csv_button = QPushButton("CSV…", self)
        self.csv_button.setToolTip("Save this table as a CSV, in the order shown")
        self.csv_button.clicked.connect(self._on_csv_button_clicked)
        top = QHBoxLayout()
        top.setContentsMargins(4, 2, 4, 0)
        top.addWidget(self.summary_label, 1)
        top.addWidget(self.overlay_button)
        top.addWidget(self.csv_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)

        # Metrics arrive many times a second: refresh at most a few times a second.
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self.refresh)
        state.selection_changed.connect(self.set_job_ids)
        state.metrics_appended.connect(self._on_state_job_touched)
        state.history_changed.connect(self._on_state_job_touched)
        state.row_changed.connect(lambda row: self._on_state_job_touched(state.job_at(row).id))
        state.row_removed.connect(lambda _row: self.set_job_ids(self._job_ids))
        self.set_job_ids(list(state.selected_job_ids))

    @property
    def job_ids(self) -> tuple[str, ...]:
        """The runs compared."""
        return self._job_ids

    def set_job_ids(self, job_ids: list[str] | tuple[str, ...]) -> None:
        """Compare these runs (the table's selection, by default)."""
        self._job_ids = tuple(j for j in dict.fromkeys(job_ids) if self._state.job(j))
        self.refresh()

    def refresh(self) -> None:
        """Read the runs' configs and metrics again."""
        self._timer.stop()
        jobs = [job for j in self._job_ids if (job := self._state.job(j)) is not None]

        def values(job_id: str, name: str) -> Any:
            series = self._state.series(job_id, name)
            return None if series is None else series.value

        self.model.set_rows(run_rows(jobs, values))
        fields = len(self.model.fields)
        if len(jobs) < 2:
            self.summary_label.setText("Select two or more runs in the job table to compare them.")
        else:
            self.summary_label.setText(
                f"{len(jobs)} runs · {fields} differing config field{'s' if fields != 1 else ''}"
            )
        self.overlay_button.setEnabled(len(jobs) >= 2)

    def rows_shown(self) -> list[list[Any]]:
        """The table's values in the order shown (sorted as the header says)."""
        return [
            [
                self.proxy.index(r, c).data(Qt.ItemDataRole.UserRole)
                for c in range(len(self.model.header()))
            ]
            for r in range(self.proxy.rowCount())
        ]

    def export_csv(self, path: str | Path) -> Path:
        """Save the table as shown (sorted) as a CSV; returns the path written."""
        return write_rows_csv(path, self.model.header(), self.rows_shown())

    def _on_overlay_button_clicked(self) -> None:
        rows = [
            self.proxy.mapToSource(self.proxy.index(r, 0)).row()
            for r in range(self.proxy.rowCount())
        ]
        self.overlay_requested.emit([self.model.job_id(r) for r in rows])

    def _on_csv_button_clicked(self) -> None:
        save_with_dialog(self, "Save the comparison", "runs.csv", "CSV (*.csv)", self.export_csv)

    def _on_state_job_touched(self, job_id: str) -> None:
        if job_id in self._job_ids and not self._timer.isActive():
            self._timer.start()


def chart_tabs(state: AppState, chart: QWidget, runs_view: RunsView) -> QTabWidget:
    """The chart and the runs view as tabs; "Overlay curves" selects the runs (the chart
    follows the selection) and brings the chart to the front."""
    tabs = QTabWidget()
    tabs.setObjectName("chart_tabs")
    tabs.setDocumentMode(True)
    tabs.addTab(chart, "Chart")
    tabs.addTab(runs_view, "Compare runs")

    def overlay(job_ids: list[str]) -> None:
        state.set_selected_job_ids(job_ids)
        tabs.setCurrentWidget(chart)

    runs_view.overlay_requested.connect(overlay)
    return tabs
