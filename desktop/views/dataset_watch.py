"""The dataset fields, checked as they are typed.

`DatasetFieldWatcher` follows the editor's dataset paths. A short while after one stops
changing it looks at the file in a worker thread (`operations.inspect_dataset_paths`: exists,
readable, not a folder, a format the trainer reads) and shows the answer on the field: an error
that blocks Start like any field error (`ConfigEditor.set_external_error`), or a note with the
guessed format and size ("JSONL, 321 lines"). A new value clears the old verdict at once, so a
field never shows an error about a value it no longer holds. When the training file looks
fine, `dataset_ready` asks for the background preflight of its records: `AutoPreflight` runs
the trainer runtime's `check-data` (without a tokenizer, so it stays quick), lists every
problem under the field (`DataCheckSummary`), blocks Start while the data is unusable, and
offers "Skip invalid records (N)" (the config's `dataset.skip_invalid_records`) when only some
records are invalid.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal

from desktop.views import operations

if TYPE_CHECKING:
    from desktop.views.config_editor import ConfigEditor
    from desktop.views.operations import DatasetPathCheck, Operations
    from desktop.views.preflight import DataCheckSummary
    from trainer.reports import DataReport

__all__ = [
    "AUTO_PREFLIGHT_BYTES",
    "DATASET_FIELDS",
    "RECORDS_ERROR",
    "AutoPreflight",
    "DatasetFieldWatcher",
]

#: The editor's fields that name a dataset file.
DATASET_FIELDS = ("dataset.path", "dataset.eval_path")
_OPERATION = "check the dataset path"
#: Files up to this size get the records' check as soon as they are chosen.
AUTO_PREFLIGHT_BYTES = 32 * 1024 * 1024
_PREFLIGHT = "check the dataset's records"
#: The editor's error key for what the records' check found (shown on the dataset field).
RECORDS_ERROR = "dataset.path#records"


def _value(raw: dict[str, Any], path: str) -> str:
    node: Any = raw
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return str(node).strip() if node else ""


class DatasetFieldWatcher(QObject):
    """Checks the editor's dataset paths as they are typed (debounced, off the UI thread).

    Args:
        editor: the config editor whose dataset fields are watched.
        ops: runs the look at the files in a worker thread.
        debounce_ms: how long a value must stay unchanged before it is checked.

    Signals:
        dataset_ready(str): the training file was checked and looks usable (its path).
    """

    dataset_ready = Signal(str)

    def __init__(self, editor: ConfigEditor, ops: Operations, debounce_ms: int = 300) -> None:
        super().__init__(editor)
        self.editor = editor
        self.ops = ops
        self._values: dict[str, str] = dict.fromkeys(DATASET_FIELDS, "")
        #: The training file's path once its quick look found it usable, else None.
        self.ready_path: str | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(debounce_ms)
        self._timer.timeout.connect(self._on_timer_timeout)
        editor.config_changed.connect(self._on_editor_config_changed)
        self._on_editor_config_changed()

    def recheck(self) -> None:
        """Look at the dataset paths again though they did not change (a file written since,
        such as the demo's data)."""
        self._values = dict.fromkeys(DATASET_FIELDS, "")
        self._on_editor_config_changed()

    def _on_editor_config_changed(self) -> None:
        raw = self.editor.raw_values()
        changed = False
        for path in DATASET_FIELDS:
            value = _value(raw, path)
            if value == self._values[path]:
                continue
            self._values[path] = value
            changed = True
            if path == "dataset.path":
                self.ready_path = None
            # The old verdict was about the old value: drop it before the new one is known.
            self.editor.set_external_error(path, None)
            self.editor.set_field_note(path, "checking …" if value else None)
        if changed:
            self._timer.start()

    def _on_timer_timeout(self) -> None:
        if self.ops.is_running(_OPERATION):  # one look at a time; ask again shortly
            self._timer.start()
            return
        asked = {path: value for path, value in self._values.items() if value}
        if not asked:
            return
        self.ops.run_in_thread(
            _OPERATION,
            operations.inspect_dataset_paths,
            asked,
            on_done=lambda found: self._on_checked(asked, found),
        )

    def _on_checked(self, asked: dict[str, str], found: dict[str, DatasetPathCheck]) -> None:
        for path, check in found.items():
            if self._values[path] != asked[path]:
                continue  # typed on since: that value's own check is on its way
            self.editor.set_external_error(path, check.error)
            self.editor.set_field_note(path, check.note)
            if path == "dataset.path" and check.error is None and check.local_file:
                if check.size_bytes > AUTO_PREFLIGHT_BYTES:  # not quick: on request only
                    self.editor.set_field_note(path, f"{check.note} (Preflight… checks it)")
                    continue
                self.ready_path = asked[path]
                self.dataset_ready.emit(asked[path])


class AutoPreflight(QObject):
    """Checks the records of a chosen dataset in the background and shows the verdict.

    Args:
        editor: the config editor (its dataset fields, its error list).
        ops: runs the check in a worker thread.
        watch: says when the training file's path looks usable.
        summary: where the verdict is shown.
        request: the `TrainerRuntime.check_data` arguments for the editor's dataset (path
            first), or None.
        check: runs the check: (path, **arguments) -> DataReport (blocking).
    """

    def __init__(
        self,
        editor: ConfigEditor,
        ops: Operations,
        watch: DatasetFieldWatcher,
        summary: DataCheckSummary,
        request: Callable[[], dict[str, Any] | None],
        check: Callable[..., DataReport],
    ) -> None:
        super().__init__(editor)
        self.editor, self.ops, self.watch, self.summary = editor, ops, watch, summary
        self._request, self._check = request, check
        self._key: str | None = None  # the request the shown (or awaited) report answers
        self._report: DataReport | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self._on_timer_timeout)
        watch.dataset_ready.connect(lambda _path: self._timer.start())
        editor.config_changed.connect(self._on_editor_config_changed)
        summary.skip_requested.connect(self._on_summary_skip_requested)

    def _quick_request(self) -> dict[str, Any] | None:
        request = self._request()
        if request is None:
            return None
        # Quick: records only. Token lengths need the tokenizer; the Preflight window has them.
        request.update(model=None, max_length=None)
        return request

    def _on_editor_config_changed(self) -> None:
        request = self._quick_request()
        key = json.dumps(request, sort_keys=True) if request else None
        if key != self._key:  # another dataset, format or field map: the verdict is stale
            self._key, self._report = None, None
            self.summary.clear()
            self.editor.set_external_error(RECORDS_ERROR, None)
            if request is not None and request["path"] == self.watch.ready_path:
                self._timer.start()
        elif self._report is not None:  # the skip choice may have changed
            self._show(self._report)

    def _on_timer_timeout(self) -> None:
        request = self._quick_request()
        if request is None or request["path"] != self.watch.ready_path:
            return
        key = json.dumps(request, sort_keys=True)
        if key == self._key:
            return
        if self.ops.is_running(_PREFLIGHT):  # one check at a time; ask again shortly
            self._timer.start()
            return
        self._key, self._report = key, None
        path = request.pop("path")
        self.summary.set_busy(path)

        def check() -> DataReport:
            return self._check(path, timeout_s=600, **request)

        def done(report: DataReport) -> None:
            if self._key == key:
                self._show(report)

        def failed(exc: BaseException) -> None:
            if self._key == key:
                self.summary.show_error(str(exc))

        self.ops.run_in_thread(_PREFLIGHT, check, on_done=done, on_error=failed, quiet=True)

    def _show(self, report: DataReport) -> None:
        self._report = report
        skipping = bool((self.editor.raw_values().get("dataset") or {}).get("skip_invalid_records"))
        skipping = skipping and report.skippable
        self.summary.show_report(report, skipping)
        error = None
        if not report.usable and not skipping:
            first = "; ".join(report.problem_lines()[:3])
            error = f"the dataset is not usable: {first}"
            if report.skippable:
                error += f" (or skip the {report.invalid_records} invalid: see below)"
        self.editor.set_external_error(RECORDS_ERROR, error)

    def _on_summary_skip_requested(self) -> None:
        box = self.editor.field_widget("dataset.skip_invalid_records")
        box.setProperty("checked", True)  # a QCheckBox: the editor hears it as an edit
