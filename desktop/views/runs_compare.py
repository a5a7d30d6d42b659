"""What the runs view compares, apart from Qt: the config fields in which runs differ, and each
run's final and best metrics.

A config is flattened to dotted keys (`lora.r`, `training.learning_rate`); a field differs when
its value is not the same in every run, a field one run lacks included. Metrics are read from
the series AppState holds, by name.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from desktop.models.job import Job
from desktop.views.chart.smoothing import FloatArray

__all__ = [
    "METRIC_COLUMNS",
    "MISSING",
    "RunRow",
    "differing_fields",
    "flatten_config",
    "run_rows",
    "write_rows_csv",
]

MISSING = "—"
"""Shown (and written) where a run has no such field or metric."""


@dataclass(frozen=True)
class MetricColumn:
    """One metric column: its title, the series it reads and how it sums the series up."""

    title: str
    series: str
    reduce: Callable[[FloatArray], float]


def _last(values: FloatArray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else math.nan


def _best(values: FloatArray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else math.nan


def _mean(values: FloatArray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


METRIC_COLUMNS: tuple[MetricColumn, ...] = (
    MetricColumn("final loss", "loss", _last),
    MetricColumn("best loss", "loss", _best),
    MetricColumn("final eval loss", "eval_loss", _last),
    MetricColumn("best eval loss", "eval_loss", _best),
    MetricColumn("mean tokens/s", "train_tokens_per_second", _mean),
    MetricColumn("mean samples/s", "samples_per_second", _mean),
)


@dataclass(frozen=True)
class RunRow:
    """One run in the comparison: its name, state, last step, metrics and config fields."""

    job_id: str
    name: str
    state: str
    step: int | None
    metrics: tuple[float | None, ...]
    """One per METRIC_COLUMNS; None when the run has no such series."""
    fields: Mapping[str, Any]
    """The run's flattened config."""


def flatten_config(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"lora": {"r": 8}}` -> `{"lora.r": 8}`; lists and tuples stay whole values."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_config(value, f"{name}."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def differing_fields(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The flattened keys whose values are not the same in every config (a key some configs
    lack differs), in the order they first appear; none for fewer than two configs."""
    if len(configs) < 2:
        return []
    keys = list(dict.fromkeys(key for config in configs for key in config))
    sentinel = object()
    return [key for key in keys if len({repr(c.get(key, sentinel)) for c in configs}) > 1]


def _config_fields(job: Job) -> dict[str, Any]:
    """The job's flattened config, less its run name: the row's first column shows it."""
    fields = flatten_config(job.config.model_dump(mode="json"))
    fields.pop("name", None)
    return fields


def run_rows(jobs: Iterable[Job], series: Callable[[str, str], FloatArray | None]) -> list[RunRow]:
    """A row per job; `series(job_id, name)` gives a series' values (None if absent)."""
    rows = []
    for job in jobs:
        metrics: list[float | None] = []
        for column in METRIC_COLUMNS:
            values = series(job.id, column.series)
            value = None if values is None or values.size == 0 else column.reduce(values)
            metrics.append(None if value is None or math.isnan(value) else value)
        rows.append(
            RunRow(
                job_id=job.id,
                name=job.name,
                state=job.state.value,
                step=job.step,
                metrics=tuple(metrics),
                fields=_config_fields(job),
            )
        )
    return rows


def write_rows_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a table as CSV (None as an empty cell); returns the path written."""
    target = Path(path)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
    return target
