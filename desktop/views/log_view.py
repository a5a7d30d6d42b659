"""The log view of one job: bounded, follows the end, searchable, pausable."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from PySide6.QtCore import Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontDatabase,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextOption,
)
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.models.job import Job, JobState
from desktop.views.state import AppState

__all__ = ["DEFAULT_MAX_LINES", "LogView", "ended_line"]

DEFAULT_MAX_LINES = 10_000


def ended_line(job: Job) -> str | None:
    """The line that closes a failed job's log: why it failed; None for any other state.

    A completed or cancelled job's log says so itself; a trainer killed from outside, or one
    that never started, leaves no last word, so the app's reason is the last line.
    """
    if job.state is not JobState.FAILED:
        return None
    reason = job.state_reason.strip()
    first = reason.splitlines()[0] if reason else ""
    return f"■ job failed: {first}" if first else "■ job failed (no reason was recorded)"


class LogView(QWidget):
    """Shows the log of one job, keeping at most `max_lines` lines.

    It follows the end unless the user scrolled up (scrolling back to the bottom resumes
    following) or pressed Pause; while paused, new lines are held (at most `max_lines`, the
    oldest dropped) and appended on resume. Search finds the next/previous match and
    highlights every match in view.

    With an AppState, `set_job` shows that job's recent lines and new lines of that job
    arrive through `AppState.log_appended`. Once the job has failed, its last line says why
    (`ended_line`), and stays last as later lines arrive.

    Signals:
        paused_changed(bool): the Pause toggle changed.
    """

    paused_changed = Signal(bool)

    def __init__(
        self,
        state: AppState | None = None,
        parent: QWidget | None = None,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
    ) -> None:
        super().__init__(parent)
        self._state = state
        self._job_id: str | None = None
        self._max_lines = max_lines
        self._held: deque[str] = deque(maxlen=max_lines)
        self._follow = True
        self._end_line: str | None = None

        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setUndoRedoEnabled(False)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        # A traceback's long path or a URL wraps anywhere rather than run off the view.
        self.text.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.text.setMaximumBlockCount(max_lines)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.verticalScrollBar().valueChanged.connect(self._on_scrollbar_value_changed)

        self.pause_button = QToolButton(self)
        self.pause_button.setText("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Hold new lines (they are added when you resume)")
        self.pause_button.toggled.connect(self._on_pause_button_toggled)
        self.search_edit = QLineEdit(self)
        self.search_edit.setPlaceholderText("Find in log…")
        self.search_edit.setClearButtonEnabled(True)
        hint = self.search_edit.fontMetrics().horizontalAdvance("Find in log…")
        self.search_edit.setMinimumWidth(hint + 40)  # never shrunk to "Find i…"
        self.search_edit.returnPressed.connect(self.find_next)
        self.search_edit.textChanged.connect(self._on_search_edit_text_changed)
        self.prev_button = QPushButton("↑", self)
        self.prev_button.setToolTip("Find previous")
        self.prev_button.clicked.connect(self.find_previous)
        self.next_button = QPushButton("↓", self)
        self.next_button.setToolTip("Find next")
        self.next_button.clicked.connect(self.find_next)
        for arrow in (self.prev_button, self.next_button):
            arrow.setMaximumWidth(32)  # a push button is some 80 px wide by default
        self.status_label = QLabel("", self)
        self.wrap_button = QToolButton(self)
        self.wrap_button.setText("Wrap")
        self.wrap_button.setCheckable(True)
        self.wrap_button.setChecked(True)
        self.wrap_button.setToolTip("Wrap long lines (off: scroll sideways)")
        self.wrap_button.toggled.connect(self._on_wrap_button_toggled)
        self.title_label = QLabel("No job selected", self)
        self.title_label.setObjectName("log_title")
        self.title_label.setToolTip("Whose log this is")

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.search_edit, 1)
        bar.addWidget(self.prev_button)
        bar.addWidget(self.next_button)
        bar.addWidget(self.status_label)
        bar.addWidget(self.wrap_button)
        bar.addWidget(self.pause_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.title_label)
        layout.addLayout(bar)
        layout.addWidget(self.text, 1)

        if state is not None:
            state.log_appended.connect(self._on_state_log_appended)
            state.row_changed.connect(self._on_state_row_changed)
            state.selection_changed.connect(lambda _ids: self._update_title())

    # -- public API ---------------------------------------------------------------------------

    @property
    def job_id(self) -> str | None:
        """The job shown (None: none)."""
        return self._job_id

    def set_job(self, job_id: str | None) -> None:
        """Show this job's log: its recent lines from AppState, then what arrives."""
        self._job_id = job_id
        self._held.clear()
        self.text.clear()
        self._end_line = None
        self._follow = True
        if job_id is not None and self._state is not None:
            self._append(self._state.log_tail(job_id)[-self._max_lines :])
            job = self._state.job(job_id)
            self._set_end_line(None if job is None else ended_line(job))
        self._update_title()

    def _update_title(self) -> None:
        """Say whose log this is; with several runs selected, which of them."""
        job = None if self._job_id is None or self._state is None else self._state.job(self._job_id)
        if job is None:
            self.title_label.setText("No job selected")
            return
        selected = self._state.selected_job_ids if self._state is not None else ()
        text = f"Log of {job.name}"
        if len(selected) > 1 and job.id in selected:
            text += f" (the last of {len(selected)} selected runs)"
        self.title_label.setText(text)

    def _on_wrap_button_toggled(self, wrap: bool) -> None:
        mode = QPlainTextEdit.LineWrapMode
        self.text.setLineWrapMode(mode.WidgetWidth if wrap else mode.NoWrap)

    @property
    def paused(self) -> bool:
        """Whether new lines are being held."""
        return self.pause_button.isChecked()

    def set_paused(self, paused: bool) -> None:
        """Hold new lines (True) or append the held ones and go on (False)."""
        self.pause_button.setChecked(paused)

    @property
    def held_line_count(self) -> int:
        """Lines held while paused."""
        return len(self._held)

    @property
    def following(self) -> bool:
        """Whether the view scrolls to each new line."""
        return self._follow

    def append_lines(self, lines: Iterable[str]) -> None:
        """Add lines (held while paused); the oldest beyond `max_lines` are dropped."""
        lines = list(lines)
        if not lines:
            return
        if self.paused:
            self._held.extend(lines)
            self.pause_button.setText(f"Resume ({len(self._held)})")
            return
        self._append(lines)

    def line_count(self) -> int:
        """Lines in the view (a trailing empty block counts as one)."""
        return self.text.blockCount()

    def find_next(self) -> bool:
        """Select the next match of the search text (wrapping); False when there is none."""
        return self._find(backward=False)

    def find_previous(self) -> bool:
        """Select the previous match of the search text (wrapping); False when there is none."""
        return self._find(backward=True)

    # -- internals ----------------------------------------------------------------------------

    def _set_end_line(self, line: str | None) -> None:
        if line == self._end_line:
            return
        end, self._end_line = self._end_line, None
        if end is not None:
            self._remove_last_line()
        if line is not None:
            self._append([line])
            self._end_line = line

    def _remove_last_line(self) -> None:
        cursor = QTextCursor(self.text.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.movePosition(QTextCursor.MoveOperation.StartOfBlock, QTextCursor.MoveMode.KeepAnchor)
        cursor.removeSelectedText()
        cursor.deletePreviousChar()  # the line break before it

    def _append(self, lines: list[str]) -> None:
        if self._end_line is not None:  # the ended line stays last
            self._remove_last_line()
            lines = [*lines, self._end_line]
        if len(lines) > self._max_lines:
            lines = lines[-self._max_lines :]
        bar = self.text.verticalScrollBar()
        keep, follow = bar.value(), self._follow  # inserting moves the bar: decide first
        cursor = QTextCursor(self.text.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        if not self.text.document().isEmpty():
            cursor.insertBlock()
        cursor.insertText("\n".join(line.rstrip("\n") for line in lines))
        cursor.endEditBlock()
        self._follow = follow
        if follow:
            bar.setValue(bar.maximum())
        else:
            bar.setValue(min(keep, bar.maximum()))
        if self.search_edit.text():
            self._highlight_all(self.search_edit.text())

    def _find(self, *, backward: bool) -> bool:
        needle = self.search_edit.text()
        if not needle:
            self.status_label.setText("")
            return False
        flags = QTextDocument.FindFlag.FindBackward if backward else QTextDocument.FindFlag(0)
        found = self.text.find(needle, flags)
        if not found:  # wrap around
            cursor = self.text.textCursor()
            cursor.movePosition(
                QTextCursor.MoveOperation.End if backward else QTextCursor.MoveOperation.Start
            )
            self.text.setTextCursor(cursor)
            found = self.text.find(needle, flags)
        self.status_label.setText("" if found else "not found")
        if found:
            self._follow = False
        return found

    def _highlight_all(self, needle: str) -> None:
        selections: list[QTextEdit.ExtraSelection] = []
        if needle:
            fmt = QTextCharFormat()
            fmt.setBackground(QColor("#fff3a0"))
            fmt.setFontWeight(QFont.Weight.Bold)
            document = self.text.document()
            cursor = document.find(needle, 0)
            while not cursor.isNull() and len(selections) < 1000:
                selection = QTextEdit.ExtraSelection()
                selection.cursor = cursor
                selection.format = fmt
                selections.append(selection)
                cursor = document.find(needle, cursor)
        self.text.setExtraSelections(selections)

    # -- slots --------------------------------------------------------------------------------

    def _on_state_log_appended(self, job_id: str, lines: list[str]) -> None:
        if job_id == self._job_id:
            self.append_lines(lines)

    def _on_state_row_changed(self, row: int) -> None:
        if self._state is None or self._job_id is None:
            return
        job = self._state.job_at(row)
        if job.id == self._job_id:
            self._set_end_line(ended_line(job))

    def _on_scrollbar_value_changed(self, value: int) -> None:
        # At the bottom: follow; scrolled up by the user: stay where they are.
        self._follow = value >= self.text.verticalScrollBar().maximum()

    def _on_pause_button_toggled(self, paused: bool) -> None:
        if not paused:
            self.pause_button.setText("Pause")
            held = list(self._held)
            self._held.clear()
            self._follow = True
            if held:
                self._append(held)
        self.paused_changed.emit(paused)

    def _on_search_edit_text_changed(self, text: str) -> None:
        self._highlight_all(text)
        self.status_label.setText("")
