"""The main window's status bar: messages from the bus, the offline mode and the trainer
runtime's state (from `trainer doctor`) as permanent labels.

Light on purpose (Qt only): the window's first paint builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

if TYPE_CHECKING:
    from trainer.reports import DoctorReport

__all__ = ["WindowStatusBar"]


class WindowStatusBar(QStatusBar):
    """Messages on the left; `offline_label` and `runtime_label` on the right.

    Attributes:
        offline_label: "● offline" or "● online".
        runtime_label: "runtime: torch …, CUDA …" once checked, or why it is not usable.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.offline_label = QLabel()
        self.offline_label.setObjectName("offline_status")
        self.runtime_label = QLabel("runtime: checking …")
        self.runtime_label.setObjectName("runtime_status")
        self.addPermanentWidget(self.offline_label)
        self.addPermanentWidget(self.runtime_label)

    def show_offline(self, offline: bool) -> None:
        """Show the offline mode."""
        if offline:
            self.offline_label.setText("<span style='color:#e0a800'>●</span> offline")
            self.offline_label.setToolTip("Offline mode: no network; local jobs only.")
        else:
            self.offline_label.setText("<span style='color:#2e9e44'>●</span> online")
            self.offline_label.setToolTip("Online. Offline mode is in Settings (or --offline).")

    def show_runtime(self, report: DoctorReport) -> str:
        """Show the doctor's first line (problems and warnings in the tooltip); returns it."""
        from desktop.views.settings_dialog import describe_doctor

        text = describe_doctor(report).splitlines()[0]
        self.runtime_label.setText(f"runtime: {text}")
        self.runtime_label.setToolTip("\n".join([*report.problems, *report.warnings]))
        return text

    def show_runtime_error(self, message: str) -> None:
        """The runtime could not be checked: say so, the reason in the tooltip."""
        self.runtime_label.setText("runtime: <span style='color:#c9302c'>not usable</span>")
        self.runtime_label.setToolTip(message)

    def show_error(self, message: str) -> None:
        """An expected error: its first line for 15 s, the whole message in the tooltip."""
        first = message.strip().splitlines()[0] if message.strip() else message
        self.showMessage(f"⚠ {first}", 15_000)
        self.setToolTip(message)

    def show_info(self, message: str) -> None:
        """A status message for 8 s."""
        self.showMessage(message, 8_000)
