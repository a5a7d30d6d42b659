"""The Chat tab's background work when a newer request comes while an older one still runs.

`Operations` refuses a second operation of a name already running; these tests make each
"while it runs" certain by holding the first call in its worker thread on an event (never by
timing) and check that nothing is lost: every dropped model server is closed, a Send never
sticks, and the newest conversation reaches `chat.json` last.

A stand-in `ChatSession` answers at once, so no model server and no training are needed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until

from desktop.core.chat_session import ChatTurn
from desktop.views import operations

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.qt_log_level_fail("CRITICAL")


class _Hold:
    """Holds the first call that reaches it until `release` (then lets every call through)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.armed = False  # only calls made after `arm` are held

    def arm(self) -> None:
        self.armed = True

    def wait(self) -> None:
        if self.armed and not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(60), "the test never released the held call"


class _Sessions:
    """The stand-in sessions made so far, and the holds their calls pass."""

    def __init__(self) -> None:
        self.made: list[_FakeSession] = []
        self.start_hold = _Hold()
        self.close_hold = _Hold()

    def __call__(self, runtime: Any, job_dir: Path) -> _FakeSession:
        session = _FakeSession(self, job_dir)
        self.made.append(session)
        return session


class _FakeSession:
    """`operations.ChatSession` without a server: `ask` answers at once."""

    def __init__(self, sessions: _Sessions, job_dir: Path) -> None:
        self._sessions = sessions
        self.job_dir = job_dir
        self.pid = 4242
        self.started = threading.Event()
        self.closed = threading.Event()

    def start(self) -> None:
        self.started.set()
        self._sessions.start_hold.wait()

    def eval_prompts(self) -> list[Any]:
        return []

    def ask(self, conversation: Any, prompt: str, on_token: Any) -> ChatTurn:
        on_token("base", "b")
        on_token("tuned", "t")
        return ChatTurn(prompt=prompt, base="b", tuned="t", base_end="eos", tuned_end="eos")

    def stop(self) -> None:
        pass

    def close(self) -> None:
        self._sessions.close_hold.wait()
        self.closed.set()


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> _Sessions:
    made = _Sessions()
    monkeypatch.setattr(operations, "ChatSession", made)
    return made


@pytest.fixture
def chat(qtbot: Any, qloop: Any, tmp_path: Path) -> Iterator[tuple[Any, Any, Any]]:
    """A Chat panel over three completed jobs (folders under tmp_path); (panel, state, ops)."""
    from view_helpers import make_job

    from desktop.views.chat_panel import ChatPanel
    from desktop.views.operations import MessageBus, Operations
    from desktop.views.state import AppState

    state = AppState()
    ops = Operations(MessageBus())
    panel = ChatPanel(state, ops, lambda: None)
    qtbot.addWidget(panel)
    for job_id in ("a", "b", "c"):
        (tmp_path / job_id).mkdir()
        state.job_added(make_job(job_id, state="completed", job_dir=tmp_path / job_id))
    yield panel, state, ops
    run(qloop, ops.close())


async def _show(panel: Any, state: Any, job_id: str) -> None:
    state.set_selected_job_ids([job_id])
    await until(lambda: panel.send_button.isEnabled(), 30)


async def _turn(panel: Any, prompt: str) -> None:
    turns = len(panel.conversation.turns)
    panel.prompt_edit.setPlainText(prompt)
    panel.send_button.click()
    await until(lambda: len(panel.conversation.turns) == turns + 1 and not panel.answering, 30)


def test_every_dropped_model_server_is_closed_while_another_close_runs(
    qloop: Any, chat: tuple[Any, Any, Any], sessions: _Sessions
) -> None:
    panel, state, ops = chat

    async def body() -> None:
        await _show(panel, state, "a")
        await _turn(panel, "hi a")
        sessions.close_hold.arm()
        await _show(panel, state, "b")  # a's close starts and is held in its thread
        await until(sessions.close_hold.entered.is_set)
        await _turn(panel, "hi b")
        first, second = sessions.made
        await _show(panel, state, "c")  # b's session is dropped while a's close runs
        assert panel.session is None and not second.closed.is_set()
        sessions.close_hold.release.set()
        await until(lambda: first.closed.is_set() and second.closed.is_set())
        await until(lambda: not ops.is_running("chat: end the model server"))

    run(qloop, body())


def test_the_shutdown_closes_the_sessions_whose_close_had_not_started(
    qloop: Any, chat: tuple[Any, Any, Any], sessions: _Sessions
) -> None:
    panel, state, _ops = chat

    async def body() -> None:
        await _show(panel, state, "a")
        await _turn(panel, "hi a")
        sessions.close_hold.arm()
        await _show(panel, state, "b")
        await until(sessions.close_hold.entered.is_set)  # a's close is held in its thread
        await _turn(panel, "hi b")
        await _show(panel, state, "c")
        await _turn(panel, "hi c")
        first, second, third = sessions.made
        await _show(panel, state, "a")  # c's session is dropped too: two closes wait
        panel.shutdown()  # the window closes while a's close still runs
        assert second.closed.is_set() and third.closed.is_set()
        assert panel.session is None
        sessions.close_hold.release.set()
        await until(first.closed.is_set)

    run(qloop, body())


def test_a_send_while_a_dropped_session_still_loads_answers(
    qloop: Any, chat: tuple[Any, Any, Any], sessions: _Sessions
) -> None:
    panel, state, _ops = chat

    async def body() -> None:
        await _show(panel, state, "a")
        sessions.start_hold.arm()
        panel.prompt_edit.setPlainText("hi a")
        panel.send_button.click()
        await until(sessions.start_hold.entered.is_set)  # a's model loads, held in its thread
        await _show(panel, state, "b")  # the person switches job and sends at once
        await _turn(panel, "hi b")
        first, second = sessions.made
        assert second.started.is_set() and panel.session is second
        assert panel.send_button.isEnabled() and panel.status_label.text().startswith("model")
        assert [t.prompt for t in panel.conversation.turns] == ["hi b"]
        sessions.start_hold.release.set()  # a's late load is ignored; its server was closed
        await until(first.closed.is_set)
        assert panel.session is second and not second.closed.is_set()

    run(qloop, body())


def test_a_send_that_cannot_start_says_why_and_does_not_stick(
    qloop: Any, chat: tuple[Any, Any, Any], sessions: _Sessions
) -> None:
    panel, state, ops = chat

    async def body() -> None:
        await _show(panel, state, "a")
        await ops.close()  # the app is closing: no operation starts any more
        panel.prompt_edit.setPlainText("hi a")
        panel.send_button.click()
        assert not panel.answering and panel.send_button.isEnabled()
        assert panel.status_label.text() == (
            "chat: load the model (a, server 1) could not start: the app is closing"
        )
        assert panel.session is None and panel.panes["base"].toPlainText() == ""
        assert panel.prompt_edit.toPlainText() == "hi a", "the prompt is kept to send again"

    run(qloop, body())


class _HeldSaves:
    """`operations.save_conversation` whose first write (once armed) waits; records each
    write's number of turns."""

    def __init__(self) -> None:
        self.hold = _Hold()
        self.written: list[int] = []
        self._real = operations.save_conversation

    def __call__(self, job_dir: Path, conversation: Any) -> Path:
        self.hold.wait()
        path = self._real(job_dir, conversation)
        self.written.append(len(conversation.turns))
        return path


@pytest.fixture
def saves(monkeypatch: pytest.MonkeyPatch) -> _HeldSaves:
    held = _HeldSaves()
    monkeypatch.setattr(operations, "save_conversation", held)
    return held


def _saved_prompts(job_dir: Path) -> list[str]:
    data = json.loads((job_dir / "chat.json").read_text(encoding="utf-8"))
    return [turn["prompt"] for turn in data["turns"]]


def test_a_turn_ending_while_the_last_save_writes_is_saved_after_it(
    qloop: Any, chat: tuple[Any, Any, Any], sessions: _Sessions, saves: _HeldSaves
) -> None:
    panel, state, _ops = chat
    job_dir = panel._state.job("a").job_dir

    async def body() -> None:
        await _show(panel, state, "a")
        saves.hold.arm()
        await _turn(panel, "one")
        await until(saves.hold.entered.is_set)  # the first turn's save is held in its thread
        await _turn(panel, "two")
        await _turn(panel, "three")
        saves.hold.release.set()
        await until(lambda: saves.written[-1:] == [3])
        assert saves.written == [1, 3], "the held write, then the newest once: none lost"
        assert _saved_prompts(job_dir) == ["one", "two", "three"]
        await _turn(panel, "four")  # and a later turn starts a save again
        await until(lambda: saves.written[-1:] == [4])
        assert _saved_prompts(job_dir) == ["one", "two", "three", "four"]

    run(qloop, body())


def test_the_shutdown_writes_the_newest_conversation_not_yet_saved(
    qloop: Any, chat: tuple[Any, Any, Any], sessions: _Sessions, saves: _HeldSaves
) -> None:
    panel, state, _ops = chat
    job_dir = panel._state.job("a").job_dir

    async def body() -> None:
        await _show(panel, state, "a")
        saves.hold.arm()
        await _turn(panel, "one")
        await until(saves.hold.entered.is_set)
        await _turn(panel, "two")
        saves.hold.release.set()
        # No await between: the running save gets no turn of the loop before the shutdown.
        panel.shutdown()
        assert _saved_prompts(job_dir) == ["one", "two"], "the shutdown wrote the newest"

    run(qloop, body())
