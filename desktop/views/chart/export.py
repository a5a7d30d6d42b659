"""The chart's files: a wide CSV of what is plotted and a PNG of the plot (`LossChart.export_*`),
and the save dialog behind the chart's PNG and CSV buttons.

The CSV has one row per step over the union of every column's steps; a cell is empty where its
series has no point at that step, and a step a series has twice (a resumed run) keeps its last
value.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from desktop.views.chart.curves import Curve
from desktop.views.chart.smoothing import FloatArray

__all__ = ["CsvColumn", "curve_columns", "save_with_dialog", "write_png", "write_wide_csv"]

CsvColumn = tuple[str, FloatArray, FloatArray]
"""One CSV column: its title, the steps of its points and their values (same length)."""


def curve_columns(
    curves: Iterable[Curve], job_name: Callable[[str], str], x_title: str | None
) -> list[CsvColumn]:
    """The CSV columns of these curves: for each job `<name>/<x_title>` first when the x axis
    is not the step (`x_title` not None), then `<name>/<series>` with the stored values and,
    for a smoothed series, `<name>/<series>_smoothed`."""
    columns: list[CsvColumn] = []
    x_done: set[str] = set()
    for curve in curves:
        if curve.series is None or curve.ready == 0:
            continue
        label = job_name(curve.job_id)
        steps = curve.series.step[: curve.ready]
        if x_title is not None and curve.job_id not in x_done:
            columns.append((f"{label}/{x_title}", steps, curve.x_cache.view()[: curve.ready]))
            x_done.add(curve.job_id)
        columns.append((f"{label}/{curve.name}", steps, curve.series.value[: curve.ready]))
        if curve.smoothed is not None:
            columns.append((f"{label}/{curve.name}_smoothed", steps, curve.smoothed))
    return columns


def save_with_dialog(
    parent: QWidget, title: str, default: str, file_filter: str, export: Callable[[str], Path]
) -> Path | None:
    """Ask where to save, then `export(path)`; a file that cannot be written gets a message
    that names it and what to do. Returns the path written, None if cancelled or failed."""
    path, _filter = QFileDialog.getSaveFileName(parent, title, default, file_filter)
    if not path:
        return None
    try:
        return export(path)
    except OSError as exc:
        QMessageBox.warning(
            parent,
            "Could not save",
            f"Could not write {path}: {exc.strerror or exc}. Choose another folder or name.",
        )
        return None


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
