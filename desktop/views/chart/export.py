"""The chart's files: a wide CSV of what is plotted and a PNG of the plot (`LossChart.export_*`).

The CSV has one row per step over the union of every column's steps; a cell is empty where its
series has no point at that step, and a step a series has twice (a resumed run) keeps its last
value.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters

from desktop.views.chart.smoothing import FloatArray

__all__ = ["CsvColumn", "write_png", "write_wide_csv"]

CsvColumn = tuple[str, FloatArray, FloatArray]
"""One CSV column: its title, the steps of its points and their values (same length)."""


def write_wide_csv(path: str | Path, columns: Sequence[CsvColumn]) -> Path:
    """Write `columns` as a CSV with a `step` column first; returns the path written."""
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


def write_png(plot: pg.PlotItem, path: str | Path, width: int) -> Path:
    """Save `plot` as a PNG `width` pixels wide; returns the path written."""
    exporter = pyqtgraph.exporters.ImageExporter(plot)
    exporter.parameters()["width"] = int(width)
    target = Path(path)
    exporter.export(str(target))
    return target
