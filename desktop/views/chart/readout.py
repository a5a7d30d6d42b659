"""The chart's hover read-out: every visible series' point at the cursor's step.

The cursor's x (a step, a token count or seconds, as the x axis shows) picks, for each series,
its point nearest that x; the read-out lists that point's step and stored value, so what it says
is what the store holds, not an interpolation or a smoothed value.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from desktop.views.chart.curves import Curve
from desktop.views.chart.smoothing import FloatArray

__all__ = ["ReadoutEntry", "format_readout", "nearest_index", "read_out"]


@dataclass(frozen=True)
class ReadoutEntry:
    """One series' point under the cursor."""

    job_id: str
    name: str
    label: str
    color: str
    step: int
    value: float


def nearest_index(x: FloatArray, at: float, sorted_x: bool = True) -> int | None:
    """The index of the point of `x` nearest `at`; None when `x` has no finite point.

    `sorted_x`: `x` rises and is finite (steps, tokens seen): a binary search. Otherwise (wall
    time may hold a point without a usable time) a scan that skips non-finite values.
    """
    n = int(x.shape[0])
    if n == 0:
        return None
    if sorted_x:
        i = int(np.searchsorted(x, at))
        if i <= 0:
            return 0
        if i >= n:
            return n - 1
        return i if x[i] - at < at - x[i - 1] else i - 1
    distance = np.abs(x - at)
    if not np.isfinite(distance).any():
        return None
    return int(np.nanargmin(np.where(np.isfinite(distance), distance, np.nan)))


def read_out(
    curves: Iterable[Curve],
    x: float,
    label: Callable[[str, str], str],
    color: Callable[[str], str],
) -> list[ReadoutEntry]:
    """For each curve, its stored point nearest `x` (in x-axis units), in the curves' order.

    `label(job_id, name)` and `color(job_id)` give what the legend shows for the curve.
    """
    entries: list[ReadoutEntry] = []
    for curve in curves:
        if curve.series is None:
            continue
        index = nearest_index(curve.x, x, sorted_x=curve.x_index.nonfinite == 0)
        if index is None:
            continue
        entries.append(
            ReadoutEntry(
                job_id=curve.job_id,
                name=curve.name,
                label=label(curve.job_id, curve.name),
                color=color(curve.job_id),
                step=int(curve.series.step[index]),
                value=float(curve.raw[index]),
            )
        )
    return entries


def _format_value(value: float) -> str:
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


def format_readout(entries: list[ReadoutEntry]) -> str:
    """The read-out as rich text: the step, then each series (a series whose nearest point
    is at another step says which)."""
    if not entries:
        return ""
    step = entries[0].step
    parts = [f"<b>step {step}</b>"]
    for entry in entries:
        where = "" if entry.step == step else f" @{entry.step}"
        parts.append(
            f'<span style="color:{entry.color}">■</span> {html.escape(entry.label)} '
            f"{_format_value(entry.value)}{where}"
        )
    return " &nbsp; ".join(parts)
