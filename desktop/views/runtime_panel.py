"""Settings → Trainer runtime: the current runtime and its verdict, and the buttons that change it.

Use existing… (a Python or venv folder, checked with `trainer doctor`), Set up (a venv in the
data folder made by uv: the plan's disk space first, then a progress bar, the live log and
Cancel), Remove (the venv the app made). The work runs through `operations` in worker threads;
a setup's lines arrive from its thread through queued signals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.views import operations
from desktop.views.latest_call import latest_call

if TYPE_CHECKING:
    from desktop.views.operations import Operations

__all__ = ["RuntimePanel"]

_RED = "color: #c9302c;"
_GREEN = "color: #2e9e44;"
_KINDS = {
    "managed": "set up by this app",
    "own": "your own Python",
    "app": "the app's own Python",
    "none": "not set up",
}


class RuntimePanel(QWidget):
    """The trainer runtime manager of the Settings dialog.

    Args:
        ops: runs the checks, the setup and the removal in the background.
        python: returns the runtime the dialog names now ("" for none).
        offline: returns whether the dialog's offline mode is on.
        picker: returns a chosen interpreter or venv folder (default: a file dialog).
        confirm: asks whether to delete a folder (default: a message box).
        parent: the parent widget.

    Signals:
        runtime_chosen(str): a runtime was set up or picked and passed doctor (its Python).
        runtime_removed(str): the app's venv was deleted (its folder).
        status_shown(str): the verdict line now shown.
        setup_finished(str): a setup ended: "ready", or the sentence why not (cancelled too).
    """

    runtime_chosen = Signal(str)
    runtime_removed = Signal(str)
    status_shown = Signal(str)
    setup_finished = Signal(str)
    # From the setup's worker thread; queued to this (the GUI) thread.
    _line_received = Signal(str)
    _progress_changed = Signal(int, int, str)

    def __init__(
        self,
        ops: Operations,
        python: Callable[[], str],
        offline: Callable[[], bool],
        *,
        picker: Callable[[], str | None] | None = None,
        confirm: Callable[[str], bool] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("runtime_panel")
        self._ops = ops
        self._python = python
        self._offline = offline
        self._picker = picker or self._pick
        self._confirm = confirm or self._ask
        self._run: Any = None  # the SetupRun in progress

        self.verdict_label = QLabel(f"current: {python() or 'not set up'} (not checked yet)")
        self.verdict_label.setObjectName("runtime_verdict")
        self.verdict_label.setWordWrap(True)
        self.use_button = QPushButton("Use existing…")
        self.use_button.setToolTip("Pick a Python (or venv folder) with the train extra")
        self.setup_button = QPushButton("Set up")
        self.setup_button.setToolTip(
            "Make a runtime in the data folder with uv: torch for this machine and the "
            "trainer's pinned requirements"
        )
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Delete the runtime this app set up")
        self.wheelhouse_edit = QLineEdit()
        self.wheelhouse_edit.setObjectName("runtime_wheelhouse")
        self.wheelhouse_edit.setPlaceholderText("wheelhouse folder for an offline setup (optional)")
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.log = QPlainTextEdit()
        self.log.setObjectName("runtime_log")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setVisible(False)
        self.log.setMinimumHeight(120)

        buttons = QHBoxLayout()
        for button in (self.use_button, self.setup_button, self.cancel_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.verdict_label)
        layout.addLayout(buttons)
        layout.addWidget(self.wheelhouse_edit)
        layout.addWidget(self.progress)
        layout.addWidget(self.log)

        self.use_button.clicked.connect(self._on_use_button_clicked)
        self.setup_button.clicked.connect(self._on_setup_button_clicked)
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        self._line_received.connect(self.log.appendPlainText)
        self._progress_changed.connect(self._on_progress_changed)

    # -- the verdict ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Check the dialog's runtime (kind and doctor's verdict) in the background."""
        self.verdict_label.setText("checking …")
        self._ops.run_in_thread(
            "check the trainer runtime's status",
            operations.runtime_status,
            self._python(),
            self._offline(),
            on_done=self._show_status,
            on_error=lambda exc: self._show(str(exc), ok=False),
            quiet=True,
        )

    def _show_status(self, status: Any) -> None:
        if status.ok:
            report = status.report
            text = (
                f"{status.python} ({_KINDS.get(status.kind, status.kind)}): ready, "
                f"Python {report.python}, torch {report.torch}"
            )
        else:
            text = status.problem or "not usable"
        self._show(text, ok=status.ok)

    def _show(self, text: str, *, ok: bool) -> None:
        self.verdict_label.setText(text)
        self.verdict_label.setStyleSheet(_GREEN if ok else _RED)
        self.status_shown.emit(text)

    # -- use existing -----------------------------------------------------------------------

    def _on_use_button_clicked(self) -> None:
        chosen = self._picker()
        if not chosen:
            return
        self.verdict_label.setText(f"checking {chosen} …")

        def done(python: str) -> None:
            self._show(f"{python} (your own Python): ready", ok=True)
            self.runtime_chosen.emit(python)

        # A pick made while the last one is checked is checked next; the last one's answer
        # is dropped, so the runtime used is the newest pick (`LatestCall`).
        latest_call(self._ops, "use a trainer runtime").request(
            operations.use_existing_runtime,
            chosen,
            self._offline(),
            on_done=done,
            on_error=lambda exc: self._show(str(exc), ok=False),
            quiet=True,
        )

    # -- set up -----------------------------------------------------------------------------

    def _on_setup_button_clicked(self) -> None:
        self._set_running(True)
        self.log.clear()
        self.log.setVisible(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)  # busy until the plan says how many steps
        self._ops.run_in_thread(
            "plan the trainer runtime setup",
            operations.plan_runtime_setup,
            self.wheelhouse_edit.text().strip() or None,
            on_done=self._start_setup,
            on_error=self._setup_failed,
            quiet=True,
        )

    def _start_setup(self, plan: Any) -> None:
        self._run = operations.runtime_setup_run(
            plan, self._line_received.emit, self._progress_changed.emit, self._offline()
        )
        self.cancel_button.setEnabled(True)

        def done(report: Any) -> None:
            self._run = None
            self._set_running(False)
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self._show(f"{plan.python} (set up by this app): ready, torch {report.torch}", ok=True)
            self.runtime_chosen.emit(str(plan.python))
            self.setup_finished.emit("ready")

        self._ops.run_in_thread(
            "set up the trainer runtime",
            self._run.run,
            on_done=done,
            on_error=self._setup_failed,
            quiet=True,
        )

    def _setup_failed(self, exc: BaseException) -> None:
        self._run = None
        self._set_running(False)
        self.progress.setVisible(False)
        self.log.appendPlainText(str(exc))
        self._show(str(exc), ok=False)
        self.setup_finished.emit(str(exc))

    def _on_progress_changed(self, done: int, total: int, title: str) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"{title} (%v/%m)")

    def _on_cancel_button_clicked(self) -> None:
        if self._run is None:
            return
        self.cancel_button.setEnabled(False)
        self.log.appendPlainText("cancelling …")
        # Cancel waits for uv to die: not on the GUI thread.
        self._ops.run_in_thread("cancel the trainer runtime setup", self._run.cancel, quiet=True)

    def _set_running(self, running: bool) -> None:
        for button in (self.use_button, self.setup_button, self.remove_button):
            button.setEnabled(not running)
        self.cancel_button.setEnabled(running and self._run is not None)

    # -- remove -----------------------------------------------------------------------------

    def _on_remove_button_clicked(self) -> None:
        current = self._python() or None
        if not self._confirm("Delete the trainer runtime this app set up?"):
            return

        def done(folder: str) -> None:
            self._show(f"removed {folder}; Set up makes a new one", ok=False)
            self.runtime_removed.emit(folder)

        self._ops.run_in_thread(
            "remove the trainer runtime",
            operations.remove_runtime,
            current,
            on_done=done,
            on_error=lambda exc: self._show(str(exc), ok=False),
            quiet=True,
        )

    # -- dialogs ----------------------------------------------------------------------------

    def _pick(self) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self, "Python interpreter for the trainer")
        return path or None

    def _ask(self, question: str) -> bool:
        answer = QMessageBox.question(self, "Trainer runtime", question)
        return answer == QMessageBox.StandardButton.Yes
