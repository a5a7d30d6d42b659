"""The window from 1280×720 to 2560×1440: job table columns hide by priority and come back,
the table grows with the window, the log wraps and names its job (pytest-qt, offscreen, the
real window over a job service that is not started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from app_helpers import run
from PySide6.QtWidgets import QPlainTextEdit, QStyleOptionViewItem
from view_helpers import make_job

from desktop.models import Settings
from desktop.views.job_columns import DROP_ORDER
from desktop.views.job_model import COLUMNS, Column

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.qt_log_level_fail("CRITICAL")


def _fits(table: Any) -> bool:
    """Every shown column is inside the table: nothing behind a sideways scroll bar."""
    return table.horizontalHeader().length() <= table.viewport().width()


def test_columns_hide_at_1280x720_come_back_wider_and_the_table_grows(
    qtbot: Any, qloop: Any, home: Path
) -> None:
    from desktop.views.app import build_window

    window = build_window(settings=Settings(), check_runtime=False)
    qtbot.addWidget(window)
    for i in range(30):
        window.state.job_added(make_job(f"j{i}", f"run-{i}", state="completed"))
    table = window.jobs_view.table
    fitter = window.jobs_view.column_fitter
    window.resize(1280, 720)
    window.show()
    qtbot.waitExposed(window)
    qtbot.waitUntil(lambda: table.isColumnHidden(Column.ELAPSED), timeout=30000)
    small_height = table.viewport().height()
    assert _fits(table)
    shown = fitter.shown()
    assert {Column.NAME, Column.STATE, Column.PROGRESS, Column.LOSS} <= set(shown)
    hidden = [c for c in range(len(COLUMNS)) if c not in shown]
    assert hidden == sorted(DROP_ORDER[: len(hidden)])  # least needed first
    search = window.log_view.search_edit
    assert search.width() >= search.fontMetrics().horizontalAdvance("Find in log…") + 30

    window.resize(2560, 1440)
    qtbot.waitUntil(lambda: not table.isColumnHidden(Column.ELAPSED), timeout=30000)
    assert fitter.shown() == list(range(len(COLUMNS))) and _fits(table)
    qtbot.waitUntil(lambda: table.viewport().height() >= small_height + 150, timeout=30000)
    assert table.viewport().height() // table.verticalHeader().defaultSectionSize() >= 10

    # Chosen by the person: a column unticked in the header's menu stays hidden however wide.
    menu = fitter.column_menu()
    gpu = next(a for a in menu.actions() if a.text() == COLUMNS[Column.GPU])
    gpu.setChecked(False)
    assert table.isColumnHidden(Column.GPU) and not table.isColumnHidden(Column.ELAPSED)
    assert not next(a for a in menu.actions() if a.text() == "Name").isEnabled()
    menu.deleteLater()

    # The log wraps, and says whose it is when two runs are selected.
    assert window.log_view.text.lineWrapMode() == QPlainTextEdit.LineWrapMode.WidgetWidth
    window.jobs_view.select_job_ids(["j3", "j7"])
    qtbot.waitUntil(lambda: window.log_view.job_id == "j7", timeout=30000)
    assert window.log_view.title_label.text() == "Log of run-7 (the last of 2 selected runs)"
    window.jobs_view.select_job_ids(["j3"])
    qtbot.waitUntil(lambda: window.log_view.title_label.text() == "Log of run-3", timeout=30000)
    # The progress text sits beside its bar, not over its fill.
    index = window.jobs_view.proxy.index(0, Column.PROGRESS)
    option = QStyleOptionViewItem()
    option.rect = table.visualRect(index)
    option.fontMetrics = table.fontMetrics()
    bar = window.jobs_view.progress_delegate.bar_option(option, index)
    assert not bar.textVisible and bar.text == "100%"  # completed
    text_width = table.fontMetrics().horizontalAdvance("100%")
    assert bar.rect.right() + text_width <= option.rect.right()

    async def close() -> None:
        window.close()
        await window.ops.close()
        await window.service.close()

    run(qloop, close())
