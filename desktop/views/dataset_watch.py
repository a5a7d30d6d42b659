"""The dataset fields, checked as they are typed.

`DatasetFieldWatcher` follows the editor's dataset paths. A short while after one stops
changing it looks at the file in a worker thread (`operations.inspect_dataset_paths`: exists,
readable, not a folder, a format the trainer reads) and shows the answer on the field: an error
that blocks Start like any field error (`ConfigEditor.set_external_error`), or a note with the
guessed format and size ("JSONL, 321 lines"). A new value clears the old verdict at once, so a
field never shows an error about a value it no longer holds. When the training file looks
fine, `dataset_ready` asks for the background preflight of its records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal

from desktop.views import operations

if TYPE_CHECKING:
    from desktop.views.config_editor import ConfigEditor
    from desktop.views.operations import DatasetPathCheck, Operations

__all__ = ["DATASET_FIELDS", "DatasetFieldWatcher"]

#: The editor's fields that name a dataset file.
DATASET_FIELDS = ("dataset.path", "dataset.eval_path")
_OPERATION = "check the dataset path"


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
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(debounce_ms)
        self._timer.timeout.connect(self._on_timer_timeout)
        editor.config_changed.connect(self._on_editor_config_changed)
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
                self.dataset_ready.emit(asked[path])
