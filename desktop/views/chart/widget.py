"""The live loss chart: loss, eval loss, learning rate (right axis) and grad norm of the
selected jobs, overlaid, with TensorBoard-style smoothing.

It stays smooth with a million points. Per frame, nothing costs O(points): smoothing, x-axis
mapping and a min/max pyramid per curve (desktop/views/chart/downsample.py) take in only the new
points; each curve is handed about two points per pixel column of the visible x range (the min
and max of each column's points, in x order, first and last point included), so pyqtgraph never
downsamples, clips, checks finiteness or measures bounds over the whole series; the x extent
for auto-range is known from the pyramid's index, not scanned. The decimated view is recomputed
only when data, the visible x range or the plot width changed. A redraw happens on a
single-shot timer only after AppState said that data changed; an idle chart runs no timer.
A selected job's lazily loaded history shows "Loading history …", then is drawn at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from desktop.views.chart.curves import (
    X_TITLES,
    Curve,
    DecimatedItem,
    TimeAxisItem,
    XAxisMode,
    follow_extent,
)
from desktop.views.chart.export import CsvColumn, write_png, write_wide_csv
from desktop.views.chart.smoothing import EmaSmoother, FloatArray
from desktop.views.state import AppState, MetricSeries

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
_SYMBOL_SPACING_PX = 6
"""eval loss gets markers only while its drawn points are at least this far apart on average."""
_DENSE_SPACING_PX = 4
"""Dashed and dotted curves whose drawn points are closer than this on average (a min/max
envelope) are drawn one pixel wide: Qt strokes a wider patterned zigzag of thousands of points
some 50 times slower (~20 ms) than a one-pixel one (~0.3 ms), which keeps its pattern."""
_FALLBACK_WIDTH_PX = 1000
"""Pixel columns assumed while the plot is hidden or not laid out."""


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
        self._curves: dict[tuple[str, str], Curve] = {}
        self._dirty_jobs: set[str] = set()
        self._x_mode = XAxisMode.STEP
        self._smoothing = 0.6
        self._show_grad_norm = False
        self._t0: dict[str, float] = {}
        self._x_extent: tuple[float, float] | None = None

        self._x_axis = TimeAxisItem()
        self.plot = pg.PlotWidget(self, axisItems={"bottom": self._x_axis})
        self.plot.setBackground("w")
        plot_item = self.plot.getPlotItem()
        plot_item.showGrid(x=True, y=True, alpha=0.15)
        # No pyqtgraph downsampling or clip-to-view: both scan the whole series every frame.
        # The curves are handed only what is in view, min/max per pixel column (_draw_curve).
        plot_item.setLabel("left", "loss")
        plot_item.setLabel("bottom", X_TITLES[self._x_mode])
        plot_item.showAxis("right")
        plot_item.setLabel("right", "learning rate")
        self.legend = plot_item.addLegend(offset=(-10, 10), labelTextSize="8pt")
        self.lr_view = pg.ViewBox()
        plot_item.scene().addItem(self.lr_view)
        plot_item.getAxis("right").linkToView(self.lr_view)
        self.lr_view.setXLink(plot_item)
        plot_item.vb.sigResized.connect(self._on_main_view_resized)
        plot_item.vb.sigXRangeChanged.connect(self._on_main_view_x_range_changed)

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
            self.x_combo.addItem(X_TITLES[mode], mode.value)
        self.x_combo.currentIndexChanged.connect(self._on_x_combo_current_index_changed)
        self.grad_norm_check = QCheckBox("grad norm", self)
        self.grad_norm_check.toggled.connect(self.set_grad_norm_visible)
        self.loading_label = QLabel("Loading history …", self)
        self.loading_label.hide()
        (policy := self.loading_label.sizePolicy()).setRetainSizeWhenHidden(True)
        self.loading_label.setSizePolicy(policy)  # showing it must not re-lay out the plot

        controls = QHBoxLayout()
        controls.setContentsMargins(4, 0, 4, 0)
        controls.addWidget(QLabel("Smoothing", self))
        controls.addWidget(self.smoothing_slider, 1)
        controls.addWidget(self.smoothing_label)
        controls.addSpacing(12)
        controls.addWidget(QLabel("x:", self))
        controls.addWidget(self.x_combo)
        controls.addWidget(self.grad_norm_check)
        controls.addWidget(self.loading_label)
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
        state.history_changed.connect(self._on_state_history_changed)
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
        self.loading_label.setVisible(any(map(self._state.history_loading, self._job_ids)))
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
                curve.smooth_pyramid.reset()
                curve.view_key = None
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
        self._x_extent = None
        self._t0.clear()
        self.plot.getPlotItem().setLabel(
            "bottom", X_TITLES[mode], units="tok" if mode is XAxisMode.TOKENS else None
        )
        index = self.x_combo.findData(mode.value)
        if self.x_combo.currentIndex() != index:
            self.x_combo.blockSignals(True)
            self.x_combo.setCurrentIndex(index)
            self.x_combo.blockSignals(False)
        for curve in self._curves.values():
            curve.x_cache.clear()
            curve.ready = 0
            curve.reset_x()
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
        self._refresh_view()
        self.redrawn.emit()

    def plotted(
        self, job_id: str, name: str, *, raw: bool = False
    ) -> tuple[FloatArray, FloatArray] | None:
        """The whole (x, y) series a curve shows (smoothed, or `raw`); None if not drawn.

        These are every point the curve stands for; what pyqtgraph is handed to paint (a few
        per pixel column) is `drawn`.
        """
        curve = self._curves.get((job_id, name))
        if curve is None:
            return None
        item = curve.item if not raw else curve.raw_item
        if item is None or not item.isVisible():
            return None
        if not raw and curve.smoothed is not None:
            return curve.x, curve.smoothed
        return curve.x, curve.raw

    def drawn(
        self, job_id: str, name: str, *, raw: bool = False
    ) -> tuple[FloatArray, FloatArray] | None:
        """The (x, y) points handed to pyqtgraph for a curve (smoothed, or `raw`) at the
        current view and width: the min and max of each pixel column's points, in x order;
        None if not drawn."""
        curve = self._curves.get((job_id, name))
        if curve is None:
            return None
        item = curve.item if not raw else curve.raw_item
        if item is None or not item.isVisible():
            return None
        x, y = item.getOriginalDataset()
        if x is None or y is None:
            return np.empty(0), np.empty(0)
        return x, y

    def export_png(self, path: str | Path, width: int = 1600) -> Path:
        """Save the plot as a PNG `width` pixels wide; returns the path written."""
        self.redraw()
        return write_png(self.plot.getPlotItem(), path, width)

    def export_csv(self, path: str | Path) -> Path:
        """Save what is plotted as a wide CSV: one row per step, columns per job and series.

        Columns: `step`, then for each job `<name>/<x>` when the x axis is not the step,
        `<name>/<series>` for every plotted series and `<name>/<series>_smoothed` for the
        smoothed ones. A cell is empty where a series has no point at that step.
        """
        self.redraw()
        columns: list[CsvColumn] = []
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
                if curve.smoothed is not None:
                    columns.append((f"{label}/{name}_smoothed", steps, curve.smoothed))
        return write_wide_csv(path, columns)

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

    def _update_curve(self, curve: Curve, series: MetricSeries) -> None:
        """Take in the series' new points: x, smoothing, pyramids, x index (O(new points))."""
        n = len(series)
        tokens = self._state.series(curve.job_id, "tokens_seen")
        rewrites = (series.rewrites, 0 if tokens is None else tokens.rewrites)
        # Cleared and reloaded, or steps logged again by a resume: the caches hold old points.
        if curve.series is not series or curve.ready > n or curve.rewrites != rewrites:
            curve.reset()
            curve.series = series
            curve.rewrites = rewrites
        values = series.value
        # The pyramids index the whole series; only x waits for tokens (see _extend_x).
        curve.raw_pyramid.update(values)
        smoothed: FloatArray | None = None
        if curve.smoother is not None and self._smoothing > 0:
            smoothed = curve.smoother.update(values)
            curve.smooth_pyramid.update(smoothed)
        if self._x_mode is XAxisMode.STEP:
            x = series.step
            curve.ready = n
        else:
            self._extend_x(curve, series)
            x = curve.x_cache.view()
        ready = curve.ready
        curve.x = x[:ready]
        curve.raw = values[:ready]
        curve.smoothed = None if smoothed is None else smoothed[:ready]
        curve.x_index.update(curve.x)

    def _refresh_view(self) -> None:
        """Hand every curve the points of the visible x range that its width can show."""
        vb = self.plot.getPlotItem().vb
        # A hidden chart has no real width yet (export, tests): assume a common one.
        pixels = int(vb.width()) if self.plot.isVisible() else 0
        pixels = pixels if pixels > 0 else _FALLBACK_WIDTH_PX
        extents = [c.x_index.bounds for c in self._curves.values()]
        known = [e for e in extents if e is not None]
        if not known:
            return
        lo, hi = min(e[0] for e in known), max(e[1] for e in known)
        # What auto-range (and "view all") will show: the data and room to grow.
        self._x_extent = follow_extent(self._x_extent, lo, hi)
        for curve in self._curves.values():
            for item in (curve.item, curve.raw_item):
                if item is not None:
                    item.full_x_bounds = self._x_extent
        if vb.state["autoRange"][0] is False:  # zoomed or panned by hand
            lo, hi = (float(v) for v in vb.viewRange()[0])
        for curve in self._curves.values():
            self._draw_curve(curve, lo, hi, pixels)

    def _draw_curve(self, curve: Curve, lo: float, hi: float, pixels: int) -> None:
        ranges = curve.x_index.ranges(lo, hi)
        smooth = curve.smoothed is not None
        key = (curve.ready, len(curve.raw_pyramid), smooth, tuple(ranges), pixels)
        if key == curve.view_key:
            return
        curve.view_key = key
        y = curve.smoothed if curve.smoothed is not None else curve.raw
        pyramid = curve.smooth_pyramid if smooth else curve.raw_pyramid
        index = pyramid.indices(ranges, pixels)
        if curve.x_index.nonfinite:
            index = index[np.isfinite(curve.x[index])]
        if curve.name == "eval_loss":
            # Markers only while they can be told apart.
            symbol = "o" if index.shape[0] * _SYMBOL_SPACING_PX <= pixels else None
            if curve.item.opts["symbol"] != symbol:
                curve.item.setSymbol(symbol)
        if curve.dense_pen is not None and curve.pen is not None:
            pen = curve.dense_pen if index.shape[0] * _DENSE_SPACING_PX > pixels else curve.pen
            if curve.item.opts["pen"].widthF() != pen.widthF():  # setPen copies the pen
                curve.item.setPen(pen)
        curve.item.setData(curve.x[index], y[index])
        if curve.raw_item is not None:
            if smooth:
                raw_index = curve.raw_pyramid.indices(ranges, pixels)
                if curve.x_index.nonfinite:
                    raw_index = raw_index[np.isfinite(curve.x[raw_index])]
                curve.raw_item.setData(curve.x[raw_index], curve.raw[raw_index])
            curve.raw_item.setVisible(smooth)

    def _extend_x(self, curve: Curve, series: MetricSeries) -> None:
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

    def _make_curve(self, job_id: str, name: str) -> Curve:
        color = self._colors.get(job_id, JOB_COLORS[0])
        job = self._state.job(job_id)
        label = f"{job.name if job is not None else job_id} · {_LABELS.get(name, name)}"
        plot_item = self.plot.getPlotItem()
        raw_item: DecimatedItem | None = None
        smoother: EmaSmoother | None = None
        if name == "eval_loss":
            pen = pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine)
            item = DecimatedItem(
                pen=pen, symbol="o", symbolSize=5, symbolBrush=color, symbolPen=None, name=label
            )
        elif name == "learning_rate":
            item = DecimatedItem(
                pen=pg.mkPen(color, width=1.5, style=Qt.PenStyle.DotLine), name=label
            )
            item.from_zero = True  # a schedule: its axis starts at zero
        else:
            style = Qt.PenStyle.SolidLine if name == "loss" else Qt.PenStyle.DashDotLine
            faint = pg.mkColor(color)
            faint.setAlpha(_RAW_ALPHA)
            raw_item = DecimatedItem(pen=pg.mkPen(faint, width=1, style=style))
            item = DecimatedItem(pen=pg.mkPen(color, width=2, style=style), name=label)
            smoother = EmaSmoother(self._smoothing if self._smoothing < 1 else 0.99)
        for plotted in (raw_item, item):
            if plotted is None:
                continue
            if name == "learning_rate":
                self.lr_view.addItem(plotted)
            else:
                plot_item.addItem(plotted)  # a named item joins the legend here
        if name == "learning_rate":
            self.legend.addItem(item, label)
        curve = Curve(job_id, name, item, raw_item, smoother)
        pen = item.opts["pen"]
        if pen.style() != Qt.PenStyle.SolidLine:
            curve.pen = pen
            curve.dense_pen = QPen(pen)
            curve.dense_pen.setWidthF(1.0)
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
        self._refresh_view()  # more or fewer pixel columns

    def _on_main_view_x_range_changed(self) -> None:
        self._refresh_view()  # zoomed or panned: other points are in view

    def _on_state_metrics_appended(self, job_id: str) -> None:
        if job_id in self._job_ids:
            self._dirty_jobs.add(job_id)
            self._schedule()

    def _on_state_history_changed(self, job_id: str) -> None:
        if job_id in self._job_ids:
            self.loading_label.setVisible(any(map(self._state.history_loading, self._job_ids)))
            if not self._state.history_loading(job_id):  # just clicked: draw it now
                self._dirty_jobs.add(job_id)
                self.redraw()

    def _on_state_row_removed(self, _row: int) -> None:
        gone = [job_id for job_id in self._job_ids if self._state.job(job_id) is None]
        if gone:
            self.set_job_ids([j for j in self._job_ids if j not in gone])

    def _on_smoothing_slider_value_changed(self, value: int) -> None:
        self.set_smoothing(value / 100.0)

    def _on_x_combo_current_index_changed(self, index: int) -> None:
        self.set_x_axis_mode(XAxisMode(self.x_combo.itemData(index)))
