"""Batch compare in the window: the same prompts through the base and each selected job's
adapter, shown as a table (one row per prompt, one answer column per model).

The dialog compares the completed jobs selected in the job table, in row order; the first
job's server answers for the base (its adapter switched off), as `finetune-desk compare`
does. The prompts come from a JSONL file (`read_prompts`: a bad line is one sentence naming
it, and nothing runs) or are the first N records of the first job's eval split (their
reference answers come along). "Eval loss and perplexity" adds a line per job: the mean token
loss and perplexity of base and adapter on the job's eval split.

The run is the core's `compare_jobs` in a worker thread through `Operations`; its progress
lines come back through the `progress_changed` signal (a queued connection). Cancel (and
closing the dialog or the window) uses the core's `CompareCancel`: the model server being
talked to is closed at once, so no server outlives the run. A server that dies is one
sentence under the table. Save JSONL… and Save CSV… write exactly what the CLI's `--out`
writes (`save_results`: `write_jsonl`, `write_csv`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QCloseEvent, QColor, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from desktop.models import JobState
from desktop.views import operations
from desktop.views.generation_controls import GenerationControls

if TYPE_CHECKING:
    from desktop.views.operations import Operations
    from desktop.views.state import AppState

__all__ = ["ComparePanel", "QtCompareTableModel"]

# A cell shows the start of its text on one line; the tooltip and the detail pane show it all.
_CELL_CHARS = 120

_Index = QModelIndex | QPersistentModelIndex


def _one_line(text: str) -> str:
    flat = " ⏎ ".join(line for line in text.splitlines() if line.strip()) or text.strip()
    return flat if len(flat) <= _CELL_CHARS else flat[: _CELL_CHARS - 1] + "…"


def _answer(key: str, row: Any) -> str:
    return str(row.answers.get(key, ""))


class QtCompareTableModel(QAbstractTableModel):
    """The compare rows as a table: prompt, reference (when any row has one), base, then one
    answer column per job, titled with the job's name. Read-only; reset once per run."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[Any] = []
        # (title, how a row gives the cell's full text)
        self.columns: list[tuple[str, Callable[[Any], str]]] = []

    def set_results(self, rows: list[Any], jobs: list[tuple[str, str]]) -> None:
        """Show `rows` (`CompareRow`s); `jobs` are (job id, job name) in column order."""
        self.beginResetModel()
        self.rows = list(rows)
        columns: list[tuple[str, Callable[[Any], str]]] = [("Prompt", lambda r: r.prompt)]
        if any(row.reference for row in rows):
            columns.append(("Reference", lambda r: r.reference or ""))
        columns.append(("Base", functools.partial(_answer, operations.BASE)))
        columns += [(name, functools.partial(_answer, job_id)) for job_id, name in jobs]
        self.columns = columns
        self.endResetModel()

    def full_text(self, index: _Index) -> str:
        """The whole text of a cell ("" outside the table)."""
        if not index.isValid() or index.row() >= len(self.rows):
            return ""
        return self.columns[index.column()][1](self.rows[index.row()])

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        """Qt override: one row per prompt."""
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        """Qt override: prompt, [reference], base, one per job."""
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Qt override: the cell's start (display), its whole text (tooltip)."""
        if not index.isValid():
            return None
        text = self.full_text(index)
        if role == Qt.ItemDataRole.DisplayRole:
            # An answer that is only an end of text would read as a missing cell.
            return _one_line(text) if text.strip() else "(empty)"
        if role == Qt.ItemDataRole.ToolTipRole:
            return text
        if role == Qt.ItemDataRole.ForegroundRole and not text.strip():
            return QColor(Qt.GlobalColor.gray)
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        """Qt override: the column titles; rows are numbered from 1."""
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self.columns[section][0] if 0 <= section < len(self.columns) else None
        return str(section + 1)


def loss_line(loss: Any, names: dict[str, str]) -> str:
    """One job's eval loss as a line a person reads (or its sentence when not measured)."""
    if isinstance(loss, str):
        return loss
    name = names.get(loss.job, loss.job)
    return (
        f"{name}: eval loss base {loss.base_loss:.4f} (perplexity {loss.base_perplexity:.2f})"
        f" → adapter {loss.adapter_loss:.4f} (perplexity {loss.adapter_perplexity:.2f}),"
        f" {loss.records} records, {loss.tokens} tokens"
    )


class ComparePanel(QDialog):
    """Batch compare of the selected jobs, as a table.

    Args:
        state: the app state (the selection says which jobs).
        ops: runs the blocking work.
        runtime: gives the trainer runtime that starts the model servers.
        parent: the Qt parent.

    Signals:
        progress_changed(str): a progress line of the run (emitted from a worker thread).
        run_finished(str): the run ended: "done", "cancelled", or the sentence of its failure.
    """

    progress_changed = Signal(str)
    run_finished = Signal(str)

    def __init__(
        self,
        state: AppState,
        ops: Operations,
        runtime: Callable[[], Any],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Batch compare")
        self._state = state
        self._ops = ops
        self._runtime = runtime
        self.jobs: list[tuple[str, str, Any]] = []  # (id, name, folder) of the compared jobs
        self.rows: list[Any] = []
        self.losses: list[Any] = []
        self.running = False
        self._cancel: Any = None
        self._closed = False  # closed (or Escape) since last shown: no run starts

        self.jobs_label = QLabel("", self)
        self.jobs_label.setWordWrap(True)
        self.file_radio = QRadioButton("Prompts file", self)
        self.file_radio.setChecked(True)
        self.prompts_edit = QLineEdit(self)
        self.prompts_edit.setPlaceholderText('JSONL: {"prompt": ...} or {"messages": [...]}')
        self.browse_button = QPushButton("Browse…", self)
        self.browse_button.clicked.connect(self._on_browse_button_clicked)
        self.eval_radio = QRadioButton("Records of the eval split", self)
        self.eval_count = QSpinBox(self)
        self.eval_count.setRange(1, 10_000)
        self.eval_count.setValue(10)
        self.generation = GenerationControls(
            self, operations.GenerationSettings(temperature=0.0, max_new_tokens=128, seed=0)
        )
        self.temperature = self.generation.temperature
        self.top_p = self.generation.top_p
        self.max_new_tokens = self.generation.max_new_tokens
        self.seed = self.generation.seed
        self.eval_loss_check = QCheckBox("Eval loss and perplexity (base vs adapter)", self)

        self.run_button = QPushButton("Run", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.save_jsonl_button = QPushButton("Save JSONL…", self)
        self.save_csv_button = QPushButton("Save CSV…", self)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_jsonl_button.clicked.connect(functools.partial(self._ask_save, ".jsonl"))
        self.save_csv_button.clicked.connect(functools.partial(self._ask_save, ".csv"))
        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        self.losses_label = QLabel("", self)
        self.losses_label.setWordWrap(True)
        self.losses_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.model = QtCompareTableModel(self)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setDefaultSectionSize(240)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().currentChanged.connect(self._on_table_current_changed)
        self.detail = QPlainTextEdit(self)
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText("Select a cell to read it whole")

        source = QGridLayout()
        source.addWidget(self.file_radio, 0, 0)
        source.addWidget(self.prompts_edit, 0, 1)
        source.addWidget(self.browse_button, 0, 2)
        source.addWidget(self.eval_radio, 1, 0)
        source.addWidget(self.eval_count, 1, 1, Qt.AlignmentFlag.AlignLeft)
        settings = QHBoxLayout()
        for label, widget in self.generation.labelled():
            settings.addWidget(QLabel(label, self))
            settings.addWidget(widget)
        settings.addWidget(self.eval_loss_check)
        settings.addStretch(1)
        buttons = QHBoxLayout()
        for button in (self.run_button, self.cancel_button):
            buttons.addWidget(button)
        buttons.addWidget(self.status_label, 1)
        for button in (self.save_jsonl_button, self.save_csv_button):
            buttons.addWidget(button)
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setSizes([400, 120])
        layout = QVBoxLayout(self)
        layout.addWidget(self.jobs_label)
        layout.addLayout(source)
        layout.addLayout(settings)
        layout.addLayout(buttons)
        layout.addWidget(split, 1)
        layout.addWidget(self.losses_label)

        self.progress_changed.connect(self._on_progress_changed)
        state.selection_changed.connect(self._on_state_selection_changed)
        self.resize(1100, 640)
        self._update_buttons()

    # -- which jobs -------------------------------------------------------------------------

    def _on_state_selection_changed(self, job_ids: list[str]) -> None:
        if self.isVisible():
            self.set_jobs(job_ids)

    def set_jobs(self, job_ids: Any) -> None:
        """Compare these jobs (the completed ones, in the order given); kept while running."""
        if self.running:
            return
        jobs = [self._state.job(job_id) for job_id in job_ids]
        done = [job for job in jobs if job is not None and job.state is JobState.COMPLETED]
        self.jobs = [(job.id, job.name, job.job_dir) for job in done]
        if not self.jobs:
            self.jobs_label.setText("Select one or more completed jobs in the job table.")
        else:
            names = ", ".join(name for _, name, _ in self.jobs)
            skipped = len(jobs) - len(done)
            more = f" ({skipped} selected job(s) not completed are left out)" if skipped else ""
            self.jobs_label.setText(
                f"<b>Jobs:</b> {names}{more}; the base answers come from the first one's base"
            )
        self._update_buttons()

    # -- running ----------------------------------------------------------------------------

    def start(self) -> None:
        """Run the compare (reading the prompts file first, when one is chosen)."""
        if self.running or not self.jobs:
            return
        try:
            settings = self._settings()
        except ValueError as exc:
            self._say(f"generation settings: {exc}")
            return
        if self.eval_radio.isChecked():
            self._run(None, settings)
            return
        path = self.prompts_edit.text().strip()
        if not path:
            self._say('Choose a prompts file (JSONL, one {"prompt": ...} per line).')
            return
        self.running = True  # no second Run while the file is read
        self._update_buttons()
        self._say("reading the prompts…")
        self._ops.run_in_thread(
            "compare: read the prompts",
            operations.read_prompts,
            Path(path).expanduser(),
            on_done=lambda prompts: self._run(prompts, settings),
            on_error=self._on_failed,
            quiet=True,
        )

    def _run(self, prompts: list[Any] | None, settings: Any) -> None:
        if self._closed:  # closed while the prompts were read: start no server
            self.running = False
            self._say("cancelled")
            self._update_buttons()
            self.run_finished.emit("cancelled")
            return
        self.running = True
        self._cancel = cancel = operations.CompareCancel()
        self._update_buttons()
        self._say("loading the model…")
        work = functools.partial(
            operations.compare_jobs,
            self._runtime(),
            [(job_id, folder) for job_id, _, folder in self.jobs],
            prompts,
            eval_records=0 if prompts is not None else self.eval_count.value(),
            with_eval_loss=self.eval_loss_check.isChecked(),
            settings=settings,
            progress=self.progress_changed.emit,
            cancel=cancel,
        )
        self._ops.run_in_thread(
            "compare: run",
            work,
            on_done=self._on_done,
            on_error=self._on_failed,
            quiet=True,
        )

    def cancel(self) -> None:
        """Stop the run: its model server is closed (in a worker thread), nothing is kept."""
        if self._cancel is not None and self.running:
            self._say("cancelling…")
            self._ops.run_in_thread("compare: cancel", self._cancel.cancel)

    def shutdown(self) -> None:
        """Stop the run now (blocking: the window is closing); no server is left running."""
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel.cancel()

    def showEvent(self, event: QShowEvent) -> None:
        """Qt override: shown (again), a run may start."""
        self._closed = False
        super().showEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        """Qt override: closing the dialog cancels its run (the servers go with it)."""
        self._closed = True
        self.cancel()
        super().closeEvent(event)

    def reject(self) -> None:
        """Qt override (Escape): as closing."""
        self._closed = True
        self.cancel()
        super().reject()

    def _on_progress_changed(self, line: str) -> None:
        if not self.running:
            return
        job_id, _, what = line.partition(": ")
        name = next((n for i, n, _ in self.jobs if i == job_id), job_id)
        self._say(f"{what} · job {name}")

    def _on_done(self, result: tuple[list[Any], list[Any]]) -> None:
        self.running = False
        self._cancel = None
        self.rows, self.losses = result
        names = {job_id: name for job_id, name, _ in self.jobs}
        self.model.set_results(self.rows, [(i, n) for i, n, _ in self.jobs])
        self.losses_label.setText("\n".join(loss_line(loss, names) for loss in self.losses))
        self.detail.clear()
        self._say(f"{len(self.rows)} prompt(s) through the base and {len(self.jobs)} job(s)")
        self._update_buttons()
        self.run_finished.emit("done")

    def _on_failed(self, exc: BaseException) -> None:
        self.running = False
        self._cancel = None
        cancelled = isinstance(exc, operations.CompareCancelled)
        sentence = "cancelled" if cancelled else str(exc)
        self._say(sentence)
        self._update_buttons()
        self.run_finished.emit(sentence)

    # -- results ----------------------------------------------------------------------------

    def _on_table_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        text = self.model.full_text(current)
        title = self.model.headerData(current.column(), Qt.Orientation.Horizontal)
        self.detail.setPlainText(f"{title}:\n{text}" if current.isValid() else "")

    def _ask_save(self, suffix: str) -> None:
        kind = "CSV (*.csv)" if suffix == ".csv" else "JSON lines (*.jsonl)"
        path, _ = QFileDialog.getSaveFileName(self, "Save the compare", f"compare{suffix}", kind)
        if path:
            if not path.lower().endswith(suffix):
                path += suffix
            self.save_to(path)

    def save_to(self, path: str) -> None:
        """Write the results to `path` (`.csv`: CSV of the answers, else JSON lines with the
        eval losses), in a worker thread; the panel says where they went."""
        self._ops.run_in_thread(
            "compare: save",
            operations.save_compare_results,
            Path(path),
            list(self.rows),
            list(self.losses),
            on_done=lambda saved: self._say(f"saved {len(self.rows)} prompt(s) to {saved}"),
            on_error=lambda exc: self._say(str(exc)),
            quiet=True,
        )

    # -- showing ----------------------------------------------------------------------------

    def _settings(self) -> Any:
        return self.generation.settings()

    def _on_browse_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Prompts file", "", "JSON lines (*.jsonl *.json);;All files (*)"
        )
        if path:
            self.prompts_edit.setText(path)
            self.file_radio.setChecked(True)

    def _say(self, sentence: str) -> None:
        self.status_label.setText(sentence)

    def _update_buttons(self) -> None:
        self.run_button.setEnabled(bool(self.jobs) and not self.running)
        self.cancel_button.setEnabled(self.running)
        for button in (self.save_jsonl_button, self.save_csv_button):
            button.setEnabled(bool(self.rows) and not self.running)
