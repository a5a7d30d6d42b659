"""Shortcuts, Help → Shortcuts, drag and drop of datasets and configs, recent configs
(pytest-qt, offscreen, the real window over a job service that is not started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import QApplication, QLineEdit
from view_helpers import make_job

from desktop.models import Settings
from desktop.views.window_menus import SHORTCUTS, show_shortcuts
from trainer.config import TrainingConfig

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.qt_log_level_fail("CRITICAL")


def _drop(window: Any, path: Path) -> bool:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    where = QPoint(window.width() // 2, window.height() // 2)
    enter = QDragEnterEvent(
        where,
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(window, enter)
    if not enter.isAccepted():
        return False
    drop = QDropEvent(
        QPointF(where),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(window, drop)
    return drop.isAccepted()


def test_shortcuts_drops_and_recent_configs(
    qtbot: Any, qloop: Any, home: Path, tmp_path: Path
) -> None:
    from desktop.views.app import build_window

    window = build_window(settings=Settings(), check_runtime=False)
    qtbot.addWidget(window)
    for i in range(3):
        window.state.job_added(make_job(f"j{i}", f"run-{i}", state="completed"))
    window.resize(1280, 720)
    window.show()
    qtbot.waitExposed(window)

    # Every listed shortcut is a real action of the window.
    keys = {
        action.shortcut().toString()
        for action in window.findChildren(QAction)
        if not action.shortcut().isEmpty()
    }
    for what, shortcut in SHORTCUTS:
        assert QKeySequence(shortcut).toString() in keys, what
    dialog = show_shortcuts(window)
    listed = [dialog.table.item(r, 0).text() for r in range(dialog.table.rowCount())]
    assert listed == [what for what, _keys in SHORTCUTS]
    dialog.close()
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    assert [a.text() for a in help_menu.actions()] == ["Shortcuts…"]

    # Next / previous job move the table's selection; Find puts the cursor in the log search.
    next_job = window.findChild(QAction, "next_job")
    next_job.trigger()
    assert window.state.selected_job_ids == ("j0",)
    next_job.trigger()
    assert window.state.selected_job_ids == ("j1",)
    window.findChild(QAction, "previous_job").trigger()
    assert window.state.selected_job_ids == ("j0",)
    window.activateWindow()
    window.findChild(QAction, "find_shortcut").trigger()
    qtbot.waitUntil(lambda: window.log_view.search_edit.hasFocus(), timeout=30000)

    # A dropped JSONL file becomes the dataset, the rest of the config untouched.
    window.editor.set_config(
        TrainingConfig.model_validate(
            {
                "name": "before",
                "model": {"name_or_path": "org/tiny-model"},
                "dataset": {"path": "data/train.jsonl"},
                "lora": {"r": 24},
            }
        )
    )
    data = tmp_path / "my data.jsonl"
    data.write_text('{"text": "hello"}\n', encoding="utf-8")
    assert _drop(window, data)
    edit = window.editor.field_widget("dataset.path")
    assert isinstance(edit, QLineEdit) and edit.text() == str(data)
    assert window.editor.config().dataset.path == str(data)
    assert window.editor.config().name == "before" and window.editor.config().lora.r == 24
    assert not _drop(window, tmp_path / "notes.docx")  # not ours: refused
    assert window.editor.config().dataset.path == str(data)

    # A dropped config is opened, and joins the recent configs (File menu).
    config = window.editor.config().model_copy(update={"name": "dropped-run"})
    path = tmp_path / "dropped.yaml"

    async def body() -> None:
        from desktop.views import operations

        operations.export_config(config, str(path))
        assert _drop(window, path)
        await until(lambda: window.editor.config().name == "dropped-run", 30)
        assert window.recent_configs.paths() == [str(path.resolve())]
        file_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&File")
        recent = next(a.menu() for a in file_menu.actions() if a.text() == "Recent configs")
        recent.aboutToShow.emit()
        assert [a.text() for a in recent.actions()] == [str(path.resolve())]
        window.close()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
