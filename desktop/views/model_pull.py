"""The Pull button beside the editor's model field: a Hub model fetched ahead of the run.

`ModelPullPanel` puts a "Pull" button in the model field's row and, under the field, a line
with a progress bar, what the pull needs ("3 of 9 files, 557 KB needed, 20 GB free in …") and
Cancel. The work runs in a worker thread through `operations.plan_model_pull` and
`operations.pull_model` (`desktop.core.models_cache`): the space needed is shown before any
byte is fetched, a pull that does not fit is refused with the figures, a gated model gets its
one sentence, offline mode refuses; Cancel stops at the next chunk and keeps what arrived, so
the next pull resumes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QToolButton, QWidget

from desktop.views import operations

if TYPE_CHECKING:
    from desktop.views.config_editor import ConfigEditor
    from desktop.views.operations import Operations

__all__ = ["MODEL_FIELD", "ModelPullPanel"]

MODEL_FIELD = "model.name_or_path"
_REVISION_FIELD = "model.revision"
_PLAN = "ask the Hub about the model"
_OPERATION = "pull the model"  # a second name: the plan's task is still open in its on_done
# org/name and nothing that looks like a path (a folder is loaded as it is, never pulled).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class _Relay(QObject):
    """Carries the worker thread's byte counts to the Qt thread (a queued signal)."""

    progressed = Signal(object, object)


class ModelPullPanel(QObject):
    """Pull, progress and Cancel for the editor's model field.

    Args:
        editor: the config editor (its model and revision fields).
        ops: runs the pull in a worker thread.
        offline: whether offline mode is on now (asked at each click).

    Signals:
        pulled(str): the model is in the cache (its snapshot folder).
    """

    pulled = Signal(str)

    def __init__(self, editor: ConfigEditor, ops: Operations, offline: Callable[[], bool]) -> None:
        super().__init__(editor)
        self.setObjectName("model_pull")  # its widgets live in the model field's row
        self.editor = editor
        self.ops = ops
        self._offline = offline
        self._cancel: threading.Event | None = None
        self._relay = _Relay(self)
        self._relay.progressed.connect(self._on_relay_progressed)

        self.pull_button = QToolButton()
        self.pull_button.setObjectName("model_pull_button")
        self.pull_button.setText("Pull")
        self.pull_button.setToolTip(
            "Download this Hub model (org/name) into the model cache now, so the run starts "
            "without waiting for it"
        )
        self.pull_button.clicked.connect(self._on_pull_button_clicked)
        self.progress = QProgressBar()
        self.progress.setObjectName("model_pull_progress")
        self.progress.setRange(0, 1000)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("model_pull_cancel")
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        self.status = QLabel()
        self.status.setObjectName("model_pull_status")
        self.status.setWordWrap(True)
        self._line = QWidget()
        row = QHBoxLayout(self._line)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        self.status.setVisible(False)
        self._set_running(False)
        editor.attach_to_field(MODEL_FIELD, self.pull_button, below=(self._line, self.status))

    # -- state --------------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Whether a pull is in progress."""
        return self._cancel is not None

    def _set_running(self, running: bool) -> None:
        self.pull_button.setEnabled(not running)
        self._line.setVisible(running)
        self.cancel_button.setEnabled(running)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setStyleSheet("color: #c9302c;" if error else "color: #666666;")
        self.status.setText(text)
        self.status.setVisible(bool(text))

    # -- gestures -----------------------------------------------------------------------------

    def _on_pull_button_clicked(self) -> None:
        raw = self.editor.raw_values()
        model = str((raw.get("model") or {}).get("name_or_path") or "").strip()
        revision = str((raw.get("model") or {}).get("revision") or "").strip() or None
        if not _HUB_ID.match(model):
            self._say(
                f"{model!r} is not a Hub model (org/name): a folder on this machine needs no pull"
                if model
                else "type a Hub model as org/name first",
                error=True,
            )
            return
        self._cancel = threading.Event()
        self.progress.setValue(0)
        self._set_running(True)
        self._say(f"asking the Hub about {model} …")
        self.ops.run_in_thread(
            _PLAN,
            operations.plan_model_pull,
            model,
            revision,
            self._offline(),
            on_done=self._on_planned,
            on_error=self._on_failed,
            quiet=True,
        )

    def _on_cancel_button_clicked(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self._say("cancelling …")

    # -- outcomes -----------------------------------------------------------------------------

    def _on_planned(self, plan: Any) -> None:
        cancel = self._cancel
        if cancel is None or cancel.is_set():
            self._finish("cancelled before any download")
            return
        self._say(plan.describe())
        started = self.ops.run_in_thread(
            _OPERATION,
            operations.pull_model,
            plan,
            self._offline(),
            self._relay.progressed.emit,  # called in the worker thread: queued to this one
            cancel,
            on_done=lambda folder: self._on_pulled(plan, str(folder)),
            on_error=self._on_failed,
            quiet=True,
        )
        if started is None:  # the window is closing
            self._finish("the pull did not start: the window is closing")

    def _on_relay_progressed(self, done: int, total: int) -> None:
        if self._cancel is None:
            return  # a late count after the end
        self.progress.setValue(1000 if total <= 0 else int(1000 * done / total))
        self.progress.setFormat(f"{done * 100 // max(total, 1)}%")

    def _on_pulled(self, plan: Any, folder: str) -> None:
        self.progress.setValue(1000)
        self._finish(f"{plan.repo_id} is in the model cache ({folder})")
        self.pulled.emit(folder)

    def _on_failed(self, exc: BaseException) -> None:
        self._finish(str(exc), error=True)

    def _finish(self, text: str, *, error: bool = False) -> None:
        self._cancel = None
        self._set_running(False)
        self._say(text, error=error)
