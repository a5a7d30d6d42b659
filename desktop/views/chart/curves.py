"""The chart's axis and curve bookkeeping, apart from the widget.

`Curve` holds one series of one job with its incremental caches (x values, smoothing, a min/max
pyramid per curve); `DecimatedItem` is the pyqtgraph item that holds only the points in view
but reports the whole series' extent; `TimeAxisItem` labels an x axis of seconds as a clock;
`follow_extent` / `nice_extent` round the ranges so a growing run does not move the axes on
every frame. `LossChart` (widget.py) owns the curves and draws them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters
from pyqtgraph.graphicsItems.PlotDataItem import PlotDataset
from PySide6.QtGui import QPen

from desktop.views.chart.downsample import MinMaxPyramid, XIndex
from desktop.views.chart.smoothing import EmaSmoother, FloatArray, GrowableArray
from desktop.views.state import MetricSeries

__all__ = [
    "X_TITLES",
    "ChartAxisItem",
    "Curve",
    "DecimatedItem",
    "TimeAxisItem",
    "XAxisMode",
    "follow_extent",
    "format_clock",
    "hold_extent",
    "nice_extent",
    "nice_unit",
]


class XAxisMode(StrEnum):
    """What the x axis shows."""

    STEP = "step"
    TOKENS = "tokens"
    TIME = "time"


X_TITLES = {
    XAxisMode.STEP: "Step",
    XAxisMode.TOKENS: "Tokens seen",
    XAxisMode.TIME: "Wall time",
}
_TIME_SPACINGS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def format_clock(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}" if hours else f"{sign}{minutes}:{secs:02d}"


class ChartAxisItem(pg.AxisItem):  # type: ignore[misc]
    """An axis that lays its title out again only when the title's text changed.

    pyqtgraph sets the title's HTML anew (a text layout) on every change of the axis' range,
    on each axis of each panel, shown or not: a tenth of a millisecond or more each, a
    millisecond or two whenever a live run moves the ranges (bench/chart.py).
    """

    _title_html: str | None = None

    def _updateLabel(self) -> None:
        html = self.labelString()
        if html != self._title_html:
            self._title_html = html
            super()._updateLabel()
            return
        self.picture = None  # what the range change needs: the ticks drawn again
        self.update()


class TimeAxisItem(ChartAxisItem):
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
            return [format_clock(v * scale) for v in values]
        result: list[str] = super().tickStrings(values, scale, spacing)
        return result


def nice_unit(span: float) -> float:
    """A quarter of the power of ten at or below `span` (span > 0)."""
    return 10.0 ** math.floor(math.log10(span)) / 4.0


def nice_extent(lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] widened outwards to multiples of a quarter of a power of ten below the span.

    A live chart that follows its data would otherwise change its range, and so regenerate
    its axes and grid, on every frame; rounded out, the range moves only every 1/40 to 1/4
    of its span.
    """
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return lo, hi
    unit = nice_unit(span)
    return math.floor(lo / unit) * unit, math.ceil(hi / unit) * unit


_FOLLOW_HEADROOM = 0.25
"""While following a growing run, the x range reaches this share of the span past the data,
so it (and the axis and grid with it) changes about ten times per tenfold growth instead of on
every frame."""


def follow_extent(shown: tuple[float, float] | None, lo: float, hi: float) -> tuple[float, float]:
    """The x extent to show for data spanning [lo, hi], given the extent shown now."""
    if (
        shown is not None
        and shown[0] == lo
        and hi <= shown[1]
        and hi - lo >= 0.5 * (shown[1] - shown[0])  # not a much shorter series
    ):
        return shown
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return lo, hi
    end = hi + _FOLLOW_HEADROOM * span
    unit = nice_unit(span)
    return lo, lo + math.ceil((end - lo) / unit) * unit


_HOLD_HEADROOM = 0.1
"""When a live series leaves the y range it is shown in, the new range reaches this share of
the data's span past it on that side."""
_HOLD_MIN_COVER = 0.5
"""A held y range is given up (and fitted anew) once the data covers less than this share."""


def hold_extent(shown: tuple[float, float] | None, lo: float, hi: float) -> tuple[float, float]:
    """The y extent to report for data spanning [lo, hi], given the one reported before.

    While a run is live its y extent keeps the extent it had as long as the data stays inside
    and fills at least half of it; when the data leaves it, the new extent has some headroom on
    the side the data left by, rounded out by `nice_extent`. A falling loss then moves its
    axis (a regenerated axis and grid, some milliseconds) about ten times over a run rather
    than every few frames; `nice_extent` alone, at a fortieth of the span, moved it every few
    frames with noisy data (bench/chart.py).
    """
    if shown is not None and shown[0] <= lo and hi <= shown[1]:
        if hi - lo >= _HOLD_MIN_COVER * (shown[1] - shown[0]):
            return shown
        return nice_extent(lo, hi)
    span = hi - lo
    if shown is None or not (math.isfinite(span) and span > 0):
        return nice_extent(lo, hi)
    below = lo - _HOLD_HEADROOM * span if lo < shown[0] else lo
    above = hi + _HOLD_HEADROOM * span if hi > shown[1] else hi
    return nice_extent(below, above)


class DecimatedItem(pg.PlotDataItem):  # type: ignore[misc]
    """A PlotDataItem given only the points in view, that reports the whole series' x extent.

    The ViewBox asks items for their bounds when it auto-ranges; this item holds a few
    thousand points of a series that may have millions, so its x bounds come from the chart's
    index of the whole series (set as `full_x_bounds`, with room for growth: see
    `follow_extent`), and its y bounds from the points it holds, which include every peak in
    view, rounded out (`nice_extent`; from zero when `from_zero`, as for a learning rate) so
    that following a growing series does not change the range on every frame.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(connect="all", skipFiniteCheck=True, **kwargs)
        self.full_x_bounds: tuple[float, float] | None = None
        self.from_zero = False
        self._hold_y = True
        self._held_y: tuple[float, float] | None = None

    @property
    def hold_y(self) -> bool:
        """Whether the y extent is held while the data stays in it (`hold_extent`), as while
        a run is live; off, it fits the data (rounded out), as once every shown run ended."""
        return self._hold_y

    @hold_y.setter
    def hold_y(self, hold: bool) -> None:
        if hold != self._hold_y:
            self._hold_y = hold
            self._held_y = None
            self.informViewBoundsChanged()  # the view auto-ranges again with the new extent

    def set_points(self, x: FloatArray, y: FloatArray) -> None:
        """Show these points (the drawn view of the series), with the item's style as is.

        `setData` hands the curve every style option again (pens rebuilt, a few tenths of a
        millisecond per curve per frame); when only the points changed and nothing maps them
        (no log axis, no markers), they go to the curve alone, with the item's dataset kept
        as `setData` keeps it (`getOriginalDataset`, `dataBounds`).
        """
        mapped = any(self.opts["logMode"]) or self.opts["symbol"] is not None
        if mapped or x.shape[0] == 0 or self.curve.xData is None or self.opts["pen"] is None:
            self.setData(x, y)
            return
        self._dataset = PlotDataset(x, y)
        self._datasetMapped = None
        self._datasetDisplay = None
        self._adsLastValue = 1
        self.curve.setData(x=x, y=y)
        self.curve.show()
        self.informViewBoundsChanged()
        self.sigPlotChanged.emit(self)

    def pixelPadding(self) -> int:
        """No padding in pixels beyond the data: the view's own padding leaves room for a pen
        or a marker. A padding in pixels is a different amount of data at every zoom, so a
        range fitted with it moves again on the next frame (a second axis regeneration)."""
        return 0

    def dataBounds(
        self, ax: int, frac: float = 1.0, orthoRange: tuple[float, float] | None = None
    ) -> tuple[float, float] | tuple[None, None]:
        """The whole series' x extent (ax 0); the held points' y extent (ax 1)."""
        if ax == 0:
            if self.full_x_bounds is None or not self.isVisible():
                return (None, None)
            return self.full_x_bounds
        lo, hi = super().dataBounds(ax, frac, orthoRange)
        if lo is None or hi is None:
            return (None, None)
        if self.from_zero:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        self._held_y = hold_extent(self._held_y, lo, hi) if self.hold_y else nice_extent(lo, hi)
        return self._held_y


@dataclass
class Curve:
    """One series of one job on the chart, with its incremental caches."""

    job_id: str
    name: str
    item: DecimatedItem
    raw_item: DecimatedItem | None
    smoother: EmaSmoother | None
    series: MetricSeries | None = None
    """The AppState series the caches were built from (a reload replaces it)."""
    rewrites: tuple[int, int] = (0, 0)
    """The `rewrites` of the series and of the job's tokens_seen series the caches were built
    from: steps logged again (a resume) replace points, and the caches start over."""
    x_cache: GrowableArray = field(default_factory=GrowableArray)
    ready: int = 0
    """Points of the series that have an x value (all in step mode)."""
    x_index: XIndex = field(default_factory=XIndex)
    raw_pyramid: MinMaxPyramid = field(default_factory=MinMaxPyramid)
    smooth_pyramid: MinMaxPyramid = field(default_factory=MinMaxPyramid)
    x: FloatArray = field(default_factory=lambda: np.empty(0))
    raw: FloatArray = field(default_factory=lambda: np.empty(0))
    smoothed: FloatArray | None = None
    """The whole curve: x, raw values and (when smoothing) smoothed values, `ready` long."""
    pen: QPen | None = None
    dense_pen: QPen | None = None
    """For patterned or wide curves: the pen, and the one-pixel pen used while points are
    dense (see `LossChart._draw_curve`)."""
    view_key: tuple[Any, ...] | None = None
    """What the drawn points were computed from; equal key, nothing to recompute."""

    def take_in(
        self,
        series: MetricSeries,
        tokens: MetricSeries | None,
        mode: XAxisMode,
        smoothing: float,
        t0: Callable[[], float],
    ) -> None:
        """Take in the series' new points: x, smoothing, pyramids, x index (O(new points)).

        `tokens` is the job's tokens_seen series (the x of tokens mode); `t0` gives the job's
        start time (the zero of wall-time mode).
        """
        n = len(series)
        rewrites = (series.rewrites, 0 if tokens is None else tokens.rewrites)
        # Cleared and reloaded, or steps logged again by a resume: the caches hold old points.
        if self.series is not series or self.ready > n or self.rewrites != rewrites:
            self.reset()
            self.series = series
            self.rewrites = rewrites
        values = series.value
        # The pyramids index the whole series; only x waits for tokens (see _extend_x).
        self.raw_pyramid.update(values)
        smoothed: FloatArray | None = None
        if self.smoother is not None and smoothing > 0:
            smoothed = self.smoother.update(values)
            self.smooth_pyramid.update(smoothed)
        if mode is XAxisMode.STEP:
            x = series.step
            self.ready = n
        else:
            self._extend_x(series, tokens, mode, t0)
            x = self.x_cache.view()
        ready = self.ready
        self.x = x[:ready]
        self.raw = values[:ready]
        self.smoothed = None if smoothed is None else smoothed[:ready]
        self.x_index.update(self.x)

    def _extend_x(
        self,
        series: MetricSeries,
        tokens: MetricSeries | None,
        mode: XAxisMode,
        t0: Callable[[], float],
    ) -> None:
        done = self.ready
        steps = series.step
        if mode is XAxisMode.TIME:
            self.x_cache.extend(series.time[done:] - t0())
            self.ready = len(series)
            return
        if tokens is None or len(tokens) == 0:
            return
        # Map steps to tokens; points past the last known token count wait for it.
        last_known = tokens.step[-1]
        upto = done + int(np.searchsorted(steps[done:], last_known, side="right"))
        if upto > done:
            self.x_cache.extend(np.interp(steps[done:upto], tokens.step, tokens.value))
            self.ready = upto

    def reset(self) -> None:
        self.x_cache.clear()
        self.ready = 0
        self.reset_x()
        self.raw_pyramid.reset()
        self.smooth_pyramid.reset()
        if self.smoother is not None:
            self.smoother.reset()

    def reset_x(self) -> None:
        self.x_index.reset()
        self.view_key = None
