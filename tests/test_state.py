"""AppState: ordered snapshots, row signals around changes, metric buffers, logs, selection."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from view_helpers import make_job

from desktop.models.job import JobState, MetricPoint, metric_columns
from desktop.views.chart.smoothing import GrowableArray
from desktop.views.state import AppState, MetricSeries

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("does not support propagateSizeHints"),  # offscreen plugin
]


def _record(state: AppState) -> list[tuple[str, int, int]]:
    """(signal, row, job_count at emission) for every row signal."""
    seen: list[tuple[str, int, int]] = []
    for name in ("row_about_to_be_added", "row_added", "row_changed"):
        getattr(state, name).connect(lambda row, n=name: seen.append((n, row, state.job_count())))
    for name in ("row_about_to_be_removed", "row_removed"):
        getattr(state, name).connect(lambda row, n=name: seen.append((n, row, state.job_count())))
    return seen


def test_rows_are_announced_before_and_after_each_change(qapp: object) -> None:
    state = AppState()
    seen = _record(state)
    state.job_added(make_job("a"))
    state.job_added(make_job("b"))
    state.job_changed(make_job("b", state=JobState.TRAINING, step=3))
    state.job_removed("a")

    assert seen == [
        ("row_about_to_be_added", 0, 0),
        ("row_added", 0, 1),
        ("row_about_to_be_added", 1, 1),
        ("row_added", 1, 2),
        ("row_changed", 1, 2),
        ("row_about_to_be_removed", 0, 2),
        ("row_removed", 0, 1),
    ]
    assert [j.id for j in state.jobs()] == ["b"]
    assert state.row_of("b") == 0 and state.row_of("a") == -1
    assert state.job("b") is not None and state.job("b").step == 3  # type: ignore[union-attr]
    assert state.job("a") is None


def test_an_identical_snapshot_emits_nothing_and_a_repeated_add_is_a_change(qapp: object) -> None:
    state = AppState()
    state.job_added(make_job("a"))
    seen = _record(state)
    state.job_changed(make_job("a"))
    assert seen == []
    state.job_added(make_job("a", state=JobState.FAILED))
    assert seen == [("row_changed", 0, 1)]
    assert state.job_count() == 1
    state.job_removed("missing")  # unknown id: nothing happens
    assert state.job_count() == 1


def test_change_of_an_unknown_job_adds_it_with_a_warning(
    qapp: object, caplog: pytest.LogCaptureFixture
) -> None:
    state = AppState()
    with caplog.at_level(logging.WARNING):
        state.job_changed(make_job("x"))
    assert state.row_of("x") == 0
    assert any("x" in r.getMessage() for r in caplog.records)
    caplog.clear()  # the warning was expected


def test_metric_points_land_in_growing_per_series_buffers(qapp: object) -> None:
    state = AppState()
    state.job_added(make_job("a"))
    emitted: list[str] = []
    state.metrics_appended.connect(emitted.append)
    for batch in range(5):
        points = []
        for i in range(1000):
            step = batch * 1000 + i
            points.append(
                MetricPoint(
                    job_id="a", step=step, name="loss", value=1.0 / (step + 1), time=100.0 + step
                )
            )
            if step % 100 == 0:
                points.append(
                    MetricPoint(
                        job_id="a", step=step, name="eval_loss", value=2.0, time=100.0 + step
                    )
                )
        state.metrics_added("a", metric_columns(points))

    loss = state.series("a", "loss")
    assert loss is not None and len(loss) == 5000
    np.testing.assert_array_equal(loss.step, np.arange(5000.0))
    np.testing.assert_allclose(loss.value, 1.0 / (np.arange(5000.0) + 1))
    np.testing.assert_array_equal(loss.time, 100.0 + np.arange(5000.0))
    eval_loss = state.series("a", "eval_loss")
    assert eval_loss is not None and len(eval_loss) == 50
    assert sorted(state.series_names("a")) == ["eval_loss", "loss"]
    assert emitted == ["a"] * 5
    assert state.series("a", "grad_norm") is None
    # The properties are views of the buffer, not copies.
    assert np.shares_memory(loss.value, loss.value)
    assert loss.value.base is not None

    state.add_metric_arrays("a", "loss", [5000, 5001], [0.5, 0.4], [1.0, 2.0])
    assert len(loss) == 5002 and loss.value[-1] == 0.4
    state.job_removed("a")
    assert state.series("a", "loss") is None


def test_growable_array_doubles_and_keeps_old_views_valid() -> None:
    buf = GrowableArray(capacity=4)
    buf.extend([1, 2, 3])
    old = buf.view()
    capacities = set()
    for i in range(1000):
        buf.extend([float(i)])
        capacities.add(buf.capacity)
    assert len(buf) == 1003
    assert capacities <= {4, 8, 16, 32, 64, 128, 256, 512, 1024}  # doubling, few reallocations
    np.testing.assert_array_equal(old, [1, 2, 3])
    np.testing.assert_array_equal(buf.view()[:3], [1, 2, 3])


def test_series_rejects_columns_of_different_lengths() -> None:
    series = MetricSeries()
    with pytest.raises(ValueError, match="differ in length: 2, 1, 2"):
        series.extend([1, 2], [0.5], [1.0, 2.0])
    assert len(series) == 0


def test_log_tail_is_bounded_and_new_lines_are_passed_on(qapp: object) -> None:
    state = AppState(log_lines=100)
    got: list[tuple[str, list[str]]] = []
    state.log_appended.connect(lambda job_id, lines: got.append((job_id, lines)))
    state.log_added("a", [f"line {i}" for i in range(250)])
    state.log_added("a", [])
    assert state.log_tail("a") == [f"line {i}" for i in range(150, 250)]
    assert len(got) == 1 and len(got[0][1]) == 250
    assert state.log_tail("other") == []


def test_selection_follows_row_order_and_drops_removed_jobs(qapp: object) -> None:
    state = AppState()
    for job_id in "abc":
        state.job_added(make_job(job_id))
    changes: list[list[str]] = []
    state.selection_changed.connect(changes.append)
    state.set_selected_job_ids(["c", "a", "nope"])
    assert state.selected_job_ids == ("a", "c")
    state.set_selected_job_ids(["a", "c"])  # no change, no signal
    state.job_removed("c")
    assert state.selected_job_ids == ("a",)
    assert changes == [["a", "c"], ["a"]]


def test_relogged_steps_replace_the_old_values_so_steps_strictly_increase(qapp: object) -> None:
    # A run killed at step 38 and resumed from checkpoint 30 logs 31..38 again: the series keeps
    # one value per step (the newest), as the store does, live and from bulk loading alike.
    state = AppState()
    state.job_added(make_job("a"))
    first = [
        MetricPoint(job_id="a", step=s, name="loss", value=1.0, time=float(s)) for s in range(1, 39)
    ]
    state.metrics_added("a", metric_columns(first))
    loss = state.series("a", "loss")
    assert loss is not None
    version = loss.version
    resumed = [
        MetricPoint(job_id="a", step=s, name="loss", value=2.0, time=100.0 + s)
        for s in range(31, 45)
    ]
    state.metrics_added("a", metric_columns(resumed))
    np.testing.assert_array_equal(loss.step, np.arange(1.0, 45.0))
    np.testing.assert_array_equal(loss.value, [1.0] * 30 + [2.0] * 14)
    np.testing.assert_array_equal(loss.time[30:], 100.0 + np.arange(31.0, 45.0))
    assert loss.version > version and loss.rewrites == 1  # the chart's caches must reset

    # One batch that itself goes back (a poll that read past a resume) and a bulk load that
    # overlaps: still one value per step, the last one logged.
    series = MetricSeries()
    series.extend([1, 2, 3, 4, 2, 3, 5], [1, 1, 1, 1, 2, 2, 2], [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(series.step, [1, 2, 3, 5])
    np.testing.assert_array_equal(series.value, [1, 2, 2, 2])
    state.add_metric_arrays("a", "loss", [10, 11], [3.0, 3.0], [0.0, 0.0])
    np.testing.assert_array_equal(loss.step, np.arange(1.0, 12.0))
    np.testing.assert_array_equal(loss.value, [1.0] * 9 + [3.0] * 2)
    assert np.all(np.diff(series.step) > 0) and np.all(np.diff(loss.step) > 0)
