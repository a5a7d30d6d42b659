"""The chart's panels, hover read-out, legend toggles, fitted x axis and export buttons
(pytest-qt, offscreen)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot
from view_helpers import make_job

from desktop.views.chart import export as chart_export
from desktop.views.chart.widget import LossChart
from desktop.views.state import AppState

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("does not support propagateSizeHints"),  # offscreen plugin
]

N = 60


def _feed(state: AppState, job_id: str, n: int = N, lr: float = 5e-4, gpu: bool = False) -> None:
    steps = np.arange(n, dtype=np.float64)
    times = 1000.0 + 2.0 * steps
    add = state.add_metric_arrays
    add(job_id, "loss", steps, 2.0 + np.sin(steps) * 0.1 - steps / (2 * n), times)
    add(job_id, "eval_loss", steps[::10], 2.1 - steps[::10] / (2 * n), times[::10])
    add(job_id, "learning_rate", steps, lr * (1 - steps / n) + lr / 100, times)
    add(job_id, "grad_norm", steps, 40.0 + steps % 3, times)  # big: must not squash the loss
    add(job_id, "samples_per_second", steps, 8.0 + steps % 2, times)
    add(job_id, "train_tokens_per_second", steps, 4000.0 + 10 * (steps % 5), times)
    if gpu:
        add(job_id, "peak_gpu_memory_mb", steps, 12000.0 + 0 * steps, times)
        add(job_id, "gpu_utilization", steps, 90.0 + steps % 7, times)


@pytest.fixture
def shown(qtbot: QtBot) -> tuple[LossChart, AppState]:
    state = AppState()
    state.job_added(make_job("a", "alpha", state="training"))
    state.job_added(make_job("b", "beta", state="training"))
    chart = LossChart(state, redraw_interval_ms=10)
    qtbot.addWidget(chart)
    chart.resize(1000, 700)
    chart.show()
    qtbot.waitExposed(chart)
    state.set_selected_job_ids(["a"])
    return chart, state


def _stored(state: AppState, job_id: str, name: str, step: int) -> float:
    series = state.series(job_id, name)
    assert series is not None
    return float(series.value[int(np.flatnonzero(series.step == step)[0])])


def test_each_metric_kind_has_its_own_panel_and_the_legend_covers_none(
    shown: tuple[LossChart, AppState],
) -> None:
    chart, state = shown
    _feed(state, "a")
    chart.redraw()
    assert chart.shown_panels == ("loss", "lr", "throughput")  # no GPU sampled, no grad norm
    chart.set_grad_norm_visible(True)
    chart.redraw()
    chart.plot.grab()
    assert chart.shown_panels == ("loss", "lr", "grad_norm", "throughput")
    loss_top = chart.plot.panels["loss"].plot.vb.viewRange()[1][1]
    assert loss_top < 5.0  # the grad norm of ~40 has its own axis
    assert chart.plot.panels["grad_norm"].plot.vb.viewRange()[1][1] >= 42.0
    # samples/s on the throughput panel's right axis, tokens/s on its left.
    throughput = chart.plot.panels["throughput"]
    assert throughput.right_view is not None
    assert chart._curves[("a", "samples_per_second")].item in throughput.right_view.addedItems
    assert chart._curves[("a", "train_tokens_per_second")].item in throughput.plot.items
    # The legend has its own row: it overlaps no panel's data area.
    legend_rect = chart.legend.sceneBoundingRect()
    assert legend_rect.height() > 0
    for key in chart.shown_panels:
        assert not legend_rect.intersects(chart.plot.panels[key].plot.vb.sceneBoundingRect())
    labels = {label.text for _sample, label in chart.legend.items}
    assert {"alpha · tokens/s", "alpha · samples/s", "alpha · grad norm"} <= labels

    chart.throughput_check.setChecked(False)
    chart.redraw()
    assert "throughput" not in chart.shown_panels
    assert chart.plotted("a", "samples_per_second") is None

    _feed(state, "b", gpu=True)  # GPU samples appear in a panel of their own, when present
    state.set_selected_job_ids(["a", "b"])
    chart.redraw()
    assert chart.shown_panels[-1] == "gpu"
    gpu_x, gpu_y = chart.plotted("b", "gpu_utilization")  # type: ignore[misc]
    assert len(gpu_x) == N and gpu_y[3] == 93.0


def test_hover_reads_out_every_visible_series_stored_point_at_the_cursor_step(
    qtbot: QtBot, shown: tuple[LossChart, AppState]
) -> None:
    chart, state = shown
    _feed(state, "a")
    _feed(state, "b", n=40, lr=5e-6)
    state.set_selected_job_ids(["a", "b"])
    chart.redraw()
    chart.plot.grab()
    # A real mouse move over the loss panel, at step 23.2.
    view = chart.plot.getPlotItem().vb
    scene_pos = view.mapViewToScene(QPointF(23.2, float(np.mean(view.viewRange()[1]))))
    where = QPointF(chart.plot.mapFromScene(scene_pos))
    move = QMouseEvent(
        QEvent.Type.MouseMove,
        where,
        QPointF(chart.plot.viewport().mapToGlobal(where)),
        Qt.MouseButton.NoButton,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(chart.plot.viewport(), move)
    assert "step 23" in chart.readout_label.text()
    entries = chart.show_readout_at(23.2)
    got = {(e.job_id, e.name): (e.step, e.value) for e in entries}
    expected_names = {"loss", "eval_loss", "learning_rate", "samples_per_second"}
    expected_names |= {"train_tokens_per_second"}
    assert set(got) == {(j, n) for j in ("a", "b") for n in expected_names}
    for (job_id, name), (step, value) in got.items():
        # Every value is the stored one, at the step nearest the cursor.
        assert step == (20 if name == "eval_loss" else 23)
        assert value == _stored(state, job_id, name, step)
    text = chart.readout_label.text()
    assert "alpha · loss" in text and "beta · lr" in text and "@20" in text
    assert f"{_stored(state, 'b', 'learning_rate', 23):.3e}" in text
    assert chart._cursor_lines["lr"].isVisible() and chart._cursor_lines["lr"].value() == 23.2


def _legend_click(qtbot: QtBot, chart: LossChart, label_text: str) -> None:
    sample = next(s for s, label in chart.legend.items if label.text == label_text)
    where = chart.plot.mapFromScene(sample.sceneBoundingRect().center())
    qtbot.mouseClick(chart.plot.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(where))


def test_a_series_hidden_from_the_legend_stays_hidden_across_refreshes(
    qtbot: QtBot, shown: tuple[LossChart, AppState]
) -> None:
    chart, state = shown
    _feed(state, "a", n=30)
    chart.redraw()
    chart.plot.grab()
    _legend_click(qtbot, chart, "alpha · loss")
    assert chart.series_hidden("a", "loss")
    assert chart.plotted("a", "loss") is None and chart.plotted("a", "loss", raw=True) is None
    # New points arrive and the chart redraws: still hidden, the others still drawn.
    state.add_metric_arrays("a", "loss", np.arange(30.0, 40.0), np.ones(10), np.ones(10))
    qtbot.waitUntil(lambda: not chart.redraw_pending, timeout=30000)
    chart.redraw()
    assert chart.plotted("a", "loss") is None
    assert len(chart.plotted("a", "eval_loss")[0]) == 3  # type: ignore[index]
    assert "loss" not in {e.name for e in chart.show_readout_at(5.0)}
    # Another selection, then back: the curve is made anew, still hidden.
    state.set_selected_job_ids(["b"])
    chart.redraw()
    state.set_selected_job_ids(["a"])
    chart.redraw()
    chart.plot.grab()
    assert chart.plotted("a", "loss") is None
    _legend_click(qtbot, chart, "alpha · loss")  # a second click shows it again
    chart.redraw()
    assert not chart.series_hidden("a", "loss")
    assert len(chart.plotted("a", "loss")[0]) == 40  # type: ignore[index]


def test_the_x_axis_fits_the_data_once_the_run_ends(
    qtbot: QtBot, shown: tuple[LossChart, AppState]
) -> None:
    chart, state = shown
    _feed(state, "a", n=100)
    chart.redraw()
    chart.plot.grab()
    view = chart.plot.getPlotItem().vb
    assert view.viewRange()[0][1] > 110  # running: room to grow
    state.job_changed(make_job("a", "alpha", state="completed"))
    qtbot.waitUntil(lambda: not chart.redraw_pending, timeout=30000)
    chart.plot.grab()
    lo, hi = view.viewRange()[0]
    assert lo <= 0 and 99 <= hi <= 99 + 0.05 * 99  # the data, and the view's small padding
    # The lower panels share that x range, the one with a right-hand axis too: no panel
    # hides the run's last steps under an axis.
    assert chart.shown_panels == ("loss", "lr", "throughput")
    for key in chart.shown_panels:
        assert chart.plot.panels[key].plot.vb.viewRange()[0] == pytest.approx([lo, hi]), key


def test_learning_rates_on_a_log_axis(shown: tuple[LossChart, AppState]) -> None:
    chart, state = shown
    _feed(state, "a", lr=5e-4)
    _feed(state, "b", lr=5e-6)
    state.add_metric_arrays("b", "learning_rate", [N], [0.0], [0.0])  # a schedule's last zero
    state.set_selected_job_ids(["a", "b"])
    chart.redraw()
    chart.plot.grab()
    lr_view = chart.plot.panels["lr"].plot.vb
    assert lr_view.viewRange()[1][0] <= 0.0  # linear, from zero
    chart.lr_log_check.setChecked(True)
    chart.redraw()
    chart.plot.grab()
    lo, hi = lr_view.viewRange()[1]  # log10 units
    assert lo <= np.log10(5e-8) + 0.5 and hi >= np.log10(5e-4)
    assert lo > -12  # no zero dragged the range to nothing
    x, y = chart.drawn("b", "learning_rate")  # type: ignore[misc]
    assert y.min() > 0 and N not in x  # the zero has no place on a log axis
    chart.set_lr_log(False)
    chart.redraw()
    chart.plot.grab()
    assert lr_view.viewRange()[1][0] <= 0.0


def test_png_and_csv_buttons_save_what_is_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: tuple[LossChart, AppState]
) -> None:
    chart, state = shown
    _feed(state, "a", n=20)
    targets = iter([str(tmp_path / "c.png"), str(tmp_path / "c.csv"), "", ""])
    monkeypatch.setattr(
        chart_export.QFileDialog, "getSaveFileName", lambda *_a, **_k: (next(targets), "")
    )
    chart.png_button.click()
    image = QImage(str(tmp_path / "c.png"))
    assert not image.isNull() and image.width() == 1600
    chart.csv_button.click()
    rows = list(csv.reader((tmp_path / "c.csv").open()))
    assert {"alpha/loss", "alpha/samples_per_second", "alpha/train_tokens_per_second"} <= set(
        rows[0]
    )
    assert len(rows) == 21
    chart.png_button.click()  # cancelled: nothing written, no error
    chart.csv_button.click()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "c.png"]


def test_a_file_that_cannot_be_written_is_named_in_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: tuple[LossChart, AppState]
) -> None:
    chart, state = shown
    _feed(state, "a", n=5)
    missing = tmp_path / "no such folder" / "c.csv"
    monkeypatch.setattr(
        chart_export.QFileDialog, "getSaveFileName", lambda *_a, **_k: (str(missing), "")
    )
    messages: list[str] = []
    monkeypatch.setattr(
        chart_export.QMessageBox, "warning", lambda _p, _t, text: messages.append(text)
    )
    chart.csv_button.click()
    assert len(messages) == 1 and str(missing) in messages[0] and "another folder" in messages[0]


def test_an_axis_with_no_series_shows_no_made_up_ticks(shown: tuple[LossChart, AppState]) -> None:
    chart, state = shown
    steps = np.arange(10.0)
    state.add_metric_arrays("a", "loss", steps, 2.0 - steps / 10, steps)
    state.add_metric_arrays("a", "samples_per_second", steps, 8.0 + 0 * steps, steps)
    chart.redraw()
    throughput = chart.plot.panels["throughput"].plot
    assert "throughput" in chart.shown_panels
    assert not throughput.getAxis("left").style["showValues"]  # no tokens/s logged
    assert throughput.getAxis("right").style["showValues"]
    state.add_metric_arrays("a", "train_tokens_per_second", steps, 4000.0 + 0 * steps, steps)
    chart.redraw()
    assert throughput.getAxis("left").style["showValues"]
