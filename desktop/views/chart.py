"""The live loss chart: loss, eval loss, learning rate (right axis) and grad norm of the
selected jobs, overlaid, with TensorBoard-style smoothing.

It stays smooth with a million points: the curves are fed no-copy views of AppState's numpy
buffers, pyqtgraph downsamples (peak) and clips to the view, smoothing and x-axis mapping are
incremental (only new points are processed), and a redraw happens on a single-shot timer only
after AppState said that data changed; an idle chart runs no timer at all.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from desktop.smoothing import EmaSmoother, FloatArray, GrowableArray
from desktop.state import AppState, MetricSeries

__all__ = ["JOB_COLORS", "SMOOTHED_SERIES", "LossChart", "XAxisMode"]

JOB_COLORS: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
"""One colour per job, in the order the jobs first appear in the chart (cycled)."""

SMOOTHED_SERIES: tuple[str, ...] = ("loss", "grad_norm")
"""Series drawn smoothed with the raw curve faintly behind. eval_loss is sparse and
learning_rate is a schedule: both are drawn as they are."""

_LABELS = {
    "loss": "loss",
    "eval_loss": "eval loss",
    "learning_rate": "lr",
    "grad_norm": "grad norm",
}
_RAW_ALPHA = 60


class XAxisMode(StrEnum):
    """What the x axis shows."""

    STEP = "step"
    TOKENS = "tokens"
    TIME = "time"


_X_TITLES = {
    XAxisMode.STEP: "Step",
    XAxisMode.TOKENS: "Tokens seen",
    XAxisMode.TIME: "Wall time",
}
_TIME_SPACINGS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def _format_clock(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}" if hours else f"{sign}{minutes}:{secs:02d}"


class _XAxisItem(pg.AxisItem):  # type: ignore[misc]
    """A bottom axis that, in wall-time mode, puts ticks on round durations as h:mm:ss."""

    def __init__(self) -> None:
        super().__init__(orientation="bottom")
        self.mode = XAxisMode.STEP

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> Any:
        """Round durations in time mode; pyqtgraph's choice otherwise."""
        if self.mode is not XAxisMode.TIME or maxVal <= minVal:
            return super().tickSpacing(minVal, maxVal, size)
        wanted = max(2.0, size / 90.0)  # about one label per 90 px
        span = maxVal - minVal
        major = next(
            (float(s) for s in _TIME_SPACINGS if span / s <= wanted),
            3600.0 * math.ceil(span / wanted / 3600.0),
        )
        return [(major, 0.0), (major / 2.0, 0.0)]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        """h:mm:ss in time mode."""
        if self.mode is XAxisMode.TIME:
            return [_format_clock(v * scale) for v in values]
        result: list[str] = super().tickStrings(values, scale, spacing)
        return result


@dataclass
class _Curve:
    """One series of one job on the chart, with its incremental caches."""

    job_id: str
    name: str
    item: pg.PlotDataItem
    raw_item: pg.PlotDataItem | None
    smoother: EmaSmoother | None
    x_cache: GrowableArray = field(default_factory=GrowableArray)
    ready: int = 0
    """Points of the series that have an x value (all in step mode)."""

    def reset(self) -> None:
        self.x_cache.clear()
        self.ready = 0
        if self.smoother is not None:
            self.smoother.reset()


class LossChart(QWidget):
    """Loss, eval loss, learning rate and (on demand) grad norm of one or more jobs.

    By default it shows the jobs selected in AppState (`follow_selection`); `set_job_ids`
    shows others. Each job has one colour; line styles tell the series apart (loss solid,
    eval loss dashed with dots, learning rate dotted on the right axis, grad norm dash-dot).

    Signals:
        redrawn(): after each redraw (tests and benchmarks wait on it).
    """

    redrawn = Signal()

    def __init__(
        self,
        state: AppState,
        parent: QWidget | None = None,
        *,
        follow_selection: bool = True,
        redraw_interval_ms: int = 100,
    ) -> None:
        super().__init__(parent)
        self._state = state
        self._job_ids: tuple[str, ...] = ()
        self._colors: dict[str, str] = {}
        self._curves: dict[tuple[str, str], _Curve] = {}
        self._dirty_jobs: set[str] = set()
        self._x_mode = XAxisMode.STEP
        self._smoothing = 0.6
        self._show_grad_norm = False
        self._t0: dict[str, float] = {}

        self._x_axis = _XAxisItem()
        self.plot = pg.PlotWidget(self, axisItems={"bottom": self._x_axis})
        self.plot.setBackground("w")
        plot_item = self.plot.getPlotItem()
        plot_item.showGrid(x=True, y=True, alpha=0.15)
        # Draw at most a few points per pixel column (min/max kept) and only what is in view.
        plot_item.setDownsampling(auto=True, mode="peak")
        plot_item.setClipToView(True)
        plot_item.setLabel("left", "loss")
        plot_item.setLabel("bottom", _X_TITLES[self._x_mode])
        plot_item.showAxis("right")
        plot_item.setLabel("right", "learning rate")
        self.legend = plot_item.addLegend(offset=(-10, 10), labelTextSize="8pt")
        self.lr_view = pg.ViewBox()
        plot_item.scene().addItem(self.lr_view)
        plot_item.getAxis("right").linkToView(self.lr_view)
        self.lr_view.setXLink(plot_item)
        plot_item.vb.sigResized.connect(self._on_main_view_resized)

        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal, self)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(round(self._smoothing * 100))
        self.smoothing_slider.setToolTip(
            "Debiased exponential moving average, as in TensorBoard (0: raw). The raw curve "
            "stays faintly behind the smoothed one."
        )
        self.smoothing_slider.valueChanged.connect(self._on_smoothing_slider_value_changed)
        self.smoothing_label = QLabel(f"{self._smoothing:.2f}", self)
        self.smoothing_label.setMinimumWidth(32)
        self.x_combo = QComboBox(self)
        for mode in XAxisMode:
            self.x_combo.addItem(_X_TITLES[mode], mode.value)
        self.x_combo.currentIndexChanged.connect(self._on_x_combo_current_index_changed)
        self.grad_norm_check = QCheckBox("grad norm", self)
        self.grad_norm_check.toggled.connect(self.set_grad_norm_visible)

        controls = QHBoxLayout()
        controls.setContentsMargins(4, 0, 4, 0)
        controls.addWidget(QLabel("Smoothing", self))
        controls.addWidget(self.smoothing_slider, 1)
        controls.addWidget(self.smoothing_label)
        controls.addSpacing(12)
        controls.addWidget(QLabel("x:", self))
        controls.addWidget(self.x_combo)
        controls.addWidget(self.grad_norm_check)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.plot, 1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(redraw_interval_ms)
        self._timer.timeout.connect(self.redraw)

        state.metrics_appended.connect(self._on_state_metrics_appended)
        state.row_removed.connect(self._on_state_row_removed)
        if follow_selection:
            state.selection_changed.connect(self.set_job_ids)
            self.set_job_ids(list(state.selected_job_ids))

    # -- public API ---------------------------------------------------------------------------

    @property
    def job_ids(self) -> tuple[str, ...]:
        """The jobs shown."""
        return self._job_ids

    def set_job_ids(self, job_ids: Sequence[str]) -> None:
        """Show these jobs (in this order; one colour each)."""
        ids = tuple(dict.fromkeys(job_ids))
        if ids == self._job_ids:
            return
        for key in [k for k in self._curves if k[0] not in ids]:
            self._drop_curve(key)
        self._job_ids = ids
        for job_id in ids:
            self._colors.setdefault(job_id, JOB_COLORS[len(self._colors) % len(JOB_COLORS)])
        self._dirty_jobs.update(ids)
        self._schedule()

    @property
    def smoothing(self) -> float:
        """The smoothing weight in [0, 0.99]."""
        return self._smoothing

    def set_smoothing(self, weight: float) -> None:
        """Set the smoothing weight (0: raw; at most 0.99)."""
        if not 0.0 <= weight <= 0.99:
            raise ValueError(f"smoothing must be between 0 and 0.99, got {weight!r}")
        if weight == self._smoothing:
            return
        self._smoothing = weight
        self.smoothing_label.setText(f"{weight:.2f}")
        if self.smoothing_slider.value() != round(weight * 100):
            self.smoothing_slider.blockSignals(True)
            self.smoothing_slider.setValue(round(weight * 100))
            self.smoothing_slider.blockSignals(False)
        for curve in self._curves.values():
            if curve.smoother is not None:
                curve.smoother.weight = weight
        self._dirty_jobs.update(self._job_ids)
        self._schedule()

    @property
    def x_axis_mode(self) -> XAxisMode:
        """What the x axis shows."""
        return self._x_mode

    def set_x_axis_mode(self, mode: XAxisMode | str) -> None:
        """Plot against step, tokens seen or wall time since the job started."""
        mode = XAxisMode(mode)
        if mode is self._x_mode:
            return
        self._x_mode = mode
        self._x_axis.mode = mode
        self._t0.clear()
        self.plot.getPlotItem().setLabel(
            "bottom", _X_TITLES[mode], units="tok" if mode is XAxisMode.TOKENS else None
        )
        index = self.x_combo.findData(mode.value)
        if self.x_combo.currentIndex() != index:
            self.x_combo.blockSignals(True)
            self.x_combo.setCurrentIndex(index)
            self.x_combo.blockSignals(False)
        for curve in self._curves.values():
            curve.x_cache.clear()
            curve.ready = 0
        self.plot.getPlotItem().enableAutoRange()
        self._dirty_jobs.update(self._job_ids)
        self._schedule()

    @property
    def grad_norm_visible(self) -> bool:
        """Whether grad norm is drawn."""
        return self._show_grad_norm

    def set_grad_norm_visible(self, visible: bool) -> None:
        """Draw grad norm (left axis, dash-dot) or not."""
        if visible == self._show_grad_norm:
            return
        self._show_grad_norm = visible
        if self.grad_norm_check.isChecked() != visible:
            self.grad_norm_check.setChecked(visible)
        if not visible:
            for key in [k for k in self._curves if k[1] == "grad_norm"]:
                self._drop_curve(key)
        self._dirty_jobs.update(self._job_ids)
        self._schedule()

    @property
    def redraw_pending(self) -> bool:
        """True while a redraw is scheduled (new data, or a setting changed)."""
        return self._timer.isActive()

    def redraw(self) -> None:
        """Push new points of the changed jobs to their curves now (the timer calls this)."""
        self._timer.stop()
        dirty, self._dirty_jobs = self._dirty_jobs, set()
        for job_id in self._job_ids:
            if job_id in dirty:
                self._update_job(job_id)
        self.redrawn.emit()

    def plotted(
        self, job_id: str, name: str, *, raw: bool = False
    ) -> tuple[FloatArray, FloatArray] | None:
        """The (x, y) arrays last given to a curve (smoothed, or `raw`); None if not drawn."""
        curve = self._curves.get((job_id, name))
        if curve is None:
            return None
        item = curve.item if not raw else curve.raw_item
        if item is None or not item.isVisible():
            return None
        x, y = item.getOriginalDataset()  # what was given, before downsampling and clipping
        if x is None or y is None:
            return np.empty(0), np.empty(0)
        return x, y

    def export_png(self, path: str | Path, width: int = 1600) -> Path:
        """Save the plot as a PNG `width` pixels wide; returns the path written."""
        self.redraw()
        exporter = pyqtgraph.exporters.ImageExporter(self.plot.getPlotItem())
        exporter.parameters()["width"] = int(width)
        target = Path(path)
        exporter.export(str(target))
        return target

    def export_csv(self, path: str | Path) -> Path:
        """Save what is plotted as a wide CSV: one row per step, columns per job and series.

        Columns: `step`, then for each job `<name>/<x>` when the x axis is not the step,
        `<name>/<series>` for every plotted series and `<name>/<series>_smoothed` for the
        smoothed ones. A cell is empty where a series has no point at that step.
        """
        self.redraw()
        columns: list[tuple[str, FloatArray, FloatArray]] = []  # (title, steps, values)
        for job_id in self._job_ids:
            job = self._state.job(job_id)
            label = job.name if job is not None else job_id
            x_done = False
            for name in self._series_names():
                curve = self._curves.get((job_id, name))
                series = self._state.series(job_id, name)
                if curve is None or series is None or curve.ready == 0:
                    continue
                steps = series.step[: curve.ready]
                if not x_done and self._x_mode is not XAxisMode.STEP:
                    columns.append(
                        (
                            f"{label}/{self._x_mode.value}",
                            steps,
                            curve.x_cache.view()[: curve.ready],
                        )
                    )
                    x_done = True
                columns.append((f"{label}/{name}", steps, series.value[: curve.ready]))
                if curve.smoother is not None and self._smoothing > 0:
                    smoothed = curve.smoother.update(series.value[: curve.ready])
                    columns.append((f"{label}/{name}_smoothed", steps, smoothed))
        all_steps = np.unique(np.concatenate([c[1] for c in columns])) if columns else np.empty(0)
        table = np.full((all_steps.shape[0], len(columns)), np.nan)
        for j, (_title, steps, values) in enumerate(columns):
            # A repeated step (a resumed run) keeps its last value.
            table[np.searchsorted(all_steps, steps), j] = values
        target = Path(path)
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["step", *(c[0] for c in columns)])
            for step, row in zip(all_steps, table, strict=True):
                writer.writerow(
                    [f"{step:.0f}", *("" if math.isnan(v) else repr(float(v)) for v in row)]
                )
        return target

    # -- drawing ------------------------------------------------------------------------------

    def _series_names(self) -> tuple[str, ...]:
        names = ("loss", "eval_loss", "learning_rate")
        return (*names, "grad_norm") if self._show_grad_norm else names

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def _update_job(self, job_id: str) -> None:
        for name in self._series_names():
            series = self._state.series(job_id, name)
            if series is None or len(series) == 0:
                continue
            curve = self._curves.get((job_id, name)) or self._make_curve(job_id, name)
            self._update_curve(curve, series)

    def _update_curve(self, curve: _Curve, series: MetricSeries) -> None:
        n = len(series)
        if curve.ready > n:  # the series was cleared and reloaded
            curve.reset()
        if self._x_mode is XAxisMode.STEP:
            x = series.step
            curve.ready = n
        else:
            self._extend_x(curve, series)
            x = curve.x_cache.view()
        ready = curve.ready
        y = series.value[:ready]
        x = x[:ready]
        if curve.smoother is not None and self._smoothing > 0:
            smoothed = curve.smoother.update(y)
            curve.item.setData(x, smoothed)
            assert curve.raw_item is not None
            curve.raw_item.setData(x, y)
            curve.raw_item.setVisible(True)
        else:
            curve.item.setData(x, y)
            if curve.raw_item is not None:
                curve.raw_item.setVisible(False)

    def _extend_x(self, curve: _Curve, series: MetricSeries) -> None:
        done = curve.ready
        steps = series.step
        if self._x_mode is XAxisMode.TIME:
            t0 = self._job_t0(curve.job_id)
            curve.x_cache.extend(series.time[done:] - t0)
            curve.ready = len(series)
            return
        tokens = self._state.series(curve.job_id, "tokens_seen")
        if tokens is None or len(tokens) == 0:
            return
        # Map steps to tokens; points past the last known token count wait for it.
        last_known = tokens.step[-1]
        upto = done + int(np.searchsorted(steps[done:], last_known, side="right"))
        if upto > done:
            curve.x_cache.extend(np.interp(steps[done:upto], tokens.step, tokens.value))
            curve.ready = upto

    def _job_t0(self, job_id: str) -> float:
        t0 = self._t0.get(job_id)
        if t0 is None:
            job = self._state.job(job_id)
            firsts = [
                s.time[0]
                for s in (self._state.series(job_id, n) for n in self._state.series_names(job_id))
                if s is not None and len(s)
            ]
            if job is not None and job.started_at is not None:
                t0 = job.started_at
            else:
                t0 = float(min(firsts)) if firsts else 0.0
            self._t0[job_id] = t0
        return t0

    def _make_curve(self, job_id: str, name: str) -> _Curve:
        color = self._colors.get(job_id, JOB_COLORS[0])
        job = self._state.job(job_id)
        label = f"{job.name if job is not None else job_id} · {_LABELS.get(name, name)}"
        plot_item = self.plot.getPlotItem()
        raw_item: pg.PlotDataItem | None = None
        smoother: EmaSmoother | None = None
        if name == "eval_loss":
            pen = pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine)
            item = pg.PlotDataItem(
                pen=pen, symbol="o", symbolSize=5, symbolBrush=color, symbolPen=None, name=label
            )
        elif name == "learning_rate":
            item = pg.PlotDataItem(
                pen=pg.mkPen(color, width=1.5, style=Qt.PenStyle.DotLine), name=label
            )
        else:
            style = Qt.PenStyle.SolidLine if name == "loss" else Qt.PenStyle.DashDotLine
            faint = pg.mkColor(color)
            faint.setAlpha(_RAW_ALPHA)
            raw_item = pg.PlotDataItem(pen=pg.mkPen(faint, width=1, style=style))
            item = pg.PlotDataItem(pen=pg.mkPen(color, width=2, style=style), name=label)
            smoother = EmaSmoother(self._smoothing if self._smoothing < 1 else 0.99)
        for plotted in (raw_item, item):
            if plotted is None:
                continue
            if name == "learning_rate":
                self.lr_view.addItem(plotted)
            else:
                plot_item.addItem(plotted)  # a named item joins the legend here
            # After adding: PlotItem.addItem applies the plot's own settings to the item.
            # One min/max pair per pixel column draws the same envelope as every point does.
            plotted.opts["autoDownsampleFactor"] = 1.0
            plotted.setDownsampling(auto=True, method="peak")
            plotted.setClipToView(True)
        if name == "learning_rate":
            self.legend.addItem(item, label)
        curve = _Curve(job_id, name, item, raw_item, smoother)
        self._curves[(job_id, name)] = curve
        return curve

    def _drop_curve(self, key: tuple[str, str]) -> None:
        curve = self._curves.pop(key)
        for item in (curve.item, curve.raw_item):
            if item is None:
                continue
            self.legend.removeItem(item)
            if curve.name == "learning_rate":
                self.lr_view.removeItem(item)
            else:
                self.plot.getPlotItem().removeItem(item)

    # -- slots --------------------------------------------------------------------------------

    def _on_main_view_resized(self) -> None:
        main = self.plot.getPlotItem().vb
        self.lr_view.setGeometry(main.sceneBoundingRect())
        self.lr_view.linkedViewChanged(main, self.lr_view.XAxis)

    def _on_state_metrics_appended(self, job_id: str) -> None:
        if job_id in self._job_ids:
            self._dirty_jobs.add(job_id)
            self._schedule()

    def _on_state_row_removed(self, _row: int) -> None:
        gone = [job_id for job_id in self._job_ids if self._state.job(job_id) is None]
        if gone:
            self.set_job_ids([j for j in self._job_ids if j not in gone])

    def _on_smoothing_slider_value_changed(self, value: int) -> None:
        self.set_smoothing(value / 100.0)

    def _on_x_combo_current_index_changed(self, index: int) -> None:
        self.set_x_axis_mode(XAxisMode(self.x_combo.itemData(index)))
