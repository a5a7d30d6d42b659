"""The live chart and its smoothing (pytest-qt, offscreen)."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot
from view_helpers import make_job

from desktop.models.job import MetricPoint, metric_columns
from desktop.views.chart.smoothing import EmaSmoother, debiased_ema
from desktop.views.chart.widget import LossChart, XAxisMode
from desktop.views.state import AppState

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("does not support propagateSizeHints"),  # offscreen plugin
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
    state.metrics_added(job_id, metric_columns(points))


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
    x, y = chart.plotted("a", "loss")
    assert len(x) == 100
    _raw_x, raw_y = chart.plotted("a", "loss", raw=True)
    series = state.series("a", "loss")
    assert series is not None
    np.testing.assert_array_equal(raw_y, series.value)
    np.testing.assert_allclose(y, reference_ema(list(series.value), 0.6), rtol=1e-9)
    assert len(chart.plotted("a", "eval_loss")[0]) == 10
    assert len(chart.plotted("a", "learning_rate")[0]) == 10
    assert chart.plotted("a", "grad_norm") is None  # on demand only

    _feed(state, "a", 100, 50)
    with qtbot.waitSignal(chart.redrawn, timeout=2000):
        pass
    x, y = chart.plotted("a", "loss")
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
    smoothed = chart.plotted("a", "loss")
    assert smoothed is not None
    np.testing.assert_allclose(smoothed[1], reference_ema(list(series.value), 0.9))
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
    # The title is laid out again when its text changes (and only then: ChartAxisItem).
    assert "Tokens" in chart._x_axis.label.toPlainText()
    np.testing.assert_allclose(chart.plotted("a", "loss")[0], 512.0 * (np.arange(20) + 1))  # type: ignore[index]
    _feed(state, "a", 20, 5)  # appended points get their x incrementally
    chart.redraw()
    np.testing.assert_allclose(chart.plotted("a", "loss")[0], 512.0 * (np.arange(25) + 1))  # type: ignore[index]
    chart.set_x_axis_mode("time")
    chart.redraw()
    assert "Tokens" not in chart._x_axis.label.toPlainText()
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
    assert chart.job_ids == ("b",)  # type: ignore[comparison-overlap]
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


MILLION = 1_000_000


def _shown_chart(qtbot: QtBot, state: AppState) -> LossChart:
    chart = LossChart(state, redraw_interval_ms=10)
    qtbot.addWidget(chart)
    chart.resize(800, 400)
    chart.show()
    qtbot.waitExposed(chart)
    state.set_selected_job_ids(["a"])
    return chart


def _noisy_loss(n: int) -> np.ndarray:
    steps = np.arange(n, dtype=np.float64)
    return 0.6 + 2.0 * np.exp(-steps / (n / 6)) + np.random.default_rng(7).normal(0, 0.08, n)


def test_a_million_points_are_drawn_as_a_few_per_pixel_and_a_one_point_spike_shows(
    qtbot: QtBot,
) -> None:
    state = AppState()
    state.job_added(make_job("a", "alpha"))
    chart = _shown_chart(qtbot, state)
    steps = np.arange(MILLION, dtype=np.float64)
    loss = _noisy_loss(MILLION)
    loss[424_242] = 30.0
    state.add_metric_arrays("a", "loss", steps, loss, 1000.0 + steps)
    chart.redraw()
    chart.plot.grab()  # a paint: pyqtgraph auto-ranges from the items' bounds
    width = int(chart.plot.getPlotItem().vb.width())
    assert width > 100

    full_x, _full_y = chart.plotted("a", "loss", raw=True)  # type: ignore[misc]
    assert len(full_x) == MILLION  # the curve stands for every point
    x, y = chart.drawn("a", "loss", raw=True)  # type: ignore[misc]
    assert len(x) <= 3 * width + 100  # what pyqtgraph gets is bounded by pixels
    assert 424_242.0 in x and y.max() == 30.0
    assert x[0] == 0.0 and x[-1] == MILLION - 1
    assert np.all(np.diff(x) > 0)
    sx, sy = chart.drawn("a", "loss")  # type: ignore[misc]
    assert sy.max() == debiased_ema(loss, 0.6).max() and len(sx) <= 3 * width + 100
    x_range = chart.plot.getPlotItem().vb.viewRange()[0]
    assert x_range[0] <= 0.0 and x_range[1] >= MILLION - 1  # auto-range saw the whole run

    chart.set_smoothing(0.9)  # the smoothed pyramid is rebuilt for the new weight
    chart.redraw()
    assert chart.drawn("a", "loss")[1].max() == debiased_ema(loss, 0.9).max()  # type: ignore[index]


def test_zooming_in_draws_every_point_in_view_and_auto_range_goes_back(qtbot: QtBot) -> None:
    state = AppState()
    state.job_added(make_job("a", "alpha"))
    chart = _shown_chart(qtbot, state)
    n = 200_000
    steps = np.arange(n, dtype=np.float64)
    state.add_metric_arrays("a", "loss", steps, _noisy_loss(n), steps)
    chart.redraw()
    chart.plot.grab()
    view = chart.plot.getPlotItem().vb
    coarse = chart.drawn("a", "loss", raw=True)[0]  # type: ignore[index]
    assert np.diff(coarse).max() > 50

    view.setXRange(100_000, 100_300, padding=0)  # the range signal redraws the curves
    x, _y = chart.drawn("a", "loss", raw=True)  # type: ignore[misc]
    np.testing.assert_array_equal(x, np.arange(99_999, 100_302))  # plus one beyond each edge
    view.setXRange(50_000, 70_000, padding=0)
    x, _y = chart.drawn("a", "loss", raw=True)  # type: ignore[misc]
    assert x[0] == 49_999 and x[-1] == 70_001 and np.diff(x).max() < 100

    view.enableAutoRange()
    chart.plot.grab()
    x, _y = chart.drawn("a", "loss", raw=True)  # type: ignore[misc]
    assert x[0] == 0 and x[-1] == n - 1


def test_batches_arriving_draw_the_same_as_one_load(qtbot: QtBot) -> None:
    n = 150_000
    steps = np.arange(n, dtype=np.float64)
    loss = _noisy_loss(n)
    loss[99_001] = -5.0
    evals = steps[::100]
    charts = []
    for batch in (1_000, n):
        state = AppState()
        state.job_added(make_job("a", "alpha"))
        chart = _shown_chart(qtbot, state)
        for start in range(0, n, batch):
            sl = slice(start, start + batch)
            state.add_metric_arrays("a", "loss", steps[sl], loss[sl], steps[sl])
            ev = evals[(evals >= start) & (evals < start + batch)].astype(int)
            state.add_metric_arrays("a", "eval_loss", ev, loss[ev] + 0.1, ev)
            state.add_metric_arrays("a", "learning_rate", ev, 1e-4 * (1 - ev / n), ev)
            chart.redraw()
        chart.plot.grab()
        charts.append(chart)
    for name, raw in (
        ("loss", True),
        ("loss", False),
        ("eval_loss", False),
        ("learning_rate", False),
    ):
        grown, whole = (c.drawn("a", name, raw=raw) for c in charts)
        assert grown is not None and whole is not None
        np.testing.assert_array_equal(grown[0], whole[0])
        np.testing.assert_allclose(grown[1], whole[1], rtol=1e-12)
    assert -5.0 in charts[0].drawn("a", "loss", raw=True)[1]  # type: ignore[index]


def test_a_resumed_run_whose_steps_go_back_is_drawn_in_full(
    chart_and_state: tuple[LossChart, AppState],
) -> None:
    chart, state = chart_and_state
    _feed(state, "a", 0, 120)
    _feed(state, "a", 100, 40)  # resumed from step 100: steps 100..119 again
    chart.redraw()
    x, _y = chart.drawn("a", "loss", raw=True)  # type: ignore[misc]
    # Every step is drawn, once: the steps logged again replace the old ones (issue 9).
    np.testing.assert_array_equal(x, np.arange(140.0))


def test_following_a_run_keeps_the_range_still_between_jumps_and_always_shows_all(
    qtbot: QtBot,
) -> None:
    """Axes and grid are regenerated only when the range moves: appending a batch must not
    move it every time, yet the range always covers every point."""
    state = AppState()
    state.job_added(make_job("a", "alpha"))
    chart = _shown_chart(qtbot, state)
    view = chart.plot.getPlotItem().vb
    n, batch = 100_000, 1_000
    steps = np.arange(n, dtype=np.float64)
    loss = _noisy_loss(n)
    ranges = []
    for start in range(0, n, batch):
        sl = slice(start, start + batch)
        state.add_metric_arrays("a", "loss", steps[sl], loss[sl], steps[sl])
        ev = steps[sl][::100]
        state.add_metric_arrays("a", "learning_rate", ev, 1e-4 * (1 - ev / n), ev)
        chart.redraw()
        chart.plot.grab()
        x_lo, x_hi = view.viewRange()[0]
        assert x_lo <= 0.0 and x_hi >= start + batch - 1
        ranges.append((x_lo, x_hi))
    moves = sum(a != b for a, b in itertools.pairwise(ranges))
    assert moves <= 25  # about ten per tenfold growth, not one per batch (99)
    assert chart.lr_view.viewRange()[1][0] <= 0.0  # the learning rate axis starts at zero


def test_a_falling_loss_moves_the_y_axes_rarely_and_covers_every_point(qtbot: QtBot) -> None:
    """A y axis (and its grid) is regenerated only when its range moves. A live loss that
    keeps falling, with noise, must not move it every few batches (each move costs a frame
    some milliseconds); the range still covers every drawn point."""
    state = AppState()
    state.job_added(make_job("a", "alpha", state="training"))
    chart = _shown_chart(qtbot, state)
    chart.set_grad_norm_visible(True)
    views = {key: chart.plot.panels[key].plot.vb for key in ("loss", "grad_norm")}
    n, batch = 100_000, 1_000
    steps = np.arange(n, dtype=np.float64)
    loss = _noisy_loss(n)
    ranges: dict[str, list[tuple[float, float]]] = {key: [] for key in views}
    for start in range(0, n, batch):
        sl = slice(start, start + batch)
        state.add_metric_arrays("a", "loss", steps[sl], loss[sl], steps[sl])
        state.add_metric_arrays("a", "grad_norm", steps[sl], 1.0 + 0.5 * loss[sl], steps[sl])
        ev = steps[sl][::100]  # eval points with markers: their size must not move the range
        state.add_metric_arrays("a", "eval_loss", ev, loss[sl][::100] + 0.05, ev)
        chart.redraw()
        chart.plot.grab()
        QApplication.processEvents()  # a first auto-range lands on the next turn of the loop
        for key, view in views.items():
            lo, hi = (float(v) for v in view.viewRange()[1])
            ranges[key].append((lo, hi))
        drawn = chart.drawn("a", "loss", raw=True)
        assert drawn is not None
        lo, hi = ranges["loss"][-1]
        assert lo <= drawn[1].min() and drawn[1].max() <= hi
    for key in views:
        moves = sum(a != b for a, b in itertools.pairwise(ranges[key]))
        assert moves <= 10, (key, moves)  # rounding alone moved it 15 to 18 times in 99 batches


def test_a_live_y_range_keeps_headroom_where_the_data_went_and_fits_once_the_run_ends(
    qtbot: QtBot,
) -> None:
    state = AppState()
    state.job_added(make_job("a", "alpha", state="training"))
    chart = _shown_chart(qtbot, state)
    chart.set_smoothing(0.0)
    view = chart.plot.panels["loss"].plot.vb

    def y_range() -> tuple[float, float]:
        chart.redraw()
        chart.plot.grab()
        QApplication.processEvents()
        lo, hi = (float(v) for v in view.viewRange()[1])
        return lo, hi

    steps = np.arange(200, dtype=np.float64)
    values = np.where(steps < 100, 5.0 + 4.0 * (steps % 2), 1.0 + 8.0 * (steps % 2))
    state.add_metric_arrays("a", "loss", steps[:100], values[:100], steps[:100])
    lo, hi = y_range()
    assert 4.0 < lo < 5.0 and 9.0 < hi < 10.0
    state.add_metric_arrays("a", "loss", steps[100:], values[100:], steps[100:])
    lo, hi = y_range()
    assert lo < 0.0 and 9.0 < hi < 10.0  # fell to 1: a tenth of the span more room below
    state.job_changed(make_job("a", "alpha", state="completed"))
    lo, hi = y_range()
    assert 0.25 < lo < 1.0 and 9.0 < hi < 10.0  # ended: the range fits the data


def test_a_wide_line_is_drawn_one_pixel_wide_once_it_is_a_min_max_envelope(
    chart_and_state: tuple[LossChart, AppState],
) -> None:
    """The smoothed loss is two pixels wide while its points are sparse; once it holds more
    points than pixel columns (a min/max envelope whose vertical strokes fill its band) it is
    drawn one pixel wide, which Qt strokes some milliseconds faster."""
    chart, state = chart_and_state
    chart.show()
    _feed(state, "a", 0, 100)
    chart.redraw()
    item = chart._curves[("a", "loss")].item
    assert item.opts["pen"].widthF() == 2.0 and item.opts["pen"].style() == Qt.PenStyle.SolidLine
    steps = np.arange(100, 100_100, dtype=np.float64)
    state.add_metric_arrays("a", "loss", steps, _noisy_loss(steps.shape[0]), steps)
    chart.redraw()
    assert item.opts["pen"].widthF() == 1.0 and item.opts["pen"].style() == Qt.PenStyle.SolidLine
    drawn = chart.drawn("a", "loss")
    assert drawn is not None and drawn[0].shape[0] > chart.plot.getPlotItem().vb.width()
    painted = item.curve.getData()  # what the curve strokes is what `drawn` reports
    assert np.array_equal(painted[0], drawn[0]) and np.array_equal(painted[1], drawn[1])
    chart.plot.getPlotItem().vb.setXRange(200, 260, padding=0)  # zoomed in: sparse again
    chart.redraw()
    assert item.opts["pen"].widthF() == 2.0


def test_dense_dashed_curves_are_drawn_one_pixel_wide_and_sparse_ones_keep_their_pen(
    chart_and_state: tuple[LossChart, AppState],
) -> None:
    chart, state = chart_and_state
    _feed(state, "a", 0, 100)  # 10 eval points: sparse
    chart.redraw()
    pen = chart._curves[("a", "eval_loss")].item.opts["pen"]
    assert pen.widthF() == 2.0 and pen.style() == Qt.PenStyle.DashLine
    assert chart._curves[("a", "eval_loss")].item.opts["symbol"] == "o"
    n = 400_000
    steps = np.arange(1000, 1000 + n, 10, dtype=np.float64)
    state.add_metric_arrays("a", "eval_loss", steps, _noisy_loss(steps.shape[0]), steps)
    chart.redraw()
    pen = chart._curves[("a", "eval_loss")].item.opts["pen"]
    assert pen.widthF() == 1.0 and pen.style() == Qt.PenStyle.DashLine
    assert chart._curves[("a", "eval_loss")].item.opts["symbol"] is None


def test_a_point_without_a_usable_time_is_left_out_in_wall_time_mode(
    chart_and_state: tuple[LossChart, AppState],
) -> None:
    chart, state = chart_and_state
    steps = np.arange(50, dtype=np.float64)
    times = 1000.0 + 2.0 * steps
    times[7] = np.nan
    state.add_metric_arrays("a", "loss", steps, 3.0 - steps / 50, times)
    chart.set_x_axis_mode("time")
    chart.redraw()
    assert "Tokens" not in chart._x_axis.label.toPlainText()
    x, y = chart.drawn("a", "loss", raw=True)  # type: ignore[misc]
    assert np.isfinite(x).all() and len(x) == 49
    assert 3.0 - 7 / 50 not in y and y[0] == 3.0
