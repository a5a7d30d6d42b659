"""History is loaded lazily: the window starts from the job snapshots alone, a job's series
are read when it is selected (one job, off the UI thread), loaded finished jobs are bounded
by an LRU, and live points stream into AppState as before.

The scale itself (1,000 jobs x 2,000 steps) is bench/history_scale.py; these tests prove the
structure with a small store, without timing anything.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from app_helpers import run, until
from PySide6.QtCore import QItemSelectionModel
from view_helpers import make_job

from desktop.core.config_io import load_preset
from desktop.core.store import DB_FILENAME, JobStore
from desktop.models import Job, JobState, MetricPoint, Settings
from desktop.models.job import SeriesColumns
from desktop.views.state import AppState

pytest_plugins = ["app_fixtures"]

JOBS = 50
STEPS = 200
SERIES = ("loss", "learning_rate", "grad_norm")


def _fill(home: Path, jobs: int = JOBS, steps: int = STEPS) -> list[str]:
    """`jobs` finished jobs of `steps` steps x 3 series, through the store's own API."""
    config = load_preset("demo-cpu", home / "demo")
    ids = []
    with JobStore(home / DB_FILENAME) as store:
        for i in range(jobs):
            job_id = f"20260101-0000{i:02d}-{i:04x}"
            job = Job(
                id=job_id,
                name=f"run {i}",
                state=JobState.COMPLETED,
                config=config,
                job_dir=home / "jobs" / job_id,
                created_at=1_700_000_000.0 + i,
            )
            store.add_job(job, "imported")
            store.record_progress(
                job,
                [
                    MetricPoint(job_id=job_id, step=s, name=n, value=1.0 / s, time=float(s))
                    for s in range(1, steps + 1)
                    for n in SERIES
                ],
            )
            ids.append(job_id)
    return ids


def _select(window: Any, job_id: str) -> None:
    """Click the job's row in the job table (through its selection model, as a click does)."""
    view = window.jobs_view.table
    proxy = view.model()
    index = proxy.mapFromSource(proxy.sourceModel().index(window.state.row_of(job_id), 0))
    view.selectionModel().select(
        index,
        QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
    )


def _loaded(state: AppState, ids: list[str]) -> list[str]:
    return [job_id for job_id in ids if state.series_names(job_id)]


def test_the_window_starts_with_no_series_and_loads_only_the_selected_job(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    from desktop.views.app import build_window

    ids = _fill(demo_home)
    window = build_window(settings=Settings(poll_interval_s=0.25), check_runtime=False)
    qtbot.addWidget(window)

    async def body() -> None:
        window.show()
        await window.start()
        assert window.state.job_count() == JOBS
        # Ready from the snapshots alone: not one job's points are in memory.
        assert _loaded(window.state, ids) == []

        target = ids[17]
        _select(window, target)
        await until(lambda: window.chart.drawn(target, "loss") is not None, timeout=30)
        drawn = window.chart.drawn(target, "loss")
        assert drawn is not None and len(drawn[0]) > 0
        # Only the selected job was read, whole and once.
        assert _loaded(window.state, ids) == [target]
        for name in SERIES:
            series = window.state.series(target, name)
            assert series is not None
            assert series.step.tolist() == list(range(1, STEPS + 1))
        assert window.chart.loading_label.isHidden()

        # A live job streams as today: points from the job service's listener call land at
        # once, with no read of the store; selecting it then puts the stored history before
        # them, each step once.
        live = ids[3]
        streamed = tuple(range(STEPS + 1, STEPS + 11))
        window.state.metrics_added(
            live,
            {"loss": SeriesColumns(streamed, tuple(0.1 for _ in streamed), streamed)},
        )
        series = window.state.series(live, "loss")
        assert series is not None and series.step.tolist() == list(streamed)
        _select(window, live)
        await until(lambda: len(window.state.series(live, "loss") or ()) == STEPS + 10)
        steps = window.state.series(live, "loss").step  # type: ignore[union-attr]
        assert steps.tolist() == list(range(1, STEPS + 11))
        window.close()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())


def test_loaded_finished_jobs_are_bounded_but_selected_and_live_ones_stay(qapp: object) -> None:
    state = AppState(max_loaded_jobs=2)
    state.lazy_history = True  # as the window's operations.serve_history sets it
    wanted: list[str] = []
    state.history_wanted.connect(wanted.append)
    for job_id in ("a", "b", "c", "d"):
        state.job_added(make_job(job_id, state=JobState.COMPLETED))
    state.job_added(make_job("live", state=JobState.TRAINING))
    column = {"loss": SeriesColumns((1, 2), (0.5, 0.4), (1.0, 2.0))}

    for job_id in ("live", "a", "b", "c", "d"):
        state.set_selected_job_ids([job_id])
        assert wanted[-1] == job_id and state.history_loading(job_id)
        state.set_history(job_id, column)
        assert not state.history_loading(job_id)
    # d is selected; b and c are the two most recent other finished ones; the live job is
    # never dropped.
    assert sorted(j for j in "abcd" if state.series_names(j)) == ["b", "c", "d"]
    assert state.series_names("live") == ["loss"]
    # An evicted job is read again when selected again; a loaded one is not.
    state.set_selected_job_ids(["c"])
    assert wanted[-1] == "d"
    state.set_selected_job_ids(["a"])
    assert wanted[-1] == "a"


def test_the_series_query_keeps_every_point_of_a_short_history(tmp_path: Path) -> None:
    with JobStore(tmp_path / DB_FILENAME) as store:
        job = make_job("j", job_dir=tmp_path / "j")
        store.add_job(job)
        points = [
            MetricPoint(job_id="j", step=s, name=n, value=s * 0.5, time=1000.0 + s)
            for s in (1, 2, 3)
            for n in ("loss", "tokens_seen")
        ]
        store.record_progress(job, points)
        columns = store.series_columns("j")
    assert set(columns) == {"loss", "tokens_seen"}
    assert columns["loss"] == SeriesColumns((1, 2, 3), (0.5, 1.0, 1.5), (1001.0, 1002.0, 1003.0))


def test_a_long_history_comes_out_downsampled_with_its_extremes(tmp_path: Path) -> None:
    n = 20_000
    rng = np.random.default_rng(7)
    values = rng.normal(size=n)
    values[12_345] = 50.0  # one spike, which the screen must still show
    values[777] = -40.0
    with JobStore(tmp_path / DB_FILENAME) as store:
        job = make_job("j", job_dir=tmp_path / "j")
        store.add_job(job)
        store.record_progress(
            job,
            [
                MetricPoint(job_id="j", step=s + 1, name="loss", value=float(v), time=float(s))
                for s, v in enumerate(values)
            ],
        )
        columns = store.series_columns("j", max_points=1000)
        full = store.series_columns("j")
    loss = columns["loss"]
    assert 500 <= len(loss) <= 1000
    steps = np.asarray(loss.steps)
    assert np.all(np.diff(steps) > 0)  # in step order, each step once
    assert steps[0] == 1 and steps[-1] == n
    assert max(loss.values) == 50.0 and min(loss.values) == -40.0
    assert len(full["loss"]) == n


def test_the_series_query_is_served_by_an_index(tmp_path: Path) -> None:
    with JobStore(tmp_path / DB_FILENAME):
        pass
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    try:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT step, value, time FROM metrics"
                " WHERE job_id = ? AND name = ? ORDER BY step",
                ("j", "loss"),
            )
        )
    finally:
        conn.close()
    assert "SEARCH" in plan and "TEMP B-TREE" not in plan, plan


def test_the_chart_says_loading_until_the_history_arrives(qtbot: Any) -> None:
    from desktop.views.chart.widget import LossChart

    state = AppState()
    state.lazy_history = True
    state.job_added(make_job("a", state=JobState.COMPLETED))
    chart = LossChart(state)
    qtbot.addWidget(chart)
    state.set_selected_job_ids(["a"])
    assert state.history_loading("a")
    assert not chart.loading_label.isHidden()
    with qtbot.waitSignal(chart.redrawn, timeout=20_000):
        state.set_history("a", {"loss": SeriesColumns((1, 2, 3), (0.5, 0.4, 0.3), (1, 2, 3))})
    assert chart.loading_label.isHidden()
    drawn = chart.drawn("a", "loss")
    assert drawn is not None and drawn[0].tolist() == [1.0, 2.0, 3.0]


def test_a_window_store_checks_the_jobs_at_open_and_the_history_after(tmp_path: Path) -> None:
    from desktop.core.errors import StoreError

    db = tmp_path / DB_FILENAME
    with JobStore(db) as store:
        job = make_job("j", state=JobState.COMPLETED, job_dir=tmp_path / "j")
        store.add_job(job)
        store.record_progress(
            job,
            [
                MetricPoint(job_id="j", step=s, name=n, value=1.0 / s, time=float(s))
                for s in range(1, 2001)
                for n in SERIES
            ],
        )
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    start = (db.stat().st_size // page // 2) * page  # a page of the metrics table
    with open(db, "r+b") as fh:
        fh.seek(start)
        fh.write(bytes((i * 73 + 41) % 256 for i in range(2 * page)))

    with pytest.raises(StoreError, match="damaged"):
        JobStore(db)  # the full check at open, as the CLI opens it
    # A window opens it checking the jobs' own tables (small), so it is ready at once, and
    # checks the history on its own thread afterwards: the damage is reported all the same.
    with JobStore(db, check_history=False) as store:
        assert [j.id for j in store.list_jobs()] == ["j"]
        with pytest.raises(StoreError, match="damaged") as caught:
            store.check_history()
    assert str(db) in str(caught.value) and "move it aside" in str(caught.value)


def test_a_state_nobody_loads_history_for_asks_for_none(qtbot: Any) -> None:
    from desktop.views.chart.widget import LossChart

    state = AppState()  # no operations.serve_history: benchmarks, chart tests
    wanted: list[str] = []
    state.history_wanted.connect(wanted.append)
    state.job_added(make_job("a", state=JobState.COMPLETED))
    chart = LossChart(state)
    qtbot.addWidget(chart)
    state.set_selected_job_ids(["a"])
    assert wanted == [] and not state.history_loading("a")
    assert chart.loading_label.isHidden()


@pytest.mark.expect_log("damaged")
def test_the_window_is_ready_over_damaged_history_and_then_says_so(
    qapp: Any, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from desktop.views import app as app_module
    from desktop.views.main_window import MainWindow

    db = demo_home / DB_FILENAME
    with JobStore(db) as store:
        job = make_job("j", state=JobState.COMPLETED, job_dir=demo_home / "jobs" / "j")
        store.add_job(job)
        store.record_progress(
            job,
            [
                MetricPoint(job_id="j", step=s, name=n, value=1.0 / s, time=float(s))
                for s in range(1, 2001)
                for n in SERIES
            ],
        )
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as fh:
        fh.seek((db.stat().st_size // page // 2) * page)
        fh.write(bytes((i * 73 + 41) % 256 for i in range(2 * page)))

    seen: list[Any] = []
    waited = [0]

    def poll() -> None:
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
        window = next((w for w in windows if w.isVisible()), None)
        if window is not None and window.is_ready and "damaged" in window.status_bar.toolTip():
            seen.append((window.state.job_count(), window.status_bar.toolTip()))
            window.close()
            return
        waited[0] += 100
        if waited[0] > 60_000:
            seen.append(None)
            for w in QApplication.topLevelWidgets():
                w.close()
            return
        QTimer.singleShot(100, poll)

    QTimer.singleShot(100, poll)
    # A store this small is checked whole at open (and offered a repair); this test is about
    # a big one, whose metric pages are checked after ready.
    monkeypatch.setattr(app_module, "_CHECK_WHOLE_BELOW", 0)
    assert app_module.main([]) == 0
    assert seen and seen[0] is not None, "the damage never reached the status bar"
    jobs, message = seen[0]
    assert jobs == 1  # the window came up with the job, its history unread
    assert str(db) in message and "move it aside" in message
