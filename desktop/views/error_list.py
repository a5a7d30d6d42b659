"""Every current problem of the config in one place, under the toolbar next to Start.

One line per problem, each a link-like button that asks for its field to be focused; the list
hides itself when there is nothing to fix, so no stale line outlives the error it described.
Light (Qt only): the window builds it with its skeleton.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QLabel, QPushButton, QVBoxLayout, QWidget

__all__ = ["ErrorList"]

_FRAME_STYLE = (
    "QFrame#error_list { background: #fdf0ef; border: 1px solid #e3a19c; border-radius: 3px; }"
)
_ENTRY_STYLE = (
    "QPushButton { color: #b3261e; text-align: left; border: none; padding: 1px 4px; }"
    "QPushButton:hover { text-decoration: underline; }"
)


class ErrorList(QFrame):
    """The config's problems, each a button that leads to its field.

    Signals:
        field_requested(str): an entry was clicked; the field path it leads to ("" for a
            problem that names no field).
    """

    field_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("error_list")
        self.setStyleSheet(_FRAME_STYLE)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(6, 4, 6, 4)
        self._layout.setSpacing(0)
        self.header = QLabel()
        self.header.setObjectName("error_list_header")
        self._layout.addWidget(self.header)
        self._buttons: list[QPushButton] = []
        self.setVisible(False)

    def set_problems(self, problems: Sequence[tuple[str, str]]) -> None:
        """Show `problems` as (field path or "", sentence) pairs; none hides the list."""
        if [(b.property("path"), b.text()) for b in self._buttons] == list(problems):
            return
        for button in self._buttons:
            self._layout.removeWidget(button)
            button.deleteLater()
        self._buttons = []
        for path, text in problems:
            button = QPushButton(text)
            button.setObjectName("error_entry")
            button.setProperty("path", path)
            button.setStyleSheet(_ENTRY_STYLE)
            button.setFlat(True)
            button.setToolTip(f"Go to the field (config key: {path})" if path else "")
            button.clicked.connect(lambda _c=False, p=path: self.field_requested.emit(p))
            self._layout.addWidget(button)
            self._buttons.append(button)
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        self.header.setText(f"<b>Start is disabled:</b> fix {count} {noun} (click one to go there)")
        self.setVisible(bool(problems))

    def entries(self) -> list[str]:
        """The sentences shown, in order."""
        return [button.text() for button in self._buttons]

    def entry_button(self, index: int) -> QPushButton:
        """The button of the entry at `index`."""
        return self._buttons[index]
