"""The offer shown when the job database fails its check at start: Repair or Quit.

The dialog only asks and shows progress; the composition root (`desktop.views.app`) runs the
rebuild in a worker thread and closes the dialog when it is done.
"""

from __future__ import annotations

import asyncio

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

__all__ = ["RepairDialog"]


class RepairDialog(QDialog):
    """Names the problem and offers "Repair" (rebuild from the job folders) or "Quit".

    Signals:
        answered(bool): the person chose Repair (True) or Quit / closed the dialog (False).

    Args:
        problem: the store's own sentence (which file, what SQLite found).
        parent: the main window.
    """

    answered = Signal(bool)

    def __init__(self, problem: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("repair_store_dialog")
        self.setWindowTitle("The job database is damaged")
        self.setModal(True)
        self._answer: bool | None = None
        self._working = False
        self.message = QLabel(
            f"{problem}\n\nRepair moves the damaged file aside (it is kept) and rebuilds the "
            "job list, states and metrics from the job folders. Quit changes nothing."
        )
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.repair_button = QPushButton("Repair")
        self.quit_button = QPushButton("Quit")
        self.repair_button.setDefault(True)
        self.repair_button.clicked.connect(self._on_repair_button_clicked)
        self.quit_button.clicked.connect(self._on_quit_button_clicked)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.quit_button)
        buttons.addWidget(self.repair_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        self.resize(560, self.sizeHint().height())

    def text(self) -> str:
        """What the dialog says now."""
        return self.message.text()

    async def ask(self) -> bool:
        """Show the dialog (without a nested event loop) and wait for the answer."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def answered(repair: bool) -> None:
            if not done.done():
                done.set_result(repair)

        self.answered.connect(answered)
        self.open()
        return await done

    def show_working(self) -> None:
        """The rebuild runs: say so and take the buttons away (it cannot be left half done)."""
        self._working = True
        self.message.setText("Rebuilding the job database from the job folders…")
        self.repair_button.setEnabled(False)
        self.quit_button.setEnabled(False)

    def finish(self) -> None:
        """The rebuild ended: close the dialog."""
        self._working = False
        self.accept()

    def _answer_once(self, repair: bool) -> None:
        if self._answer is None:
            self._answer = repair
            self.answered.emit(repair)

    def _on_repair_button_clicked(self) -> None:
        self._answer_once(True)
        self.show_working()

    def _on_quit_button_clicked(self) -> None:
        self._answer_once(False)
        self.accept()

    def reject(self) -> None:
        """Escape is Quit, except while the rebuild runs."""
        if self._working:
            return
        self._answer_once(False)
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Closing the dialog is Quit, except while the rebuild runs."""
        if self._working:
            event.ignore()
            return
        self._answer_once(False)
        super().closeEvent(event)
