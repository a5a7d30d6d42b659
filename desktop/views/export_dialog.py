"""The Export dialog of a finished job: merge its adapter into the base, push it to the Hub.

Opened from the job table's "Export…" action. The person picks the source (the final output or
a checkpoint's step), a merge and its dtype and folder, a push and its repository (private by
default); Export runs `operations.export_job` in a worker thread (the trainer runtime does the
work, `desktop.core.export`), a progress bar and a line follow the trainer's progress, and
Cancel stops the trainer child where it is. Every refusal (offline, a bad repository name, no
token) is one sentence on the dialog, given before anything starts.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.views import operations

if TYPE_CHECKING:
    from desktop.models import Job
    from desktop.views.operations import Operations

__all__ = ["ExportDialog"]

_OPERATION = "export job"
_STAGES = {"merge": "Merging", "push": "Pushing"}


class _Relay(QObject):
    """Carries the worker thread's progress to the Qt thread (a queued signal)."""

    progressed = Signal(object)


class ExportDialog(QDialog):
    """Merge and/or push one finished job, with progress and Cancel.

    Args:
        job: the job to export.
        ops: runs the export in a worker thread.
        runtime: the trainer runtime the export runs with (the job service's).
        offline: whether offline mode is on (a push is then refused before it starts).
        parent: the parent widget.

    Signals:
        exported(object): the export finished (its `ExportResult`).
    """

    exported = Signal(object)

    def __init__(
        self,
        job: Job,
        ops: Operations,
        runtime: Any,
        offline: bool,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("export_dialog")
        self.setWindowTitle(f"Export {job.name} ({job.id})")
        self.job = job
        self.ops = ops
        self._runtime = runtime
        self._offline = offline
        self._cancel: threading.Event | None = None
        self._relay = _Relay(self)
        self._relay.progressed.connect(self._on_relay_progressed)

        self.checkpoint = QSpinBox()
        self.checkpoint.setObjectName("export_checkpoint")
        self.checkpoint.setRange(0, 10**9)
        self.checkpoint.setSpecialValueText("final output")
        self.checkpoint.setToolTip("0: the job's final output; else a checkpoint's step")
        self.merge = QCheckBox("Merge the adapter into the base model")
        self.merge.setObjectName("export_merge")
        self.merge.setChecked(True)
        self.dtype = QComboBox()
        self.dtype.setObjectName("export_dtype")
        for name in ("fp32", "bf16", "fp16"):
            self.dtype.addItem(name, name)
        self.out = QLineEdit()
        self.out.setObjectName("export_out")
        self.out.setPlaceholderText("the job's output/merged/")
        self.push = QCheckBox("Push to the Hugging Face Hub")
        self.push.setObjectName("export_push")
        self.repo = QLineEdit()
        self.repo.setObjectName("export_repo")
        self.repo.setPlaceholderText("org/name")
        self.private = QCheckBox("Private repository")
        self.private.setObjectName("export_private")
        self.private.setChecked(True)
        form = QFormLayout()
        form.addRow("Source", self.checkpoint)
        form.addRow("", self.merge)
        form.addRow("Dtype", self.dtype)
        form.addRow("Folder", self.out)
        form.addRow("", self.push)
        form.addRow("Repository", self.repo)
        form.addRow("", self.private)

        self.progress = QProgressBar()
        self.progress.setObjectName("export_progress")
        self.progress.setRange(0, 100)
        self.status = QLabel()
        self.status.setObjectName("export_status")
        self.status.setWordWrap(True)
        self.export_button = QPushButton("Export")
        self.export_button.setObjectName("export_start")
        self.export_button.clicked.connect(self._on_export_button_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("export_cancel")
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self._set_running(False)

    def is_running(self) -> bool:
        """Whether an export is in progress."""
        return self._cancel is not None

    def _set_running(self, running: bool) -> None:
        self.export_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.close_button.setEnabled(not running)
        for widget in (self.checkpoint, self.merge, self.dtype, self.out, self.push, self.repo):
            widget.setEnabled(not running)
        self.private.setEnabled(not running)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setStyleSheet("color: #c9302c;" if error else "")
        self.status.setText(text)

    def _on_export_button_clicked(self) -> None:
        self._cancel = threading.Event()
        self.progress.setValue(0)
        self._set_running(True)
        self._say("starting the trainer runtime …")
        started = self.ops.run_in_thread(
            _OPERATION,
            operations.export_job,
            self._runtime,
            self._offline,
            self.job,
            {
                "checkpoint": self.checkpoint.value() or None,
                "merge": self.merge.isChecked(),
                "dtype": self.dtype.currentData(),
                "out": self.out.text().strip() or None,
                "push": self.repo.text().strip() if self.push.isChecked() else None,
                "private": self.private.isChecked(),
            },
            self._relay.progressed.emit,  # called in the worker thread: queued to this one
            self._cancel,
            on_done=self._on_exported,
            on_error=self._on_failed,
            quiet=True,
        )
        if started is None:
            self._finish("another export is running; wait for it to end", error=True)

    def _on_cancel_button_clicked(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self._say("cancelling …")

    def _on_relay_progressed(self, progress: dict[str, Any]) -> None:
        if self._cancel is None:
            return
        done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
        stage = _STAGES.get(str(progress.get("stage")), str(progress.get("stage")))
        self.progress.setValue(100 * done // total if total else 0)
        self.progress.setFormat(f"{stage}: %p%")
        self._say(str(progress.get("message") or ""))

    def _on_exported(self, result: Any) -> None:
        self.progress.setValue(100)
        lines = []
        if result.out is not None:
            lines.append(f"merged model in {result.out}")
        if result.pushed:
            lines.append(f"pushed to {result.pushed} ({result.url})")
        self._finish("; ".join(lines) or "done")
        self.exported.emit(result)

    def _on_failed(self, exc: BaseException) -> None:
        self._finish(str(exc), error=True)

    def _finish(self, text: str, *, error: bool = False) -> None:
        self._cancel = None
        self._set_running(False)
        self._say(text, error=error)

    def reject(self) -> None:
        """Close, unless an export runs (Cancel first: closing must not orphan a child)."""
        if self.is_running():
            self._say("an export is running: Cancel it first", error=True)
            return
        super().reject()
