"""The log view: bounded, follows the end, pause holds lines, search (pytest-qt, offscreen)."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from desktop.views.log_view import LogView
from desktop.views.state import AppState

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("does not support propagateSizeHints"),  # offscreen plugin
]


def _last_line(view: LogView) -> str:
    return view.text.document().lastBlock().text()


def test_fifty_thousand_lines_stay_bounded(qtbot: QtBot) -> None:
    view = LogView()
    qtbot.addWidget(view)
    for start in range(0, 50_000, 5_000):
        view.append_lines(f"line {i}" for i in range(start, start + 5_000))
    assert view.line_count() <= 10_000 + 1
    assert _last_line(view) == "line 49999"
    assert view.text.document().firstBlock().text() == "line 40000"


def test_follows_the_end_until_the_user_scrolls_up(qtbot: QtBot) -> None:
    view = LogView(max_lines=1000)
    qtbot.addWidget(view)
    view.resize(400, 200)
    view.show()
    view.append_lines(f"line {i}" for i in range(300))
    bar = view.text.verticalScrollBar()
    assert bar.value() == bar.maximum() > 0
    bar.setValue(10)  # the user scrolls up
    view.append_lines(["more"] * 50)
    assert bar.value() == 10 and not view.following
    bar.setValue(bar.maximum())  # back at the bottom: follow again
    view.append_lines(["again"])
    assert bar.value() == bar.maximum() and view.following


def test_pause_holds_lines_bounded_and_resume_appends_them(qtbot: QtBot) -> None:
    view = LogView(max_lines=100)
    qtbot.addWidget(view)
    view.append_lines(["before"])
    with qtbot.waitSignal(view.paused_changed) as blocker:
        view.set_paused(True)
    assert blocker.args == [True]
    view.append_lines(f"held {i}" for i in range(250))
    assert _last_line(view) == "before"
    assert view.held_line_count == 100  # bounded too: the oldest held lines are dropped
    assert "100" in view.pause_button.text()
    view.set_paused(False)
    assert view.held_line_count == 0
    assert _last_line(view) == "held 249"
    assert view.line_count() <= 100


def test_search_finds_next_and_previous_with_wrap_and_highlights(qtbot: QtBot) -> None:
    view = LogView()
    qtbot.addWidget(view)
    view.append_lines(["epoch 1 loss 2.0", "warning: slow", "epoch 2 loss 1.5", "done"])
    view.search_edit.setText("epoch")
    assert len(view.text.extraSelections()) == 2
    assert view.find_next()
    first = view.text.textCursor().blockNumber()
    assert view.find_next()
    second = view.text.textCursor().blockNumber()
    assert (first, second) == (0, 2)
    assert view.find_next()  # wraps around to the first match
    assert view.text.textCursor().blockNumber() == 0
    assert view.find_previous()  # and backwards to the last one
    assert view.text.textCursor().blockNumber() == 2
    view.search_edit.setText("no such text")
    assert not view.find_next()
    assert view.status_label.text() == "not found"


def test_shows_the_selected_jobs_lines_from_app_state(qtbot: QtBot) -> None:
    state = AppState()
    view = LogView(state)
    qtbot.addWidget(view)
    state.log_added("a", ["a1", "a2"])
    state.log_added("b", ["b1"])
    view.set_job("a")
    assert view.text.toPlainText() == "a1\na2"
    state.log_added("b", ["b2"])  # another job's lines do not show
    state.log_added("a", ["a3"])
    assert view.text.toPlainText() == "a1\na2\na3"
    view.set_job("b")
    assert view.text.toPlainText() == "b1\nb2"
    view.set_job(None)
    assert view.text.toPlainText() == ""


def test_an_ended_job_s_last_line_is_its_reason_and_stays_last(qtbot: QtBot) -> None:
    from view_helpers import make_job

    from desktop.models.job import JobState

    state = AppState()
    state.job_added(make_job("a", state=JobState.TRAINING))
    state.job_added(make_job("b", state=JobState.TRAINING))
    view = LogView(state)
    qtbot.addWidget(view)
    state.log_added("a", ["step 1", "step 2"])
    view.set_job("a")
    assert _last_line(view) == "step 2"
    state.job_changed(make_job("b", state=JobState.FAILED, state_reason="other job"))
    assert _last_line(view) == "step 2"  # not the job shown
    state.job_changed(
        make_job("a", state=JobState.FAILED, state_reason="killed by SIGKILL\nmore detail")
    )
    assert _last_line(view) == "■ job failed: killed by SIGKILL"
    state.log_added("a", ["a late line"])
    assert view.text.toPlainText().splitlines() == [
        "step 1",
        "step 2",
        "a late line",
        "■ job failed: killed by SIGKILL",
    ]
    # Shown again later (selected anew), it still ends with the reason.
    view.set_job("b")
    assert _last_line(view) == "■ job failed: other job"
    view.set_job("a")
    assert _last_line(view) == "■ job failed: killed by SIGKILL"
    # Resumed: the job is live again, the ended line goes.
    state.job_changed(make_job("a", state=JobState.QUEUED))
    assert _last_line(view) == "a late line"
