"""The window tells the truth about a job: one value per step, failures with their reason, states
that stop when a job ends, empty views that say what to do next (pytest-qt, offscreen)."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from app_helpers import run, until
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot
from view_helpers import make_job

from desktop.models import JobState, Settings
from desktop.models.job import MetricPoint, metric_columns
from desktop.views.chart.smoothing import debiased_ema
from desktop.views.chart.widget import LossChart
from desktop.views.state import AppState

pytest_plugins = ["app_fixtures"]
pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("does not support propagateSizeHints"),  # offscreen plugin
]


def _points(job_id: str, name: str, steps: range, value: float) -> list[MetricPoint]:
    return [
        MetricPoint(job_id=job_id, step=s, name=name, value=value + 0.01 * s, time=float(s))
        for s in steps
    ]


def test_the_chart_rebuilds_a_curve_whose_steps_were_logged_again(qtbot: QtBot) -> None:
    state = AppState()
    state.job_added(make_job("a"))
    chart = LossChart(state, redraw_interval_ms=10_000)
    qtbot.addWidget(chart)
    chart.set_job_ids(["a"])
    chart.set_smoothing(0.6)
    state.metrics_added("a", metric_columns(_points("a", "loss", range(1, 39), 1.0)))
    chart.redraw()
    # Resumed from checkpoint 30: 31..44 logged again with other values.
    state.metrics_added("a", metric_columns(_points("a", "loss", range(31, 45), 2.0)))
    chart.redraw()
    series = state.series("a", "loss")
    assert series is not None
    raw = chart.plotted("a", "loss", raw=True)
    smooth = chart.plotted("a", "loss")
    assert raw is not None and smooth is not None
    np.testing.assert_array_equal(raw[0], np.arange(1.0, 45.0))
    np.testing.assert_array_equal(raw[1], series.value)
    # The smoothing (and the pyramids) start again from the replaced points, not the old ones.
    np.testing.assert_allclose(smooth[1], debiased_ema(series.value, 0.6), rtol=1e-12)
    drawn = chart.drawn("a", "loss", raw=True)
    assert drawn is not None and np.all(np.diff(drawn[0]) > 0)
    assert set(drawn[1]) <= set(series.value)


def make_window(**kw: Any) -> Any:
    from desktop.views.app import build_window

    settings = kw.pop("settings", Settings(poll_interval_s=0.25, cancel_grace_s=5))
    return build_window(settings=settings, check_runtime=False, **kw)


async def close(window: Any) -> None:
    window.close()
    await window.ops.close()
    await window.service.close()


def _endless_demo(window: Any, save_steps: int = 4) -> None:
    """The demo preset, trained until cancelled, logging every step, saving every few."""
    config = window.editor.config()
    training = config.training.model_copy(
        update={"max_steps": 100_000, "save_steps": save_steps, "logging_steps": 1}
    )
    window.editor.set_config(config.model_copy(update={"training": training}))


def _state_of(window: Any, job_id: str) -> JobState | None:
    job = window.state.job(job_id)
    return None if job is None else job.state


def _last_logged_step(job_dir: Path) -> int:
    """The highest step of a metric event in the job's events.jsonl (torn lines skipped)."""
    last = 0
    for line in (job_dir / "events.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("kind") == "metric":
            last = max(last, int(event["step"]))
    return last


def _checkpoint_step(job_dir: Path) -> int:
    from trainer.protocol import latest_complete_checkpoint

    found = latest_complete_checkpoint(job_dir)
    return -1 if found is None else int(found.name.rsplit("-", 1)[1])


async def _kill_past_a_checkpoint(pid: int, job_dir: Path) -> int:
    """SIGKILL the trainer at a moment it has logged steps past its newest complete checkpoint
    (stopped first, so what it wrote is known when it dies); returns its last logged step."""
    while True:
        await until(lambda: _checkpoint_step(job_dir) > 0, 300)
        os.kill(pid, signal.SIGSTOP)
        last, checkpoint = _last_logged_step(job_dir), _checkpoint_step(job_dir)
        if last > checkpoint:
            os.kill(pid, signal.SIGKILL)
            return last
        os.kill(pid, signal.SIGCONT)
        await until(lambda c=checkpoint: _last_logged_step(job_dir) > c, 300)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_killed_and_resumed_run_has_one_value_per_step(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        _endless_demo(window)
        await until(lambda: window.start_button.isEnabled(), 10)
        window.start_job()
        job_id = await until(lambda: window.state.job_count() and window.state.job_at(0).id, 120)
        await until(lambda: _state_of(window, job_id) is JobState.TRAINING, 300)
        job = window.state.job(job_id)
        assert job is not None and job.handle is not None and job.handle.pid
        killed_at = await _kill_past_a_checkpoint(job.handle.pid, job.job_dir)
        await until(lambda: _state_of(window, job_id) is JobState.FAILED, 60)
        loss = window.state.series(job_id, "loss")
        await until(lambda: loss is not None and loss.step[-1] == killed_at, 30)
        window.job_actions.resume_job(job_id)
        # The resumed run logs the steps after its checkpoint again, then goes past the kill.
        await until(lambda: len(loss) and loss.step[-1] > killed_at + 1, 300)
        window.job_actions.cancel_job(job_id)
        await until(lambda: _state_of(window, job_id) is JobState.CANCELLED, 120)
        stored = window.service.store.metrics(job_id, names=["loss", "learning_rate"])
        for name in ("loss", "learning_rate"):
            series = window.state.series(job_id, name)
            assert series is not None
            assert np.all(np.diff(series.step) > 0), f"{name} doubles back: {series.step}"
            expected = [(p.step, p.value) for p in stored if p.name == name]
            assert list(zip(series.step.tolist(), series.value.tolist(), strict=True)) == [
                (float(s), v) for s, v in expected
            ]
        assert loss.rewrites >= 1  # steps were logged again, and replaced
        window.chart.redraw()
        plotted = window.chart.plotted(job_id, "loss", raw=True)
        assert plotted is not None and np.all(np.diff(plotted[0]) > 0)
        await close(window)

    run(qloop, body())


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_killed_trainer_reads_failed_with_its_reason_everywhere(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    from PySide6.QtGui import QBrush
    from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

    from desktop.views.job_model import ENDED_ROLE, STATE_COLORS, Column

    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        _endless_demo(window, save_steps=1000)
        await until(lambda: window.start_button.isEnabled(), 10)
        window.start_job()
        job_id = await until(lambda: window.state.job_count() and window.state.job_at(0).id, 120)
        await until(lambda: _state_of(window, job_id) is JobState.TRAINING, 300)
        job = window.state.job(job_id)
        assert job is not None and job.handle is not None and job.handle.pid
        view = window.jobs_view
        progress = view.proxy.index(0, Column.PROGRESS)
        assert progress.data(ENDED_ROLE) is False
        # A message about the job, posted while it ran, must not outlive the job's state.
        window.bus.info(f"job {job_id} ({job.name}) is training on local")
        os.kill(job.handle.pid, signal.SIGKILL)
        await until(lambda: _state_of(window, job_id) is JobState.FAILED, 60)
        reason = window.state.job(job_id).state_reason
        assert "SIGKILL" in reason
        first_line = reason.splitlines()[0]
        # The row: the reason in the state cell's text, the whole row in the failed colour.
        state_cell = view.proxy.index(0, Column.STATE)
        assert state_cell.data() == f"failed: {first_line}"
        failed = STATE_COLORS[JobState.FAILED]
        for column in (Column.NAME, Column.STATE, Column.STEP):
            brush = view.proxy.index(0, column).data(Qt.ItemDataRole.ForegroundRole)
            assert isinstance(brush, QBrush) and brush.color().name() == failed, column
        # The progress bar stopped: the delegate paints it disabled (grey), not as a live bar.
        assert progress.data(ENDED_ROLE) is True
        option = QStyleOptionViewItem()
        option.state = QStyle.StateFlag.State_Enabled
        bar = view.progress_delegate.bar_option(option, progress)
        assert not bar.state & QStyle.StateFlag.State_Enabled
        # The log view shows the job, and its last line is the reason.
        view.select_job_ids([job_id])
        await until(lambda: window.log_view.job_id == job_id, 10)
        last = window.log_view.text.toPlainText().splitlines()[-1]
        assert "failed" in last and first_line in last
        # The status bar: the stale "is training" gave way to the final state.
        message = window.status_bar.currentMessage()
        assert "is training" not in message
        assert job_id in message and "failed" in message and "SIGKILL" in message
        # New log lines still end above the reason.
        window.state.log_added(job_id, ["a late line"])
        assert window.log_view.text.toPlainText().splitlines()[-1] == last
        await close(window)

    run(qloop, body())


def test_a_status_message_about_a_job_gives_way_to_the_job_s_newer_state(qtbot: QtBot) -> None:
    from desktop.views.status_bar import WindowStatusBar

    state = AppState()
    bar = WindowStatusBar()
    qtbot.addWidget(bar)
    bar.follow_state(state)
    job_id = "20261202-101500-ab12"
    state.job_added(make_job(job_id, "demo", state=JobState.QUEUED))
    bar.show_info(f"job {job_id} (demo) is queued on local")
    assert bar.currentMessage() == f"job {job_id} (demo) is queued on local"
    state.job_changed(make_job(job_id, "demo", state=JobState.TRAINING))
    assert bar.currentMessage() == f"job {job_id} (demo) is training"
    state.job_changed(
        make_job(job_id, "demo", state=JobState.FAILED, state_reason="killed by SIGKILL\nexit -9")
    )
    assert bar.currentMessage() == f"⚠ job {job_id} (demo) failed: killed by SIGKILL"
    assert "exit -9" in bar.toolTip()
    # Posted once the job had moved on already (a launch's reply after the first poll).
    state.job_added(make_job("20261202-101501-cd34", "other", state=JobState.TRAINING))
    bar.show_info("job 20261202-101501-cd34 (other) is queued on local")
    assert bar.currentMessage() == "job 20261202-101501-cd34 (other) is training"
    # A message about nothing in particular is not touched by a job's change.
    bar.show_info("settings saved")
    state.job_changed(make_job(job_id, "demo", state=JobState.QUEUED))
    assert bar.currentMessage() == "settings saved"


def _store_finished_jobs(home: Path, *names: str) -> list[str]:
    """Finished jobs as an earlier session left them: store rows and folders with a log."""
    from desktop.core.store import JobStore

    store = JobStore()
    ids = []
    for i, name in enumerate(names):
        job_id = f"20261202-10150{i}-ab1{i}"
        job_dir = home / "jobs" / job_id
        job_dir.mkdir(parents=True)
        (job_dir / "train.log").write_text(f"{name} trained\n", encoding="utf-8")
        store.add_job(
            make_job(job_id, name, state=JobState.COMPLETED, job_dir=job_dir, started_at=1.0e9)
        )
        ids.append(job_id)
    store.close()
    return ids


def test_empty_views_say_what_to_do_and_the_last_selected_job_comes_back(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    def shown(hint: Any) -> str:
        return hint.text() if hint.isVisible() else ""

    async def session(check: Callable[[Any], Awaitable[None]]) -> None:
        window = make_window()
        qtbot.addWidget(window)
        window.show()
        await window.start()
        await check(window)
        await close(window)

    async def first_launch(window: Any) -> None:
        # No jobs: the chart and the log say what to do next.
        assert window.state.job_count() == 0
        assert "No jobs yet" in shown(window.chart_hint) and "Start" in shown(window.chart_hint)
        assert "No jobs yet" in shown(window.log_hint)

    run(qloop, session(first_launch))
    first, second = _store_finished_jobs(demo_home, "first", "second")

    async def choose_second(window: Any) -> None:
        # Nothing was selected last time: the hint points at the table.
        assert window.state.selected_job_ids == ()
        assert "No job selected" in shown(window.chart_hint)
        assert "select a job" in shown(window.chart_hint)
        assert "No job selected" in shown(window.log_hint)
        window.jobs_view.select_job_ids([second])
        # Once its history is read (no hint while it loads: the chart says "Loading history").
        await until(lambda: "no metric points" in shown(window.chart_hint), 30)
        await until(lambda: "second trained" in window.log_view.text.toPlainText(), 30)
        assert shown(window.log_hint) == ""

    run(qloop, session(choose_second))

    async def reopened(window: Any) -> None:
        # The job selected last is selected again, its log shown.
        assert window.state.selected_job_ids == (second,)
        assert window.log_view.job_id == second
        await until(lambda: "second trained" in window.log_view.text.toPlainText(), 30)

    run(qloop, session(reopened))
    # Gone since (deleted elsewhere): nothing is selected, and nothing complains.
    from desktop.core.store import JobStore

    store = JobStore()
    store.delete_job(second)
    store.close()

    async def gone(window: Any) -> None:
        assert window.state.selected_job_ids == ()
        assert window.state.job(first) is not None
        assert "No job selected" in shown(window.chart_hint)

    run(qloop, session(gone))
