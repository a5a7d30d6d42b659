"""The main window's status bar: messages from the bus, the offline mode and the trainer
runtime's state (from `trainer doctor`) as permanent labels.

One status model: a message about a job (one that names its id) stands only while it is true.
When that job's state changes, the job's new state (with the reason of a failure) replaces the
message, so "… is queued" never outlives the queue.

Light on purpose (Qt only): the window's first paint builds it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

if TYPE_CHECKING:
    from desktop.models.job import Job, JobState
    from desktop.views.state import AppState
    from trainer.reports import DoctorReport

_WORDS = re.compile(r"[\w.-]+")
_ERROR_MS = 15_000
_INFO_MS = 8_000

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
        self._state: AppState | None = None
        self._about: tuple[str, JobState] | None = None
        """The job the shown message is about, and its state when the message was posted."""
        self._shown = ""
        self.messageChanged.connect(self._on_message_changed)

    def follow_state(self, state: AppState) -> None:
        """Tie messages that name a job of `state` to that job: its next state replaces them."""
        self._state = state
        state.row_changed.connect(self._on_state_row_changed)

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
        self._show(f"⚠ {first}", _ERROR_MS, message)
        self.setToolTip(message)

    def show_info(self, message: str) -> None:
        """A status message for 8 s."""
        self._show(message, _INFO_MS, message)

    def show_job_state(self, job: Job) -> None:
        """Replace the shown message with `job`'s state if that message is about `job`."""
        from desktop.models.job import JobState  # not before the first paint

        if self._about is None or self._about[0] != job.id or job.state is self._about[1]:
            return
        reason = job.state_reason.strip().splitlines()[0] if job.state_reason.strip() else ""
        if job.state is JobState.FAILED:
            text = f"⚠ job {job.id} ({job.name}) failed" + (f": {reason}" if reason else "")
            self._show(text, _ERROR_MS, text)
            self.setToolTip(job.state_reason)
        else:
            text = f"job {job.id} ({job.name}) is {job.state.value}"
            self._show(text, _INFO_MS, text)

    def _show(self, text: str, timeout_ms: int, message: str) -> None:
        self._shown = text
        self.showMessage(text, timeout_ms)
        self._about = None
        job = self._job_named_in(message)
        if job is None:
            return
        from desktop.models.job import JobState

        self._about = (job.id, job.state)
        # Posted after the job moved on (a launch's "is queued" once it trains): stale at once.
        said = {state for state in JobState if re.search(rf"\b{state.value}\b", message)}
        if said and job.state not in said:
            self._about = (job.id, next(iter(said)))
            self.show_job_state(job)

    def _job_named_in(self, message: str) -> Job | None:
        if self._state is None:
            return None
        for word in _WORDS.findall(message):
            job = self._state.job(word)
            if job is not None:
                return job
        return None

    def _on_state_row_changed(self, row: int) -> None:
        if self._state is not None and self._about is not None:
            self.show_job_state(self._state.job_at(row))

    def _on_message_changed(self, text: str) -> None:
        if text != self._shown:  # timed out, cleared or another message: nothing to supersede
            self._about = None
