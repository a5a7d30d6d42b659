"""The main window's toolbar:

    [Presets ▾] [Open…] [Save…] [Export TRL YAML…] Target [Local ▾] fit ● [Settings…] [Start ▶]

Light on purpose (Qt and the memory badge only): the window's first paint builds it. The
window connects its actions; the presets and targets are filled once the editor exists.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QComboBox, QLabel, QMenu, QPushButton, QToolBar, QToolButton, QWidget

from desktop.views.memory_badge import MemoryFitBadge

__all__ = ["MainToolBar"]

_START_STYLE = (
    "QPushButton { background: #2e7d32; color: white; font-weight: bold; "
    "padding: 4px 14px; border-radius: 3px; }"
    "QPushButton:disabled { background: #b9c7b9; color: #eeeeee; }"
)


class MainToolBar(QToolBar):
    """The toolbar's widgets and actions (not connected: the window wires them).

    Attributes:
        presets_menu: one action per preset (filled by the window's config actions).
        open_action, save_action, export_action, settings_action: the file and settings
            actions.
        target_combo: where the job runs (mirrors the editor's target).
        fit_badge: the memory-fit badge with its GPU choice.
        start_button: Start (disabled until the config is valid and the demo written).
    """

    def __init__(self, parent: QWidget) -> None:
        super().__init__("Main", parent)
        self.setObjectName("main_toolbar")
        self.setMovable(False)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)

        self.presets_menu = QMenu("Presets", parent)
        self.presets_menu.setToolTipsVisible(True)
        presets_button = QToolButton()
        presets_button.setObjectName("presets_button")
        presets_button.setText("Presets")
        presets_button.setMenu(self.presets_menu)
        presets_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.addWidget(presets_button)

        self.open_action = self._action("Open…", "Load a training config (JSON or YAML)")
        self.open_action.setShortcut(QKeySequence.StandardKey.Open)
        self.save_action = self._action("Save…", "Save the config as JSON or YAML")
        self.save_action.setShortcut(QKeySequence.StandardKey.Save)
        self.export_action = self._action(
            "Export TRL YAML…",
            "Write a `trl sft --config` file with the same effective hyperparameters",
        )
        self.addSeparator()

        self.addWidget(QLabel(" Target "))
        self.target_combo = QComboBox()
        self.target_combo.setObjectName("toolbar_target")
        self.target_combo.setToolTip("Where the job runs")
        self.target_combo.setMinimumContentsLength(10)
        self.addWidget(self.target_combo)
        self.addSeparator()
        self.fit_badge = MemoryFitBadge(parent=parent)
        self.addWidget(self.fit_badge)

        spacer = QWidget()
        spacer.setSizePolicy(spacer.sizePolicy().Policy.Expanding, spacer.sizePolicy().Policy.Fixed)
        self.addWidget(spacer)
        self.settings_action = self._action("Settings…", "")
        self.settings_action.setShortcut(QKeySequence.StandardKey.Preferences)
        self.start_button = QPushButton("Start ▶")
        self.start_button.setObjectName("start_button")
        self.start_button.setDefault(True)
        self.start_button.setMinimumWidth(96)
        self.start_button.setEnabled(False)
        self.start_button.setToolTip("Loading …")
        self.start_button.setStyleSheet(_START_STYLE)
        self.addWidget(self.start_button)

    def show_start_state(self, problems: list[str], pending: bool) -> None:
        """Enable Start only with no problem left and the demo written; its tooltip says why.

        Args:
            problems: every current problem of the config, one sentence each.
            pending: the demo model is still being written.
        """
        self.start_button.setEnabled(not problems and not pending)
        if pending:
            tip = "Writing the demo model first …"
        elif problems:
            tip = "Start is disabled until the config is fixed:\n" + "\n".join(
                f"• {problem}" for problem in problems
            )
        else:
            tip = "Check the config and data, then train"
        self.start_button.setToolTip(tip)

    def _action(self, text: str, tip: str) -> QAction:
        action = QAction(text, self.parent())
        if tip:
            action.setToolTip(tip)
        self.addAction(action)
        return action
