"""The job table's columns at any width: the ones that do not fit hide, least needed first,
and come back when the table widens; the person chooses which columns may show at all (the
header's context menu).

A 1280×720 window leaves the table some 800 px: without this, Elapsed, $ and GPU sat past its
right edge behind a scroll bar. Name and State stretch, down to a minimum each.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, Signal
from PySide6.QtWidgets import QHeaderView, QMenu, QTableView

from desktop.views.job_model import COLUMNS, Column

__all__ = ["DROP_ORDER", "STRETCH_MINIMUM_PX", "ColumnFitter"]

DROP_ORDER: tuple[int, ...] = (
    Column.ELAPSED,
    Column.GPU,
    Column.TARGET,
    Column.EVAL_LOSS,
    Column.ETA,
    Column.COST,
    Column.STEP,
    Column.LOSS,
)
"""Hidden first to last when the table is too narrow; Name, State and Progress always show."""

STRETCH_MINIMUM_PX = {Column.NAME: 140, Column.STATE: 120}
"""The narrowest the stretching columns may be before another column hides."""


class ColumnFitter(QObject):
    """Hides the columns that do not fit a table's width (see the module docstring).

    Signals:
        columns_changed(): the set of shown columns changed.
    """

    columns_changed = Signal()

    def __init__(self, table: QTableView, widths: dict[int, int]) -> None:
        super().__init__(table)
        self._table = table
        self._widths = dict(widths)
        self._chosen: set[int] = set(range(len(COLUMNS)))
        header = table.horizontalHeader()
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header.customContextMenuRequested.connect(self._on_header_context_menu_requested)
        header.sectionResized.connect(self._on_header_section_resized)
        table.viewport().installEventFilter(self)

    @property
    def chosen(self) -> frozenset[int]:
        """The columns the person lets show (when they fit)."""
        return frozenset(self._chosen)

    def set_chosen(self, columns: Iterable[int]) -> None:
        """Let only these columns show (Name always does)."""
        self._chosen = {c for c in columns if 0 <= c < len(COLUMNS)} | {Column.NAME}
        self.fit()

    def shown(self) -> list[int]:
        """The columns shown now, left to right."""
        return [c for c in range(len(COLUMNS)) if not self._table.isColumnHidden(c)]

    def fit(self) -> None:
        """Show the chosen columns that fit the table's width, hiding by DROP_ORDER."""
        available = self._table.viewport().width()
        shown = set(self._chosen)

        def needed() -> int:
            return sum(STRETCH_MINIMUM_PX.get(c, self._widths.get(c, 60)) for c in shown)

        for column in DROP_ORDER:
            if needed() <= available:
                break
            shown.discard(column)
        changed = False
        for column in range(len(COLUMNS)):
            hide = column not in shown
            if self._table.isColumnHidden(column) != hide:
                self._table.setColumnHidden(column, hide)
                changed = True
        if changed:
            self.columns_changed.emit()

    def column_menu(self) -> QMenu:
        """A menu of checkable columns: which may show (the caller shows it)."""
        menu = QMenu(self._table)
        menu.setObjectName("column_menu")
        for column, title in enumerate(COLUMNS):
            action = menu.addAction(title)
            action.setCheckable(True)
            action.setChecked(column in self._chosen)
            action.setEnabled(column != Column.NAME)
            if column in self._chosen and self._table.isColumnHidden(column):
                action.setToolTip("Hidden for now: the table is too narrow")
            action.toggled.connect(lambda on, c=column: self._on_column_toggled(c, on))
        menu.setToolTipsVisible(True)
        return menu

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Fit again when the table's viewport changes width."""
        if event.type() == QEvent.Type.Resize:
            self.fit()
        return False

    def _on_column_toggled(self, column: int, on: bool) -> None:
        self.set_chosen(self._chosen | {column} if on else self._chosen - {column})

    def _on_header_section_resized(self, column: int, _old: int, new: int) -> None:
        header = self._table.horizontalHeader()
        if header.sectionResizeMode(column) == QHeaderView.ResizeMode.Interactive and new > 0:
            self._widths[column] = new  # widened by hand: that is its width now

    def _on_header_context_menu_requested(self, pos: QPoint) -> None:
        menu = self.column_menu()
        menu.exec(self._table.horizontalHeader().mapToGlobal(pos))
        menu.deleteLater()
