"""The trainer's way in: read, check and normalise a config's training and eval data."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from trainer.config import DatasetConfig
from trainer.data.formats import record_kind, scan_source
from trainer.data.report import DataError, ReportDraft
from trainer.reports import DataReport

__all__ = ["TrainingData", "load_training_data"]


@dataclass
class TrainingData:
    """Normalised records ready for TRL.

    `format` is the kind of the records: "messages", "prompt_completion" or "text" (ShareGPT
    and Alpaca sources become "messages"); `source_format` is what the file held.
    """

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]] | None
    format: str
    report: DataReport
    source_format: str = ""
    eval_report: DataReport | None = None


def _split_eval(
    records: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deterministic hold-out: the same seed and records always give the same split."""
    n_eval = max(1, round(len(records) * fraction))
    if n_eval >= len(records):
        raise ValueError(
            f"dataset.eval_split {fraction} leaves no training records out of {len(records)}"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    train = [r for i, r in enumerate(records) if i not in held]
    evals = [records[i] for i in sorted(held)]
    return train, evals


def load_training_data(ds: DatasetConfig, seed: int = 42) -> TrainingData:
    """Read, check and normalise the training (and eval) data of a config.

    Raises:
        DataError: the data has problems (all of them are in `.report` and in the message), or
            an eval file that does not match the training data.
    """
    train: list[dict[str, Any]] = []
    report = scan_source(ds.path, ds.format, ds.field_map, ds.split, train.append)
    if not report.usable or report.format is None:
        raise DataError(report.finish())
    kind = record_kind(report.format)
    evals: list[dict[str, Any]] | None = None
    eval_report: ReportDraft | None = None
    if ds.eval_path:
        evals = []
        eval_report = scan_source(ds.eval_path, ds.format, ds.field_map, ds.split, evals.append)
        if not eval_report.usable or eval_report.format is None:
            raise DataError(eval_report.finish())
        if record_kind(eval_report.format) != kind:
            eval_report.add_problem(
                None,
                f"the eval file holds {record_kind(eval_report.format)} records but the "
                f"training data holds {kind} records; use the same kind for both",
            )
            eval_report.usable = False
            raise DataError(eval_report.finish())
    elif ds.eval_split is not None:
        try:
            train, evals = _split_eval(train, ds.eval_split, seed)
        except ValueError as exc:
            report.add_problem(None, str(exc))
            report.usable = False
            raise DataError(report.finish()) from exc
    return TrainingData(
        train=train,
        eval=evals,
        format=kind,
        report=report.finish(),
        source_format=report.format,
        eval_report=None if eval_report is None else eval_report.finish(),
    )
