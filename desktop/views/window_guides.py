"""What the window says when there is little to show, and what it remembers of the person's
place: `install_window_guides` wires them into a built window.

- Empty states with a next step: `EmptyHint` is a label laid over a widget (centred,
  word-wrapped, transparent to the mouse); it asks a function for its text whenever AppState
  changes and hides itself when there is none. `chart_hint_text` and `log_hint_text` say what
  the chart and the log view lack: no jobs yet, no job selected, a job with nothing logged.
- The last selected job is kept in `window.ini` (`LayoutMemory`) and selected again at the
  next start when it still exists.
- Status messages that name a job give way to that job's newer state
  (`WindowStatusBar.follow_state`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QLabel, QWidget

if TYPE_CHECKING:  # light on purpose: the window's first paint imports this module
    from desktop.views.main_window import MainWindow
    from desktop.views.state import AppState

__all__ = ["EmptyHint", "chart_hint_text", "install_window_guides", "log_hint_text"]

_START = "Pick the Demo preset (Presets) and press Start"


def chart_hint_text(state: AppState, job_ids: tuple[str, ...]) -> str | None:
    """What the chart lacks, for the jobs it shows; None when it has curves."""
    if not state.job_count():
        return f"No jobs yet.\n{_START}: its loss curve appears here."
    if not job_ids:
        return (
            "No job selected.\nTo see curves, select a job on the left, "
            f"or {_START[0].lower()}{_START[1:]}."
        )
    if any(state.series_names(job_id) for job_id in job_ids):
        return None
    if any(state.history_loading(job_id) for job_id in job_ids):
        return None  # the chart says "Loading history …" itself
    job = state.job(job_ids[-1])
    name = job.name if job is not None else job_ids[-1]
    if job is not None and job.is_final:
        return f"{name}: no metric points were logged."
    return f"{name}: waiting for the first logged step …"


def log_hint_text(state: AppState, job_id: str | None, has_text: bool) -> str | None:
    """What the log view lacks; None when it shows lines."""
    if has_text:
        return None
    if not state.job_count():
        return "No jobs yet.\nA job's console output appears here once it starts."
    if job_id is None:
        return "No job selected.\nSelect a job on the left to read its log."
    return "No log lines yet."


class EmptyHint(QLabel):
    """A hint over `target` (its child), shown while `text()` returns one.

    Args:
        target: the widget it covers (it follows its size).
        text: returns the hint, or None to hide it.
    """

    def __init__(self, target: QWidget, text: Callable[[], str | None]) -> None:
        super().__init__(target)
        self._target = target
        self._text = text
        self.setObjectName("empty_hint")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setStyleSheet("color: palette(mid); font-size: 13px; background: transparent;")
        target.installEventFilter(self)
        self.setGeometry(target.rect())
        self.refresh()

    def refresh(self, *_args: object) -> None:
        """Ask for the hint again (connected to AppState's signals)."""
        text = self._text()
        if text is None:
            self.hide()
            return
        self.setText(text)
        self.setGeometry(self._target.rect())
        self.show()
        self.raise_()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Follow the target's size."""
        if watched is self._target and event.type() == QEvent.Type.Resize:
            self.setGeometry(self._target.rect())
        return False


def install_window_guides(window: MainWindow) -> tuple[EmptyHint, EmptyHint]:
    """Give a built window its empty-state hints, its memory of the selected job, and a status
    bar that follows the jobs' states; returns the chart's and the log view's hints."""
    state, log_view = window.state, window.log_view
    window.status_bar.follow_state(state)
    chart_hint = EmptyHint(window.chart, lambda: chart_hint_text(state, state.selected_job_ids))
    log_hint = EmptyHint(
        log_view.text,
        lambda: log_hint_text(state, log_view.job_id, not log_view.text.document().isEmpty()),
    )
    for signal in (state.row_added, state.row_removed, state.row_changed, state.selection_changed):
        signal.connect(chart_hint.refresh)
        signal.connect(log_hint.refresh)
    state.metrics_appended.connect(chart_hint.refresh)
    state.history_changed.connect(chart_hint.refresh)
    log_view.text.document().contentsChanged.connect(log_hint.refresh)
    memory = window.layout_memory

    def reselect() -> None:
        # After the history is loaded (start() emits `started`): select it if it still exists.
        job_id = memory.last_selected_job()
        if job_id is not None and state.job(job_id) is not None and not state.selected_job_ids:
            window.jobs_view.select_job_ids([job_id])
        state.selection_changed.connect(
            lambda ids: memory.remember_selected_job(ids[-1] if ids else None)
        )

    window.started.connect(reselect)
    return chart_hint, log_hint
