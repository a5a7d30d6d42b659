"""The Chat tab driven in the window on the demo job trained in the test.

Base and fine-tuned answers stream side by side, the conversation is saved in the job's
folder, the eval picker fills the prompt, Regenerate and Copy work, Stop ends both answers,
a killed server is one sentence in the panel, and closing the window leaves no server behind.
The test process never imports torch: the server is a child process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
from app_helpers import run, suspend_process, unread_stdin_bytes, until

from desktop.models import Settings

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.qt_log_level_fail("CRITICAL")

JOB_ID = "20260101-000000-chat"


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.fixture
def chat_home(home: Path, trained_chat_job: Path) -> Path:
    """FTDESK_HOME whose store holds the trained demo job (completed)."""
    from desktop.core.repair import _job_from_folder
    from desktop.core.store import DB_FILENAME, JobStore

    folder = home / "jobs" / JOB_ID
    shutil.copytree(trained_chat_job, folder, ignore=shutil.ignore_patterns("checkpoints"))
    job, _ = _job_from_folder(folder)
    with JobStore(home / DB_FILENAME) as store:
        store.add_job(job, "copied for the chat test")
    return home


@pytest.mark.slow  # ~30 s: two model server starts and five turns
def test_the_chat_panel_answers_side_by_side_and_leaves_no_server(
    qtbot: Any, qloop: Any, chat_home: Path
) -> None:
    from desktop.views.app import build_window

    window = build_window(settings=Settings(poll_interval_s=0.25), check_runtime=False)
    qtbot.addWidget(window)
    tokens: list[tuple[str, str]] = []
    failures: list[str] = []

    async def body() -> None:
        await window.start()
        panel = window.chat_panel
        panel.token_arrived.connect(lambda side, text: tokens.append((side, text)))
        panel.server_failed.connect(failures.append)
        window.state.set_selected_job_ids([JOB_ID])
        window.log_tabs.setCurrentWidget(panel)
        await until(lambda: panel.send_button.isEnabled(), 60)

        panel.system_edit.setText("be brief")
        panel.temperature.setValue(0.0)
        panel.max_new_tokens.setValue(12)
        panel.prompt_edit.setPlainText("count on from 17")
        panel.send_button.click()
        await until(lambda: len(panel.conversation.turns) == 1 and not panel.answering, 300)
        turn = panel.conversation.turns[0]
        assert turn.base_end in ("eos", "length") and turn.tuned_end in ("eos", "length")
        assert turn.tuned != turn.base  # the adapter was on for the right-hand side
        assert "".join(t for s, t in tokens if s == "base") == turn.base
        assert panel.panes["base"].toPlainText().endswith(turn.base)
        assert panel.panes["tuned"].toPlainText() == f"You: count on from 17\n{turn.tuned}"
        saved = Path(chat_home / "jobs" / JOB_ID / "chat.json")
        await until(saved.exists, 30)
        data = json.loads(saved.read_text(encoding="utf-8"))
        assert data["system"] == "be brief" and data["turns"][0]["base"] == turn.base
        assert data["settings"]["max_new_tokens"] == 12

        # The eval split's prompts, for the picker.
        await until(lambda: panel.eval_picker.count() > 1, 60)
        assert panel.eval_picker.itemText(0) == "Prompts from the eval split (32)…"
        panel.eval_picker.activated.emit(1)
        assert panel.prompt_edit.toPlainText() == panel.eval_records[0].messages[-1].content

        # Regenerate replaces the last turn; greedy decoding gives the same answers.
        panel.regenerate_button.click()
        await until(lambda: not panel.answering and panel.send_button.isEnabled(), 300)
        assert len(panel.conversation.turns) == 1
        assert panel.conversation.turns[0].tuned == turn.tuned
        panel.copy_button.click()
        from PySide6.QtGui import QGuiApplication

        copied = QGuiApplication.clipboard().text()
        assert copied.startswith("Prompt: count on from 17\n\nBase model:\n")

        # Stop: the base's long answer ends early; the queued fine-tuned one never starts.
        panel.max_new_tokens.setValue(400)
        panel.prompt_edit.setPlainText("count on from 3")
        before = len(tokens)
        panel.send_button.click()
        await until(lambda: len(tokens) > before + 2, 300)
        # The tiny model's whole answer takes about a second: held (SIGSTOP) until the stop is
        # in its pipe, it cannot end on its own first, however loaded the machine is.
        server = psutil.Process(panel.session.pid)
        suspend_process(server.pid)
        try:
            panel.stop_button.click()
            await until(lambda: unread_stdin_bytes(server.pid) > 0, 60)
        finally:
            server.resume()
        await until(lambda: len(panel.conversation.turns) == 2 and not panel.answering, 300)
        stopped = panel.conversation.turns[1]
        assert stopped.base_end == "stopped" and stopped.tuned_end == "stopped"
        assert len(stopped.base) < 400 and stopped.tuned == ""
        assert panel.status_label.text() == "stopped"

        # A killed server: one sentence in the panel; the next Send starts another.
        first_pid = panel.session.pid
        os.kill(first_pid, signal.SIGKILL)
        panel.max_new_tokens.setValue(4)
        panel.prompt_edit.setPlainText("reverse: red cat")
        panel.send_button.click()
        await until(lambda: failures, 120)
        assert failures == [
            "the model server was killed (SIGKILL); start the chat again to restart it"
        ]
        assert panel.status_label.text() == failures[0]
        await until(lambda: panel.send_button.isEnabled(), 60)
        panel.prompt_edit.setPlainText("reverse: red cat")
        panel.send_button.click()
        await until(lambda: len(panel.conversation.turns) == 3 and not panel.answering, 300)
        second_pid = panel.session.pid
        assert second_pid != first_pid and psutil.pid_exists(second_pid)

        window.close()  # the app's close: its server goes with it
        await window.ops.close()
        await window.service.close()
        await until(lambda: _gone(second_pid), 30)

    run(qloop, body())


def test_a_job_that_completes_while_shown_opens_its_chat(
    qtbot: Any, qloop: Any, tmp_path: Path
) -> None:
    from view_helpers import make_job

    from desktop.views.chat_panel import ChatPanel
    from desktop.views.operations import MessageBus, Operations
    from desktop.views.state import AppState

    state = AppState()
    ops = Operations(MessageBus())
    panel = ChatPanel(state, ops, lambda: None)
    qtbot.addWidget(panel)
    (tmp_path / "chat.json").write_text(
        '{"system": "saved", "turns": [{"prompt": "hi", "base": "b", "tuned": "t"}]}',
        encoding="utf-8",
    )

    async def body() -> None:
        state.job_added(make_job(JOB_ID, state="training", job_dir=tmp_path))
        state.set_selected_job_ids([JOB_ID])
        assert not panel.send_button.isEnabled()
        assert "no finished model yet" in panel.status_label.text()
        state.job_changed(make_job(JOB_ID, state="completed", job_dir=tmp_path))
        await until(lambda: panel.send_button.isEnabled(), 30)
        assert panel.system_edit.text() == "saved"
        assert panel.panes["tuned"].toPlainText() == "You: hi\nt"
        await ops.close()

    run(qloop, body())


def test_an_unreadable_saved_chat_is_kept_aside(tmp_path: Path) -> None:
    from desktop.core.chat_session import load_conversation

    (tmp_path / "chat.json").write_text("{not json", encoding="utf-8")
    conversation, problem = load_conversation(tmp_path)
    assert conversation.turns == [] and problem is not None
    kept = list(tmp_path.glob("chat.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text(encoding="utf-8") == "{not json"
    assert problem.endswith(f"kept as {kept[0]}")
