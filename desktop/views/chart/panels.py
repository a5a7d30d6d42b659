"""The chart's panels: one plot per kind of metric, stacked and sharing the x axis.

Each metric kind has its own y scale, so a grad norm of 40 no longer squashes a loss of 0.8,
and a learning rate has its own axis (linear from zero, or logarithmic). The panels and the
legend live in one pyqtgraph layout: the legend takes its own row above the plots, so it never
covers a curve, and a PNG of the layout holds panels and legend alike. A panel with nothing to
show (no throughput logged, no GPU sampled, grad norm switched off) is hidden and gives its
height to the others.

Series are read by name: a metric the trainer starts to log later (trained tokens per second,
peak GPU memory) appears in its panel without a change here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPen
from PySide6.QtWidgets import QGraphicsScene, QWidget

from desktop.views.chart.curves import ChartAxisItem, Curve, DecimatedItem, TimeAxisItem
from desktop.views.chart.smoothing import EmaSmoother

__all__ = ["PANELS", "SERIES_PANEL", "SMOOTHED_SERIES", "ChartPanels", "Panel", "PanelSpec"]


@dataclass(frozen=True)
class PanelSpec:
    """What one panel shows: series on its left axis and, on another scale, its right."""

    key: str
    title: str
    left: tuple[str, ...]
    right: tuple[str, ...] = ()
    right_title: str = ""
    stretch: int = 1


PANELS: tuple[PanelSpec, ...] = (
    PanelSpec("loss", "loss", ("loss", "eval_loss"), stretch=3),
    PanelSpec("lr", "lr", ("learning_rate",)),
    PanelSpec("grad_norm", "grad norm", ("grad_norm",)),
    PanelSpec(
        "throughput",
        "tokens/s",
        ("train_tokens_per_second",),
        ("samples_per_second",),
        "samples/s",
    ),
    PanelSpec(
        "gpu", "peak GPU memory (MB)", ("peak_gpu_memory_mb",), ("gpu_utilization",), "GPU util (%)"
    ),
)
"""The panels, top to bottom. Throughput and GPU series are whatever the store holds under
these names: `train_tokens_per_second` and `peak_gpu_memory_mb` (on CUDA) come from the
trainer's metric events; nothing logs `gpu_utilization` yet, so that axis stays empty."""

SERIES_PANEL: dict[str, tuple[str, bool]] = {
    name: (spec.key, side == "right")
    for spec in PANELS
    for side, names in (("left", spec.left), ("right", spec.right))
    for name in names
}
"""Series name -> (panel key, on the right axis)."""

SMOOTHED_SERIES: tuple[str, ...] = (
    "loss",
    "grad_norm",
    "train_tokens_per_second",
    "samples_per_second",
)
"""Series drawn smoothed with the raw curve faintly behind. eval_loss is sparse and
learning_rate is a schedule: both are drawn as they are, as are GPU samples."""

_RAW_ALPHA = 60
"""Opacity of the raw curve drawn faintly behind a smoothed one."""
_AXIS_WIDTH_PX = 58
_OPEN_ROW_PX = 100_000.0
_LEGEND_COLUMN_PX = 190
"""About the width one legend entry takes: the legend gets as many columns as fit."""


class Panel:
    """One stacked plot: a PlotItem with its own x axis item, and a right-axis ViewBox when
    the panel has right-hand series."""

    def __init__(self, spec: PanelSpec) -> None:
        self.spec = spec
        self.x_axis = TimeAxisItem()
        self.plot = pg.PlotItem(
            axisItems={
                "bottom": self.x_axis,
                "left": ChartAxisItem("left"),
                "right": ChartAxisItem("right"),
            }
        )
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setLabel("left", spec.title)
        self.plot.setMenuEnabled(False)  # one context menu for the chart, not one per panel
        self.plot.getAxis("left").setWidth(_AXIS_WIDTH_PX)  # the panels' plots line up
        for side in ("left", "bottom", "right"):
            # Major and minor ticks and grid lines, not pyqtgraph's third level at a tenth of
            # the major interval: it doubles the lines an axis draws, and an axis regenerated
            # when its range moves cost ~2 ms with it, ~1.5 without (bench/chart.py).
            self.plot.getAxis(side).setStyle(maxTickLevel=1)
        self.right_view: pg.ViewBox | None = None
        # Every panel has a right axis of one width, with values only where it has series:
        # x-linked views of different widths show different x ranges, and a narrower one
        # would hide a finished run's last steps under its axis.
        self.plot.getAxis("right").setWidth(_AXIS_WIDTH_PX)
        if not spec.right:
            # A frame only: no values, no ticks, and unlinked from the view so that a moving
            # range does not draw it again.
            self.plot.getAxis("right").setStyle(showValues=False, tickLength=0)
            self.plot.getAxis("right").unlinkFromView()
        if spec.right:
            self.right_view = pg.ViewBox()
            self.plot.setLabel("right", spec.right_title)
            self.plot.getAxis("right").linkToView(self.right_view)
            self.right_view.setXLink(self.plot)
            self.plot.vb.sigResized.connect(self._on_view_resized)

    def attach_right_view(self) -> None:
        """Put the right-axis view into the scene (once the plot is in one)."""
        if self.right_view is not None and self.right_view.scene() is None:
            self.plot.scene().addItem(self.right_view)

    def set_shown(self, shown: bool) -> None:
        """Show or hide the panel (with its right-axis view)."""
        self.plot.setVisible(shown)
        if shown:  # an axis measured while hidden took no width: measure it again
            self.plot.getAxis("left").setWidth(_AXIS_WIDTH_PX)
            self.plot.getAxis("right").setWidth(_AXIS_WIDTH_PX)
        if self.right_view is not None:
            self.right_view.setVisible(shown)

    def _on_view_resized(self) -> None:
        assert self.right_view is not None
        self.right_view.setGeometry(self.plot.vb.sceneBoundingRect())
        self.right_view.linkedViewChanged(self.plot.vb, self.right_view.XAxis)


class ChartPanels(pg.GraphicsLayoutWidget):  # type: ignore[misc]
    """The legend row and the stacked panels, x-linked to the loss panel.

    `getPlotItem()` is the loss panel's plot, the one that leads the x range (auto-range,
    zoom and pan of any panel move them all).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # Curves change shape every frame; Qt's BSP index of the scene's items would be
        # updated for each (its docs advise no index for such scenes): ~1 ms a frame less
        # with a few hundred items, which a linear search finds as fast (bench/chart.py).
        self.scene().setItemIndexMethod(QGraphicsScene.ItemIndexMethod.NoIndex)
        self.ci.setContentsMargins(2, 2, 2, 2)
        self.ci.setSpacing(2)
        self.legend = pg.LegendItem(labelTextSize="8pt", verSpacing=-4, colCount=4)
        self.ci.addItem(self.legend, row=0, col=0)
        self.panels: dict[str, Panel] = {}
        for row, spec in enumerate(PANELS, start=1):
            panel = Panel(spec)
            self.ci.addItem(panel.plot, row=row, col=0)
            self.ci.layout.setRowStretchFactor(row, spec.stretch)
            panel.attach_right_view()
            if spec.key != "loss":
                panel.plot.setXLink(self.panels["loss"].plot)
            self.panels[spec.key] = panel
        self._shown: tuple[str, ...] = ()
        self.set_shown_panels(("loss",))

    def getPlotItem(self) -> pg.PlotItem:
        """The loss panel's plot."""
        return self.panels["loss"].plot

    @property
    def shown_panels(self) -> tuple[str, ...]:
        """The keys of the panels shown, top to bottom."""
        return self._shown

    def set_shown_panels(self, keys: Iterable[str]) -> None:
        """Show these panels (the loss panel always); x tick labels on the lowest only."""
        wanted = set(keys) | {"loss"}
        shown = tuple(spec.key for spec in PANELS if spec.key in wanted)
        if shown == self._shown:
            return
        self._shown = shown
        for row, (key, panel) in enumerate(self.panels.items(), start=1):
            panel.set_shown(key in shown)
            # A hidden plot still takes its row's share of the height unless the row is shut.
            self.ci.layout.setRowStretchFactor(row, panel.spec.stretch if key in shown else 0)
            self.ci.layout.setRowMaximumHeight(row, _OPEN_ROW_PX if key in shown else 0)
            last = key == shown[-1]
            panel.plot.getAxis("bottom").setStyle(showValues=last)
            panel.plot.getAxis("bottom").showLabel(last)
        self.ci.layout.invalidate()

    def show_sides(self, names: Iterable[str]) -> None:
        """Show a panel's left or right axis values only while it has series on that side: an
        axis with nothing on it would show made-up ticks from 0 to 1."""
        used: dict[tuple[str, bool], bool] = {}
        for name in names:
            used[SERIES_PANEL[name]] = True
        for key, panel in self.panels.items():
            if key == "loss" or not panel.spec.right:
                continue
            for side, right in (("left", False), ("right", True)):
                axis = panel.plot.getAxis(side)
                on = used.get((key, right), False)
                if axis.style["showValues"] != on:
                    axis.setStyle(showValues=on)
                    axis.showLabel(on)

    def add_curve(
        self, job_id: str, name: str, color: str, label: str, *, smoothing: float, lr_log: bool
    ) -> Curve:
        """A new curve for series `name` of a job, in its panel and in the legend.

        Line styles tell a panel's series apart: eval loss dashed with markers, right-axis
        series dashed; a smoothed series gets its raw curve faintly behind.
        """
        panel_key, right = SERIES_PANEL[name]
        panel = self.panels[panel_key]
        raw_item: DecimatedItem | None = None
        smoother: EmaSmoother | None = None
        style = Qt.PenStyle.DashLine if right else Qt.PenStyle.SolidLine
        if name == "eval_loss":
            pen = pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine)
            item = DecimatedItem(
                pen=pen, symbol="o", symbolSize=5, symbolBrush=color, symbolPen=None, name=label
            )
        elif name not in SMOOTHED_SERIES:
            item = DecimatedItem(pen=pg.mkPen(color, width=1, style=style), name=label)
            # A schedule or a use: the axis starts at zero, unless the lr is on a log axis.
            item.from_zero = name != "learning_rate" or not lr_log
        else:
            faint = pg.mkColor(color)
            faint.setAlpha(_RAW_ALPHA)
            raw_item = DecimatedItem(pen=pg.mkPen(faint, width=1, style=style))
            # Two pixels wide only on the loss panel, and only while its points are sparse:
            # Qt strokes a wide line of a few thousand points in some 2-4 ms, a one-pixel one
            # in a fraction of that (bench/chart.py); see `Curve.dense_pen`.
            width = 2 if panel_key == "loss" else 1
            item = DecimatedItem(pen=pg.mkPen(color, width=width, style=style), name=label)
            smoother = EmaSmoother(min(smoothing, 0.99))
        for plotted in (raw_item, item):
            if plotted is None:
                continue
            if right and panel.right_view is not None:
                panel.right_view.addItem(plotted)
            else:
                panel.plot.addItem(plotted)  # takes the panel's log mode
        self.legend.addItem(item, label)
        self._fit_legend()
        curve = Curve(job_id, name, item, raw_item, smoother)
        pen = item.opts["pen"]
        if pen.style() != Qt.PenStyle.SolidLine or pen.widthF() > 1.0:
            curve.pen = pen
            curve.dense_pen = QPen(pen)
            curve.dense_pen.setWidthF(1.0)
        return curve

    def remove_curve(self, curve: Curve) -> None:
        """Take a curve off its panel and out of the legend."""
        panel_key, right = SERIES_PANEL[curve.name]
        panel = self.panels[panel_key]
        for item in (curve.item, curve.raw_item):
            if item is None:
                continue
            self.legend.removeItem(item)
            self._fit_legend()
            if right and panel.right_view is not None:
                panel.right_view.removeItem(item)
            else:
                panel.plot.removeItem(item)

    def _fit_legend(self) -> None:
        """Give the legend's row the legend's height: the plots start below it."""
        self.legend.updateSize()
        height = max(1.0, float(self.legend.height()))
        if height != self.ci.layout.rowMaximumHeight(0):
            self.ci.layout.setRowFixedHeight(0, height)
            self.ci.layout.activate()  # now, not at the next event: the plots move down

    def set_dark(self, dark: bool) -> None:
        """Dark or light background, axes, grid and legend text."""
        foreground = "#d0d0d0" if dark else "#202020"
        self.setBackground("#1e1e1e" if dark else "w")
        for panel in self.panels.values():
            for name in ("left", "bottom", "right"):
                axis = panel.plot.getAxis(name)
                axis.setPen(foreground)
                axis.setTextPen(foreground)
        self.legend.setLabelTextColor(foreground)
        for _sample, label in self.legend.items:
            label.setText(label.text)  # re-rendered in the new colour

    def set_x_title(self, title: str, units: str | None = None) -> None:
        """Title the x axes (shown under the lowest panel only)."""
        for key, panel in self.panels.items():
            panel.plot.setLabel("bottom", title, units=units)
            panel.plot.getAxis("bottom").showLabel(key == self._shown[-1])

    def resizeEvent(self, ev: object) -> None:
        """Give the legend as many columns as the width holds."""
        columns = max(1, self.width() // _LEGEND_COLUMN_PX)
        legend = getattr(self, "legend", None)  # pyqtgraph calls this from its __init__
        if legend is not None and columns != legend.columnCount:
            legend.setColumnCount(columns)
            self._fit_legend()
        super().resizeEvent(ev)
