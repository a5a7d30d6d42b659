"""The live chart of the selected jobs, overlaid, with TensorBoard-style smoothing: loss and
eval loss, learning rate (linear or log), grad norm, throughput and GPU use, each kind in its
own panel (desktop/views/chart/panels.py) with the legend in a row of its own above them.

Hover a panel for every visible series' stored point at the cursor's step (readout.py); click
a legend entry to hide that series (it stays hidden while the chart refreshes, and across
selections); once every shown run has ended, the x axis fits the data. PNG and CSV buttons save
what is shown.

This module is over 600 lines because it is the one owner of a curve's life (made, fed, drawn,
hidden, dropped) and of the redraw schedule; what stands alone lives beside it: panels.py (the
plots and legend), controls.py, curves.py (per-curve caches), readout.py and export.py.

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
from PySide6.QtCore import QPointF, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from desktop.views.chart.controls import ChartControls
from desktop.views.chart.curves import (
    X_TITLES,
    Curve,
    TimeAxisItem,
    XAxisMode,
    follow_extent,
)
from desktop.views.chart.export import (
    curve_columns,
    save_with_dialog,
    write_png,
    write_wide_csv,
)
from desktop.views.chart.panels import SERIES_PANEL, SMOOTHED_SERIES, ChartPanels
from desktop.views.chart.readout import ReadoutEntry, format_readout, read_out
from desktop.views.chart.smoothing import FloatArray
from desktop.views.state import AppState

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

_LABELS = {
    "loss": "loss",
    "eval_loss": "eval loss",
    "learning_rate": "lr",
    "grad_norm": "grad norm",
    "train_tokens_per_second": "tokens/s",
    "samples_per_second": "samples/s",
    "peak_gpu_memory_mb": "peak GPU MB",
    "gpu_utilization": "GPU %",
}
_THROUGHPUT_SERIES = ("train_tokens_per_second", "samples_per_second")
_GPU_SERIES = ("peak_gpu_memory_mb", "gpu_utilization")
_SYMBOL_SPACING_PX = 6
"""eval loss gets markers only while its drawn points are at least this far apart on average."""
_DENSE_SPACING_PX = 4
"""Dashed and dotted curves whose drawn points are closer than this on average (a min/max
envelope) are drawn one pixel wide: Qt strokes a wider patterned zigzag of thousands of points
some 50 times slower (~20 ms) than a one-pixel one (~0.3 ms), which keeps its pattern."""
_FALLBACK_WIDTH_PX = 1000
"""Pixel columns assumed while the plot is hidden or not laid out."""


class LossChart(QWidget):
    """Loss, eval loss, learning rate, (on demand) grad norm, throughput and GPU use of one or
    more jobs, in stacked panels.

    By default it shows the jobs selected in AppState (`follow_selection`); `set_job_ids`
    shows others. Each job has one colour; line styles tell a panel's series apart (loss
    solid, eval loss dashed with dots, right-axis series dashed).

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
        self._show_throughput = True
        self._lr_log = False
        self._hidden: set[tuple[str, str]] = set()
        self._t0: dict[str, float] = {}
        self._x_extent: tuple[float, float] | None = None

        # No pyqtgraph downsampling or clip-to-view: both scan the whole series every frame.
        # The curves are handed only what is in view, min/max per pixel column (_draw_curve).
        self.plot = ChartPanels(self)
        self.plot.set_dark(False)
        self.legend = self.plot.legend
        self.legend.sigSampleClicked.connect(self._on_legend_sample_clicked)
        self._x_axis: TimeAxisItem = self.plot.panels["loss"].x_axis
        self.lr_view: pg.ViewBox = self.plot.panels["lr"].plot.vb
        self.plot.set_x_title(X_TITLES[self._x_mode])
        self._cursor_lines: dict[str, pg.InfiniteLine] = {}
        for key, panel in self.plot.panels.items():
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#888888", width=1))
            line.hide()
            panel.plot.addItem(line, ignoreBounds=True)
            self._cursor_lines[key] = line
        plot_item = self.plot.getPlotItem()
        plot_item.vb.sigResized.connect(self._on_main_view_resized)
        plot_item.vb.sigXRangeChanged.connect(self._on_main_view_x_range_changed)
        self.plot.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)

        controls = ChartControls(self._smoothing, self)
        self.smoothing_slider = controls.smoothing_slider
        self.smoothing_label = controls.smoothing_label
        self.x_combo = controls.x_combo
        self.grad_norm_check = controls.grad_norm_check
        self.throughput_check = controls.throughput_check
        self.lr_log_check = controls.lr_log_check
        self.png_button = controls.png_button
        self.csv_button = controls.csv_button
        self.loading_label = controls.loading_label
        self.smoothing_slider.valueChanged.connect(self._on_smoothing_slider_value_changed)
        self.x_combo.currentIndexChanged.connect(self._on_x_combo_current_index_changed)
        self.grad_norm_check.toggled.connect(self.set_grad_norm_visible)
        self.throughput_check.toggled.connect(self.set_throughput_visible)
        self.lr_log_check.toggled.connect(self.set_lr_log)
        self.png_button.clicked.connect(self._on_png_button_clicked)
        self.csv_button.clicked.connect(self._on_csv_button_clicked)
        self.readout_label = QLabel(self)
        self.readout_label.setTextFormat(Qt.TextFormat.RichText)
        self.readout_label.setWordWrap(True)
        self.readout_label.setToolTip("Every visible series' stored point at the cursor's step")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(controls)
        layout.addWidget(self.plot, 1)
        bottom = QHBoxLayout()
        bottom.setContentsMargins(4, 0, 4, 0)
        bottom.addWidget(self.readout_label, 1)
        bottom.addWidget(self.loading_label)
        layout.addLayout(bottom)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(redraw_interval_ms)
        self._timer.timeout.connect(self.redraw)

        state.metrics_appended.connect(self._on_state_metrics_appended)
        state.row_removed.connect(self._on_state_row_removed)
        state.history_changed.connect(self._on_state_history_changed)
        state.row_changed.connect(self._on_state_row_changed)
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
        for panel in self.plot.panels.values():
            panel.x_axis.mode = mode
        self._x_extent = None
        self._t0.clear()
        self.plot.set_x_title(X_TITLES[mode], units="tok" if mode is XAxisMode.TOKENS else None)
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
    def throughput_visible(self) -> bool:
        """Whether the throughput panel (tokens/s, samples/s) is drawn when there is data."""
        return self._show_throughput

    def set_throughput_visible(self, visible: bool) -> None:
        """Draw the throughput panel (when the runs logged throughput) or not."""
        if visible == self._show_throughput:
            return
        self._show_throughput = visible
        if self.throughput_check.isChecked() != visible:
            self.throughput_check.setChecked(visible)
        if not visible:
            for key in [k for k in self._curves if k[1] in _THROUGHPUT_SERIES]:
                self._drop_curve(key)
        self._dirty_jobs.update(self._job_ids)
        self._schedule()

    @property
    def lr_log(self) -> bool:
        """Whether the learning rate axis is logarithmic."""
        return self._lr_log

    def set_lr_log(self, log: bool) -> None:
        """Show the learning rate on a log axis (a 5e-4 schedule next to a 5e-6 one is no
        longer flat) or on a linear one from zero."""
        if log == self._lr_log:
            return
        self._lr_log = log
        if self.lr_log_check.isChecked() != log:
            self.lr_log_check.setChecked(log)
        panel = self.plot.panels["lr"]
        panel.plot.setLogMode(y=log)
        panel.plot.setLabel("left", "lr (log)" if log else "lr")
        for curve in self._curves.values():
            if curve.name == "learning_rate":
                curve.item.from_zero = not log
                curve.view_key = None
        panel.plot.vb.enableAutoRange(y=True)
        self._schedule()

    @property
    def shown_panels(self) -> tuple[str, ...]:
        """The panels shown, top to bottom (see desktop/views/chart/panels.py)."""
        return self.plot.shown_panels

    def series_hidden(self, job_id: str, name: str) -> bool:
        """Whether this series was hidden (by a click on its legend entry)."""
        return (job_id, name) in self._hidden

    def set_series_hidden(self, job_id: str, name: str, hidden: bool) -> None:
        """Hide or show one series of one job; it stays so until changed back, also while
        the job is not shown."""
        key = (job_id, name)
        if hidden:
            self._hidden.add(key)
        else:
            self._hidden.discard(key)
        curve = self._curves.get(key)
        if curve is not None:
            curve.item.setVisible(not hidden)
            if curve.raw_item is not None:
                curve.raw_item.setVisible(not hidden and curve.smoothed is not None)
            curve.view_key = None
            self._refresh_view()

    def show_readout_at(self, x: float) -> list[ReadoutEntry]:
        """Put the cursor line at `x` (in x-axis units) and read out, for every visible
        series, its stored point nearest `x`; returns what the read-out shows."""
        for key, line in self._cursor_lines.items():
            line.setPos(x)
            line.setVisible(key in self.plot.shown_panels)
        visible = [c for c in self._ordered_curves() if (c.job_id, c.name) not in self._hidden]
        entries = read_out(visible, x, self._label, lambda j: self._colors.get(j, JOB_COLORS[0]))
        self.readout_label.setText(format_readout(entries))
        return entries

    def set_dark(self, dark: bool) -> None:
        """Draw on a dark background (the dark theme) or a white one."""
        self.plot.set_dark(dark)
        for line in self._cursor_lines.values():
            line.setPen(pg.mkPen("#9a9a9a" if dark else "#888888", width=1))

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
        self.plot.set_shown_panels(SERIES_PANEL[c.name][0] for c in self._curves.values())
        self.plot.show_sides(c.name for c in self._curves.values())
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
        """Save the panels and legend as a PNG `width` pixels wide; returns the path written."""
        self.redraw()
        return write_png(self.plot.ci, path, width)

    def export_csv(self, path: str | Path) -> Path:
        """Save what is plotted as a wide CSV: one row per step, columns per job and series.

        Columns: `step`, then for each job `<name>/<x>` when the x axis is not the step,
        `<name>/<series>` for every plotted series and `<name>/<series>_smoothed` for the
        smoothed ones. A cell is empty where a series has no point at that step.
        """
        self.redraw()
        x_title = None if self._x_mode is XAxisMode.STEP else self._x_mode.value
        return write_wide_csv(path, curve_columns(self._ordered_curves(), self._job_name, x_title))

    # -- drawing ------------------------------------------------------------------------------

    def _series_names(self) -> tuple[str, ...]:
        names = ["loss", "eval_loss", "learning_rate"]
        if self._show_grad_norm:
            names.append("grad_norm")
        if self._show_throughput:
            names.extend(_THROUGHPUT_SERIES)
        names.extend(_GPU_SERIES)
        return tuple(names)

    def _job_name(self, job_id: str) -> str:
        job = self._state.job(job_id)
        return job.name if job is not None else job_id

    def _label(self, job_id: str, name: str) -> str:
        return f"{self._job_name(job_id)} · {_LABELS.get(name, name)}"

    def _ordered_curves(self) -> list[Curve]:
        """The curves drawn, job by job in the chart's order, series in panel order."""
        names = self._series_names()
        keys = ((job_id, name) for job_id in self._job_ids for name in names)
        return [curve for key in keys if (curve := self._curves.get(key)) is not None]

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def _update_job(self, job_id: str) -> None:
        for name in self._series_names():
            series = self._state.series(job_id, name)
            if series is None or len(series) == 0:
                continue
            curve = self._curves.get((job_id, name)) or self._make_curve(job_id, name)
            curve.take_in(
                series,
                self._state.series(job_id, "tokens_seen"),
                self._x_mode,
                self._smoothing,
                lambda: self._job_t0(job_id),
            )

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
        # What auto-range (and "view all") will show: the data and room to grow, or, once
        # every shown run has ended, just the data.
        ended = all((job := self._state.job(j)) is None or job.is_final for j in self._job_ids)
        extent = (lo, hi) if ended and hi > lo else follow_extent(self._x_extent, lo, hi)
        moved, self._x_extent = extent != self._x_extent, extent
        for curve in self._curves.values():
            for item in (curve.item, curve.raw_item):
                if item is not None:
                    item.full_x_bounds = self._x_extent
                    item.hold_y = not ended
        if vb.state["autoRange"][0] is False:  # zoomed or panned by hand
            lo, hi = (float(v) for v in vb.viewRange()[0])
        elif moved:
            vb.updateAutoRange()
        for curve in self._curves.values():
            self._draw_curve(curve, lo, hi, pixels)

    def _draw_curve(self, curve: Curve, lo: float, hi: float, pixels: int) -> None:
        ranges = curve.x_index.ranges(lo, hi)
        smooth = curve.smoothed is not None
        key = (curve.ready, len(curve.raw_pyramid), smooth, tuple(ranges), pixels)
        if key == curve.view_key:
            return
        curve.view_key = key
        hidden = (curve.job_id, curve.name) in self._hidden
        if curve.raw_item is not None:
            curve.raw_item.setVisible(smooth and not hidden)
        if hidden:
            curve.view_key = None  # nothing drawn: compute when shown again
            return
        y = curve.smoothed if curve.smoothed is not None else curve.raw
        pyramid = curve.smooth_pyramid if smooth else curve.raw_pyramid
        index = pyramid.indices(ranges, pixels)
        if curve.x_index.nonfinite:
            index = index[np.isfinite(curve.x[index])]
        if self._lr_log and curve.name == "learning_rate":
            index = index[y[index] > 0]  # a log axis has no place for a warmup's zero
        if curve.name == "eval_loss":
            # Markers only while they can be told apart.
            symbol = "o" if index.shape[0] * _SYMBOL_SPACING_PX <= pixels else None
            if curve.item.opts["symbol"] != symbol:
                curve.item.setSymbol(symbol)
        if curve.dense_pen is not None and curve.pen is not None:
            patterned = curve.pen.style() != Qt.PenStyle.SolidLine
            # A solid wide line goes thin once it is a min/max envelope (more points than
            # pixel columns): the vertical strokes of each column fill the band at one pixel
            # as they do at two, and a two-pixel stroke costs Qt ~2 ms a frame more.
            spacing = _DENSE_SPACING_PX if patterned else 1
            pen = curve.dense_pen if index.shape[0] * spacing > pixels else curve.pen
            if curve.item.opts["pen"].widthF() != pen.widthF():  # setPen copies the pen
                curve.item.setPen(pen)
        curve.item.set_points(curve.x[index], y[index])
        if curve.raw_item is not None and smooth:
            raw_index = curve.raw_pyramid.indices(ranges, pixels)
            if curve.x_index.nonfinite:
                raw_index = raw_index[np.isfinite(curve.x[raw_index])]
            curve.raw_item.set_points(curve.x[raw_index], curve.raw[raw_index])

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
        curve = self.plot.add_curve(
            job_id,
            name,
            self._colors.get(job_id, JOB_COLORS[0]),
            self._label(job_id, name),
            smoothing=self._smoothing,
            lr_log=self._lr_log,
        )
        if (job_id, name) in self._hidden:
            curve.item.setVisible(False)
            if curve.raw_item is not None:
                curve.raw_item.setVisible(False)
        self._curves[(job_id, name)] = curve
        return curve

    def _drop_curve(self, key: tuple[str, str]) -> None:
        self.plot.remove_curve(self._curves.pop(key))

    # -- slots --------------------------------------------------------------------------------

    def _on_main_view_resized(self) -> None:
        self._refresh_view()  # more or fewer pixel columns

    def _on_scene_mouse_moved(self, pos: QPointF) -> None:
        for key in self.plot.shown_panels:
            view = self.plot.panels[key].plot.vb
            if view.sceneBoundingRect().contains(pos):
                self.show_readout_at(float(view.mapSceneToView(pos).x()))
                return

    def _on_legend_sample_clicked(self, item: object) -> None:
        # The legend's sample has already flipped the item's visibility: keep it so.
        for key, curve in self._curves.items():
            if curve.item is item:
                self.set_series_hidden(*key, hidden=not curve.item.isVisible())
                return

    def _on_state_row_changed(self, row: int) -> None:
        if self._state.job_at(row).id in self._job_ids:
            self._schedule()  # it may have ended: the x axis then fits the data

    def _on_png_button_clicked(self) -> None:
        save_with_dialog(
            self, "Save chart as PNG", "chart.png", "PNG images (*.png)", self.export_png
        )

    def _on_csv_button_clicked(self) -> None:
        save_with_dialog(
            self, "Save chart data as CSV", "chart.csv", "CSV (*.csv)", self.export_csv
        )

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
