"""The window's menus, shortcuts, drag and drop, recent configs and theme.

File: Open, Save, Recent configs, Settings. Jobs: Start, Cancel, next and previous job. Help:
Shortcuts (a dialog listing every shortcut below). A dataset dropped on the window (.jsonl,
.csv, .parquet, .txt) becomes the config's dataset path, as if typed; a config (.json, .yaml,
.yml) is opened. Recent configs are the last eight opened, saved or dropped, kept in the
window's state file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLineEdit,
    QMenu,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.views import operations
from desktop.views.theme import ThemeFollower

if TYPE_CHECKING:
    from desktop.views.main_window import MainWindow

__all__ = [
    "CONFIG_SUFFIXES",
    "DATASET_SUFFIXES",
    "SHORTCUTS",
    "RecentConfigs",
    "ShortcutsDialog",
    "install_window_menus",
]

DATASET_SUFFIXES = frozenset({".jsonl", ".csv", ".parquet", ".txt"})
CONFIG_SUFFIXES = frozenset({".json", ".yaml", ".yml"})
_RECENT_KEY = "recent_configs"
_RECENT_MAX = 8

SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("Start the config", "Ctrl+Return"),
    ("Cancel the selected jobs", "Ctrl+."),
    ("Settings", "Ctrl+,"),
    ("Find in the log", "Ctrl+F"),
    ("Next job", "Alt+Down"),
    ("Previous job", "Alt+Up"),
    ("Open a config", "Ctrl+O"),
    ("Save the config", "Ctrl+S"),
    ("Shortcuts", "F1"),
)
"""(what, keys), as listed in Help → Shortcuts."""


class RecentConfigs:
    """The last configs used, newest first, in a QSettings (the window's state file)."""

    def __init__(self, qsettings: Any) -> None:
        self._qsettings = qsettings

    def paths(self) -> list[str]:
        """Newest first; paths that no longer exist are left out."""
        value = self._qsettings.value(_RECENT_KEY, [])
        paths = [value] if isinstance(value, str) else list(value or [])
        return [p for p in paths if Path(p).is_file()]

    def add(self, path: str) -> None:
        """Put `path` first (once)."""
        path = str(Path(path).resolve())
        paths = [path, *(p for p in self.paths() if p != path)][:_RECENT_MAX]
        self._qsettings.setValue(_RECENT_KEY, paths)
        self._qsettings.sync()


class ShortcutsDialog(QDialog):
    """Help → Shortcuts: every shortcut of the window, in a table."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("shortcuts_dialog")
        self.setWindowTitle("Shortcuts")
        self.table = QTableWidget(len(SHORTCUTS), 2, self)
        self.table.setHorizontalHeaderLabels(["Action", "Keys"])
        self.table.verticalHeader().hide()
        for row, (what, keys) in enumerate(SHORTCUTS):
            native = QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText)
            self.table.setItem(row, 0, QTableWidgetItem(what))
            self.table.setItem(row, 1, QTableWidgetItem(native))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(380, 340)


class _DropFilter(QObject):
    """Takes files dropped anywhere on the window."""

    def __init__(self, window: MainWindow, on_path: Callable[[str], bool]) -> None:
        super().__init__(window)
        self._on_path = on_path

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Accept a drag of one local file we know; on drop, use it."""
        if isinstance(event, QDragEnterEvent):
            if _dropped_path(event) is not None:
                event.acceptProposedAction()
                return True
        elif isinstance(event, QDropEvent):
            path = _dropped_path(event)
            if path is not None and self._on_path(path):
                event.acceptProposedAction()
                return True
        return False


def _dropped_path(event: QDropEvent) -> str | None:
    urls = event.mimeData().urls()
    if len(urls) != 1 or not urls[0].isLocalFile():
        return None
    path = urls[0].toLocalFile()
    return path if Path(path).suffix.lower() in DATASET_SUFFIXES | CONFIG_SUFFIXES else None


def install_window_menus(window: MainWindow) -> None:
    """Give the window its menus, shortcuts, drop target and recent configs (at `ready`)."""
    recent = RecentConfigs(window.qsettings)
    window.recent_configs = recent  # type: ignore[attr-defined]
    bar = window.menuBar()
    toolbar = window.toolbar
    toolbar.settings_action.setShortcut(QKeySequence("Ctrl+,"))

    file_menu = bar.addMenu("&File")
    file_menu.addAction(toolbar.open_action)
    recent_menu = file_menu.addMenu("Recent configs")
    recent_menu.setObjectName("recent_menu")
    file_menu.addAction(toolbar.save_action)
    file_menu.addSeparator()
    file_menu.addAction(toolbar.settings_action)

    def fill_recent() -> None:
        recent_menu.clear()
        paths = recent.paths()
        for path in paths:
            action = recent_menu.addAction(path)
            action.triggered.connect(lambda _c=False, p=path: open_config_path(window, p))
        if not paths:
            recent_menu.addAction("(none yet)").setEnabled(False)

    recent_menu.aboutToShow.connect(fill_recent)
    window.config_actions.config_file_used.connect(recent.add)

    jobs_menu = bar.addMenu("&Jobs")

    def add(menu: QMenu, text: str, keys: str, slot: Callable[[], Any], name: str) -> QAction:
        action = menu.addAction(text)
        action.setObjectName(name)
        action.setShortcut(QKeySequence(keys))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(lambda _c=False: slot())
        return action

    add(jobs_menu, "Start", "Ctrl+Return", window.start_job, "start_shortcut")
    add(jobs_menu, "Cancel selected", "Ctrl+.", lambda: cancel_selected(window), "cancel_shortcut")
    add(jobs_menu, "Next job", "Alt+Down", lambda: step_job(window, 1), "next_job")
    add(jobs_menu, "Previous job", "Alt+Up", lambda: step_job(window, -1), "previous_job")
    add(jobs_menu, "Find in log", "Ctrl+F", lambda: find_in_log(window), "find_shortcut")
    help_menu = bar.addMenu("&Help")
    add(help_menu, "Shortcuts…", "F1", lambda: show_shortcuts(window), "shortcuts_action")

    window.theme = ThemeFollower(window.chart, window)
    window.theme.apply(getattr(window.settings, "theme", "system"))

    window.setAcceptDrops(True)
    window.installEventFilter(_DropFilter(window, lambda p: drop_path(window, p)))


def cancel_selected(window: MainWindow) -> None:
    """Cancel every selected job that is still active."""
    for job_id in window.state.selected_job_ids:
        job = window.state.job(job_id)
        if job is not None and not job.is_final:
            window.cancel_job(job_id)


def step_job(window: MainWindow, delta: int) -> None:
    """Select the next (`delta` 1) or previous (-1) job in the table, as shown."""
    table = window.jobs_view.table
    rows = table.model().rowCount()
    if rows == 0:
        return
    current = table.currentIndex().row()
    row = 0 if current < 0 else min(max(current + delta, 0), rows - 1)
    table.selectRow(row)
    table.setFocus()


def find_in_log(window: MainWindow) -> None:
    """Put the cursor in the log's search box."""
    search = window.log_view.search_edit
    search.setFocus(Qt.FocusReason.ShortcutFocusReason)
    search.selectAll()


def show_shortcuts(window: MainWindow) -> ShortcutsDialog:
    """Open Help → Shortcuts."""
    dialog = ShortcutsDialog(window)
    dialog.finished.connect(dialog.deleteLater)
    dialog.open()
    return dialog


def open_config_path(window: MainWindow, path: str) -> None:
    """Load a config file into the editor (in the background; errors name field and line)."""

    def done(config: Any) -> None:
        window.editor.set_config(config)
        window.config_actions.config_file_used.emit(path)
        window.bus.info(f"opened {path}")

    window.ops.run_in_thread("open the config", operations.import_config, path, on_done=done)


def drop_path(window: MainWindow, path: str) -> bool:
    """A file dropped on the window: a dataset sets the dataset path (as if typed, the rest of
    the config untouched); a config is opened. False for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in DATASET_SUFFIXES:
        edit = window.editor.field_widget("dataset.path")
        assert isinstance(edit, QLineEdit)
        edit.setText(path)
        edit.textEdited.emit(path)  # what typing emits: the editor validates and watches it
        window.bus.info(f"dataset set to {path}")
        return True
    if suffix in CONFIG_SUFFIXES:
        open_config_path(window, path)
        return True
    return False
