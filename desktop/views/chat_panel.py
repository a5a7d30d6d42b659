"""The Chat tab: talk to the selected job's model, base and fine-tuned answers side by side.

The panel shows one job at a time (the last selected). Send asks both models the same prompt:
the base (adapter switched off) answers in the left pane, the fine-tuned model in the right,
each streaming as its tokens arrive. Stop ends both answers, Regenerate asks the last prompt
again, Copy puts the last turn on the clipboard, and the eval picker fills the prompt with a
record of the job's eval split. The conversation (system prompt, settings, turns) is saved
with the job after every turn. The model server starts on the first Send and ends when
another job is shown or the window closes (`shutdown`); a server that dies is one sentence
under the panes, and the next Send starts a new one.

All work (the server, the files) goes through `Operations` and the core's `ChatSession`; the
tokens come from a worker thread through the `token_arrived` signal (a queued connection).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QGuiApplication, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from desktop.models import JobState
from desktop.views import operations
from desktop.views.generation_controls import GenerationControls
from desktop.views.newest_writer import NewestWriter

if TYPE_CHECKING:
    from desktop.views.operations import Operations
    from desktop.views.state import AppState

__all__ = ["ChatPanel"]

log = logging.getLogger(__name__)

_SIDES = ("base", "tuned")
_CLOSE = "chat: end the model server"


class ChatPanel(QWidget):
    """Chat with the selected job's model, base and fine-tuned side by side.

    Args:
        state: the app state (the selection says which job).
        ops: runs the blocking work.
        runtime: gives the trainer runtime that starts the model server.
        parent: the Qt parent.

    Signals:
        token_arrived(str side, str text): new text of the base or the tuned answer (emitted
            from a worker thread).
        turn_finished(): both answers of a turn ended and the conversation was updated.
        server_failed(str): the model server could not start or died (the sentence).
        compare_requested(): "Batch compare…" was clicked (the window opens the dialog).
    """

    token_arrived = Signal(str, str)
    turn_finished = Signal()
    server_failed = Signal(str)
    compare_requested = Signal()

    def __init__(
        self,
        state: AppState,
        ops: Operations,
        runtime: Callable[[], Any],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._state = state
        self._ops = ops
        self._runtime = runtime
        self.job_id: str | None = None
        self._job_dir: Any = None
        self.session: Any = None
        self._to_close: list[Any] = []  # dropped sessions whose close has not started yet
        self._sessions_made = 0
        self._session_label = ""  # in the shown session's operation names: "<job>, server <n>"
        self._savers: dict[str, NewestWriter[Any]] = {}  # chat.json's writers, by job id
        self.conversation: Any = operations.Conversation()
        self.answering = False
        self.loaded = False  # the shown job's saved conversation is read
        self.eval_records: list[Any] = []

        self.system_edit = QLineEdit(self)
        self.system_edit.setPlaceholderText("System prompt (optional)")
        self.generation = GenerationControls(self)
        self.temperature = self.generation.temperature
        self.top_p = self.generation.top_p
        self.max_new_tokens = self.generation.max_new_tokens
        self.seed = self.generation.seed
        self.eval_picker = QComboBox(self)
        self.eval_picker.setToolTip("Prompts from the job's eval split")
        self.eval_picker.activated.connect(self._on_eval_picker_activated)

        self.panes = {side: QPlainTextEdit(self) for side in _SIDES}
        titles = {"base": QLabel("<b>Base model</b>"), "tuned": QLabel("<b>Fine-tuned</b>")}
        split = QSplitter(self)
        for side in _SIDES:
            pane = self.panes[side]
            pane.setReadOnly(True)
            pane.setObjectName(f"chat_{side}")
            box = QWidget(split)
            column = QVBoxLayout(box)
            column.setContentsMargins(0, 0, 0, 0)
            column.addWidget(titles[side])
            column.addWidget(pane)
            split.addWidget(box)

        self.prompt_edit = QPlainTextEdit(self)
        self.prompt_edit.setPlaceholderText("Ask both models…")
        self.prompt_edit.setMaximumHeight(70)
        self.send_button = QPushButton("Send", self)
        self.stop_button = QPushButton("Stop", self)
        self.regenerate_button = QPushButton("Regenerate", self)
        self.copy_button = QPushButton("Copy", self)
        self.copy_button.setToolTip("Copy the last prompt and both answers")
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.regenerate_button.clicked.connect(self.regenerate)
        self.copy_button.clicked.connect(self.copy_last_turn)
        self.compare_button = QPushButton("Batch compare…", self)
        self.compare_button.setToolTip("A prompts file through the selected jobs, as a table")
        self.compare_button.clicked.connect(self.compare_requested)
        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)

        # Two short rows rather than one long one: the tab shares the log's narrow column, and
        # its minimum width must not push the window's other panes.
        form = QFormLayout()
        form.addRow("System", self.system_edit)
        form.addRow("Eval prompts", self.eval_picker)
        self.eval_picker.setMinimumContentsLength(12)
        self.eval_picker.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        settings = QGridLayout()
        for index, (label, widget) in enumerate(self.generation.labelled()):
            settings.addWidget(QLabel(label, self), index // 2, (index % 2) * 2)
            settings.addWidget(widget, index // 2, (index % 2) * 2 + 1)
        settings.setColumnStretch(4, 1)
        buttons = QVBoxLayout()
        for button in (self.send_button, self.stop_button, self.regenerate_button):
            buttons.addWidget(button)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.compare_button)
        ask = QHBoxLayout()
        ask.addWidget(self.prompt_edit, 1)
        ask.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(settings)
        layout.addWidget(split, 1)
        layout.addLayout(ask)
        layout.addWidget(self.status_label)

        self.token_arrived.connect(self._on_token_arrived)
        state.selection_changed.connect(self._on_state_selection_changed)
        state.row_changed.connect(self._on_state_row_changed)
        self._show_settings(self.conversation)
        self._update_buttons()

    # -- which job --------------------------------------------------------------------------

    def _on_state_selection_changed(self, job_ids: list[str]) -> None:
        if job_ids:
            self.set_job(job_ids[-1])

    def set_job(self, job_id: str) -> None:
        """Show `job_id`'s chat (its saved conversation); its model loads on the first Send."""
        job = self._state.job(job_id)
        if job is None:
            return
        if job_id == self.job_id:
            if not self.loaded and job.state is JobState.COMPLETED:
                self._load(job)  # it completed while shown
            return
        session, self.session = self.session, None
        self.answering = False
        if session is not None:  # its answer, if any, ends with "closed": ignored as stale
            self._end(session)
        self.job_id, self._job_dir = job_id, job.job_dir
        self.eval_records = []
        self.eval_picker.clear()
        self.loaded = False
        self.conversation = operations.Conversation()
        self._render()
        if job.state is not JobState.COMPLETED:
            self._say("this job has no finished model yet; its chat opens once it completes")
        else:
            self._load(job)
        self._update_buttons()

    def _load(self, job: Any) -> None:
        self._say("")
        self._ops.run_in_thread(
            f"chat: open the saved conversation of {job.id}",
            operations.load_conversation,
            job.job_dir,
            on_done=functools.partial(self._on_loaded, job.id),
        )

    def _on_state_row_changed(self, row: int) -> None:
        if self.job_id is not None and self._state.job_at(row).id == self.job_id:
            self.set_job(self.job_id)

    def _on_loaded(self, job_id: str, loaded: tuple[Any, str | None]) -> None:
        if job_id != self.job_id:
            return
        self.conversation, problem = loaded
        self.loaded = True
        self._show_settings(self.conversation)
        self._render()
        if problem:
            self._say(problem)
        self._update_buttons()

    def _ready_to_chat(self) -> bool:
        job = self._state.job(self.job_id) if self.job_id else None
        return self.loaded and job is not None and job.state is JobState.COMPLETED

    # -- asking -----------------------------------------------------------------------------

    def send(self) -> None:
        """Ask both models the prompt in the edit box."""
        prompt = self.prompt_edit.toPlainText().strip()
        if not prompt or self.answering or not self._ready_to_chat():
            return
        self.prompt_edit.clear()
        if not self._ask(prompt):
            self.prompt_edit.setPlainText(prompt)  # not asked: the prompt is not lost

    def regenerate(self) -> None:
        """Ask the last prompt again (its answers are replaced)."""
        if self.answering or not self.conversation.turns:
            return
        last = self.conversation.turns.pop()
        self._render()
        if not self._ask(last.prompt):
            self.conversation.turns.append(last)  # not asked: the turn stays
            self._render()

    def stop(self) -> None:
        """Stop both answers (the server sends at most one more token)."""
        if self.session is not None and self.answering:
            self._session_op(self.session, "stop", self.session.stop)

    def copy_last_turn(self) -> None:
        """Put the last prompt and both answers on the clipboard."""
        if not self.conversation.turns:
            return
        turn = self.conversation.turns[-1]
        text = f"Prompt: {turn.prompt}\n\nBase model:\n{turn.base}\n\nFine-tuned:\n{turn.tuned}\n"
        QGuiApplication.clipboard().setText(text)

    def _ask(self, prompt: str) -> bool:
        """Start asking `prompt` (loading the model first if needed); False when it could not
        start (the status line says why)."""
        try:
            self.conversation = self.conversation.model_copy(
                update={"system": self.system_edit.text(), "settings": self._settings()}
            )
        except ValueError as exc:
            self._say(f"generation settings: {exc}")
            return False
        self.answering = True
        self._update_buttons()
        for side in _SIDES:
            self._append(side, ("\n\n" if self.conversation.turns else "") + f"You: {prompt}\n")
        if self.session is None:
            self._say("loading the model…")
            self._sessions_made += 1
            self._session_label = f"{self.job_id}, server {self._sessions_made}"
            self.session = session = operations.ChatSession(self._runtime(), self._job_dir)
            started = self._session_op(
                session,
                "load the model",
                session.start,
                on_done=lambda _ready: self._on_session_started(session, prompt),
            )
            if not started:
                self.session = None  # never started: nothing to close
            return started
        return self._run_turn(self.session, prompt)

    def _session_op(
        self,
        session: Any,
        what: str,
        func: Callable[..., Any],
        *args: Any,
        on_done: Callable[[Any], None] | None = None,
    ) -> bool:
        """Run `func(*args)` in a thread as the shown session's operation `what` (its errors go
        to `_on_server_error`); False, the answer ended and the reason said, when it could not
        start.

        The name holds the session's label: the operations of a dropped session that still run
        (a load, an answer its close is ending) never refuse the shown session's.
        """
        name = f"chat: {what} ({self._session_label})"
        task = self._ops.run_in_thread(
            name,
            func,
            *args,
            on_done=on_done,
            on_error=lambda exc: self._on_server_error(session, exc),
            quiet=True,
        )
        if task is not None:
            return True
        why = "it is already running" if self._ops.is_running(name) else "the app is closing"
        self._say(f"{name} could not start: {why}")
        if what in ("load the model", "answer") and session is self.session:
            self.answering = False
            self._render()
            self._update_buttons()
        return False

    def _on_session_started(self, session: Any, prompt: str) -> None:
        if session is not self.session:
            return  # another job is shown now
        self._say(f"model server ready (pid {session.pid})")
        self._session_op(
            session,
            "eval prompts",
            session.eval_prompts,
            on_done=lambda records: self._on_eval_prompts(session, records),
        )
        if not self._run_turn(session, prompt):
            self.prompt_edit.setPlainText(prompt)  # not asked: the prompt is not lost

    def _run_turn(self, session: Any, prompt: str) -> bool:
        return self._session_op(
            session,
            "answer",
            session.ask,
            self.conversation,
            prompt,
            self.token_arrived.emit,
            on_done=lambda turn: self._on_turn_done(session, turn),
        )

    def _on_token_arrived(self, side: str, text: str) -> None:
        self._append(side, text)

    def _on_turn_done(self, session: Any, turn: Any) -> None:
        if session is not self.session:
            return
        self.answering = False
        self.conversation.turns.append(turn)
        if "stopped" in (turn.base_end, turn.tuned_end):
            self._say("stopped")
        self._render()
        self._update_buttons()
        assert self.job_id is not None  # a session is only made for a shown job
        saver = self._savers.get(self.job_id)
        if saver is None:  # one writer per job: the newest conversation reaches it last
            saver = self._savers[self.job_id] = NewestWriter(
                self._ops,
                f"chat: save the conversation of {self.job_id}",
                functools.partial(_save_conversation, self._job_dir),
            )
        saver.save(self.conversation.model_copy(deep=True))
        self.turn_finished.emit()

    def _on_server_error(self, session: Any, exc: BaseException) -> None:
        if session is not self.session:
            return  # a server this panel already let go of
        self.answering = False
        sentence = str(exc)
        self._say(sentence)
        session, self.session = self.session, None
        if session is not None:  # the next Send starts a fresh one
            self._end(session)
        self._render()
        self._update_buttons()
        self.server_failed.emit(sentence)

    def _on_eval_prompts(self, session: Any, records: list[Any]) -> None:
        if session is not self.session:
            return
        self.eval_records = records
        self.eval_picker.clear()
        if not records:
            self.eval_picker.addItem("(no eval split)")
            return
        self.eval_picker.addItem(f"Prompts from the eval split ({len(records)})…")
        for record in records:
            self.eval_picker.addItem(record.messages[-1].content[:80])

    def _on_eval_picker_activated(self, index: int) -> None:
        if 1 <= index <= len(self.eval_records):
            self.prompt_edit.setPlainText(self.eval_records[index - 1].messages[-1].content)

    # -- showing ----------------------------------------------------------------------------

    def _settings(self) -> Any:
        return self.generation.settings()

    def _show_settings(self, conversation: Any) -> None:
        self.system_edit.setText(conversation.system)
        self.generation.show(conversation.settings)

    def _render(self) -> None:
        for side in _SIDES:
            parts = []
            for turn in self.conversation.turns:
                end = " [stopped]" if getattr(turn, f"{side}_end") == "stopped" else ""
                parts.append(f"You: {turn.prompt}\n{getattr(turn, side)}{end}")
            self.panes[side].setPlainText("\n\n".join(parts))

    def _append(self, side: str, text: str) -> None:
        pane = self.panes[side]
        cursor = pane.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        pane.setTextCursor(cursor)
        pane.ensureCursorVisible()

    def _say(self, sentence: str) -> None:
        self.status_label.setText(sentence)

    def _update_buttons(self) -> None:
        ready = self._ready_to_chat()
        self.send_button.setEnabled(ready and not self.answering)
        self.regenerate_button.setEnabled(ready and not self.answering)
        self.stop_button.setEnabled(self.answering)
        self.copy_button.setEnabled(bool(self.conversation.turns))

    # -- ending model servers --------------------------------------------------------------

    def _end(self, session: Any) -> None:
        """Close the dropped `session` in the background, after any close in progress.

        One close operation runs at a time (`Operations` refuses a second of the same name), so
        the running one closes every session queued while it runs; none is left open.
        """
        self._to_close.append(session)
        # On the Qt thread, as the running close's last look (`_close_dropped` returning and
        # the operation ending happen in one step of the loop): it either sees this session or
        # has ended, and then a new one starts.
        if not self._ops.is_running(_CLOSE):
            self._ops.run(_CLOSE, self._close_dropped())

    async def _close_dropped(self) -> None:
        import asyncio

        while self._to_close:
            await asyncio.to_thread(self._to_close.pop(0).close)

    def shutdown(self) -> None:
        """End the model servers now (blocking: the window is closing): the shown job's and
        every dropped one whose close has not started (one in progress ends in its thread).
        Then write each job's newest conversation if its save has not (one small file)."""
        session, self.session = self.session, None
        self.answering = False
        if session is not None:
            self._to_close.append(session)
        while self._to_close:
            self._to_close.pop(0).close()
        for saver in self._savers.values():
            try:
                saver.flush()
            except OSError as exc:  # the window closes anyway; the turns before are on disk
                log.warning("the chat could not be saved: %s", exc)


def _save_conversation(job_dir: Any, conversation: Any) -> None:
    operations.save_conversation(job_dir, conversation)
