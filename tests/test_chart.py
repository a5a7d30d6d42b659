"""The live chart and its smoothing (pytest-qt, offscreen)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot
from view_helpers import make_job, no_warning_logs  # noqa: F401  (fixture)

from desktop.models.job import MetricPoint
from desktop.smoothing import EmaSmoother, debiased_ema
from desktop.state import AppState
from desktop.views.chart import LossChart, XAxisMode

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("does not support propagateSizeHints"),  # offscreen plugin
    pytest.mark.usefixtures("no_warning_logs"),
]


def reference_ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing, written out point by point (an independent reference)."""
    out: list[float] = []
    last, count = 0.0, 0
    for value in values:
        if not np.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out.append(last / (1 - weight**count))
    return out


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.9, 0.99])
def test_smoothing_matches_a_reference_ema(weight: float) -> None:
    values = list(np.random.default_rng(1).normal(3.0, 1.0, 5000))
    values[17] = float("nan")
    got = debiased_ema(values, weight)
    np.testing.assert_allclose(got, reference_ema(values, weight), rtol=1e-9, equal_nan=True)
    assert got[0] == pytest.approx(values[0], rel=1e-12)  # debiased: the first value is raw
    # Incremental, in uneven batches, gives the same values.
    smoother = EmaSmoother(weight)
    arr = np.asarray(values)
    for end in (1, 2, 700, 701, 3000, 5000):
        result = smoother.update(arr[:end])
    np.testing.assert_allclose(result, got, rtol=1e-12, equal_nan=True)


def test_a_constant_series_stays_constant_and_bad_weights_are_refused() -> None:
    np.testing.assert_allclose(debiased_ema(np.full(100_000, 2.5), 0.99), 2.5, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        debiased_ema([1.0], 1.0)


def _feed(state: AppState, job_id: str, start: int, n: int, t0: float = 1000.0) -> None:
    points = []
    for step in range(start, start + n):
        loss = 3.0 / (1 + step) + 0.1 * (step % 3)
        for name, value in (
            ("loss", loss),
            ("grad_norm", 1.0 + step % 2),
            ("tokens_seen", 512.0 * (step + 1)),
        ):
            points.append(
                MetricPoint(job_id=job_id, step=step, name=name, value=value, time=t0 + 2.0 * step)
            )
        if step % 10 == 0:
            points.append(
                MetricPoint(
                    job_id=job_id, step=step, name="learning_rate", value=1e-4, time=t0 + 2.0 * step
                )
            )
            points.append(
                MetricPoint(
                    job_id=job_id,
                    step=step,
                    name="eval_loss",
                    value=loss + 0.2,
                    time=t0 + 2.0 * step,
                )
            )
    state.metrics_added(job_id, points)


@pytest.fixture
def chart_and_state(qtbot: QtBot) -> tuple[LossChart, AppState]:
    state = AppState()
    state.job_added(make_job("a", "alpha", started_at=1000.0))
    state.job_added(make_job("b", "beta"))
    chart = LossChart(state, redraw_interval_ms=10)
    qtbot.addWidget(chart)
    chart.resize(800, 400)
    state.set_selected_job_ids(["a"])
    return chart, state


def test_points_arrive_on_the_timer_and_curves_grow(
    qtbot: QtBot, chart_and_state: tuple[LossChart, AppState]
) -> None:
    chart, state = chart_and_state
    _feed(state, "a", 0, 100)
    assert chart.redraw_pending
    with qtbot.waitSignal(chart.redrawn, timeout=2000):
        pass
    assert not chart.redraw_pending  # nothing new: no timer runs
    x, y = chart.plotted("a", "loss")  # type: ignore[misc]
    assert len(x) == 100
    _raw_x, raw_y = chart.plotted("a", "loss", raw=True)  # type: ignore[misc]
    series = state.series("a", "loss")
    assert series is not None
    np.testing.assert_array_equal(raw_y, series.value)
    np.testing.assert_allclose(y, reference_ema(list(series.value), 0.6), rtol=1e-9)
    assert len(chart.plotted("a", "eval_loss")[0]) == 10  # type: ignore[index]
    assert len(chart.plotted("a", "learning_rate")[0]) == 10  # type: ignore[index]
    assert chart.plotted("a", "grad_norm") is None  # on demand only

    _feed(state, "a", 100, 50)
    with qtbot.waitSignal(chart.redrawn, timeout=2000):
        pass
    x, y = chart.plotted("a", "loss")  # type: ignore[misc]
    assert len(x) == 150
    np.testing.assert_allclose(y, reference_ema(list(series.value), 0.6), rtol=1e-9)

    # Another job's data does not wake the chart.
    _feed(state, "b", 0, 10)
    assert not chart.redraw_pending


def test_smoothing_slider_and_raw_curve(chart_and_state: tuple[LossChart, AppState]) -> None:
    chart, state = chart_and_state
    _feed(state, "a", 0, 200)
    chart.smoothing_slider.setValue(90)
    chart.redraw()
    assert chart.smoothing == 0.9
    series = state.series("a", "loss")
    assert series is not None
    np.testing.assert_allclose(
        chart.plotted("a", "loss")[1], reference_ema(list(series.value), 0.9)
    )  # type: ignore[index]
    chart.set_smoothing(0.0)
    chart.redraw()
    assert chart.plotted("a", "loss", raw=True) is None  # no faint copy when nothing is smoothed
    np.testing.assert_array_equal(chart.plotted("a", "loss")[1], series.value)  # type: ignore[index]
    assert chart.smoothing_slider.value() == 0
    with pytest.raises(ValueError, match=r"0\.99"):
        chart.set_smoothing(1.0)


def test_grad_norm_on_demand(chart_and_state: tuple[LossChart, AppState]) -> None:
    chart, state = chart_and_state
    _feed(state, "a", 0, 30)
    chart.grad_norm_check.setChecked(True)
    chart.redraw()
    assert len(chart.plotted("a", "grad_norm")[0]) == 30  # type: ignore[index]
    chart.set_grad_norm_visible(False)
    assert chart.plotted("a", "grad_norm") is None
    assert not chart.grad_norm_check.isChecked()


def test_x_axis_step_tokens_and_wall_time(chart_and_state: tuple[LossChart, AppState]) -> None:
    chart, state = chart_and_state
    _feed(state, "a", 0, 20)
    chart.redraw()
    np.testing.assert_array_equal(chart.plotted("a", "loss")[0], np.arange(20))  # type: ignore[index]
    chart.x_combo.setCurrentIndex(chart.x_combo.findData("tokens"))
    chart.redraw()
    assert chart.x_axis_mode is XAxisMode.TOKENS
    np.testing.assert_allclose(chart.plotted("a", "loss")[0], 512.0 * (np.arange(20) + 1))  # type: ignore[index]
    _feed(state, "a", 20, 5)  # appended points get their x incrementally
    chart.redraw()
    np.testing.assert_allclose(chart.plotted("a", "loss")[0], 512.0 * (np.arange(25) + 1))  # type: ignore[index]
    chart.set_x_axis_mode("time")
    chart.redraw()
    np.testing.assert_allclose(chart.plotted("a", "loss")[0], 2.0 * np.arange(25))  # type: ignore[index]
    assert chart._x_axis.tickStrings([3725.0], 1.0, 60.0) == ["1:02:05"]


def test_several_jobs_overlaid_with_one_colour_each(
    chart_and_state: tuple[LossChart, AppState],
) -> None:
    chart, state = chart_and_state
    _feed(state, "a", 0, 20)
    _feed(state, "b", 0, 40)
    state.set_selected_job_ids(["a", "b"])
    chart.redraw()
    assert chart.job_ids == ("a", "b")
    assert len(chart.plotted("a", "loss")[0]) == 20  # type: ignore[index]
    assert len(chart.plotted("b", "loss")[0]) == 40  # type: ignore[index]
    labels = [label.text for _sample, label in chart.legend.items]
    assert "alpha · loss" in labels and "beta · loss" in labels and "beta · lr" in labels
    colour_a = chart._curves[("a", "loss")].item.opts["pen"].color().name()
    colour_b = chart._curves[("b", "loss")].item.opts["pen"].color().name()
    assert colour_a != colour_b
    state.job_removed("a")  # a removed job leaves the chart and the legend
    assert chart.job_ids == ("b",)
    assert chart.plotted("a", "loss") is None
    assert not any(label.text.startswith("alpha") for _s, label in chart.legend.items)


def test_export_csv_and_png(tmp_path: Path, chart_and_state: tuple[LossChart, AppState]) -> None:
    chart, state = chart_and_state
    _feed(state, "a", 0, 30)
    _feed(state, "b", 0, 12)
    state.set_selected_job_ids(["a", "b"])
    path = chart.export_csv(tmp_path / "curves.csv")
    with path.open() as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    assert header[:4] == ["step", "alpha/loss", "alpha/loss_smoothed", "alpha/eval_loss"]
    assert "beta/learning_rate" in header
    assert len(rows) == 1 + 30  # the union of steps
    loss = state.series("a", "loss")
    assert loss is not None
    assert [float(r[1]) for r in rows[1:]] == list(loss.value)
    beta_loss = header.index("beta/loss")
    assert rows[20][beta_loss] == ""  # beta has no step 19
    assert (
        rows[1][header.index("alpha/eval_loss")] != ""
        and rows[2][header.index("alpha/eval_loss")] == ""
    )

    chart.set_x_axis_mode(XAxisMode.TOKENS)
    rows = list(csv.reader(chart.export_csv(tmp_path / "t.csv").open()))
    assert "alpha/tokens" in rows[0]

    png = chart.export_png(tmp_path / "chart.png", width=640)
    image = QImage(str(png))
    assert not image.isNull() and image.width() == 640
