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
    #: What `dataset.skip_invalid_records` left out ("skipped 1 invalid record (line 17:
    #: ...)"), one entry per file; empty when nothing was skipped.
    skipped: list[str] | None = None


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

    With `ds.skip_invalid_records`, a file whose only problems are invalid records is taken
    without them, and `TrainingData.skipped` says what was left out; without it, such a file
    is refused with a message naming its lines and the option.

    Raises:
        DataError: the data has problems (all of them are in `.report` and in the message), or
            an eval file that does not match the training data.
    """
    train: list[dict[str, Any]] = []
    skipped: list[str] = []
    report = scan_source(ds.path, ds.format, ds.field_map, ds.split, train.append)
    kind = record_kind(_usable_format(report, ds.skip_invalid_records, skipped))
    evals: list[dict[str, Any]] | None = None
    eval_report: ReportDraft | None = None
    if ds.eval_path:
        evals = []
        eval_report = scan_source(ds.eval_path, ds.format, ds.field_map, ds.split, evals.append)
        eval_format = _usable_format(eval_report, ds.skip_invalid_records, skipped)
        if record_kind(eval_format) != kind:
            eval_report.add_problem(
                None,
                f"the eval file holds {record_kind(eval_format)} records but the "
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
        source_format=report.format or kind,
        eval_report=None if eval_report is None else eval_report.finish(),
        skipped=skipped,
    )


def _usable_format(draft: ReportDraft, skip_invalid: bool, skipped: list[str]) -> str:
    """The data's format, when the trainer takes it: usable, or unusable only for invalid
    records that the person chose to skip (the sink got the valid ones only; what was left
    out is added to `skipped`).

    Raises:
        DataError: the data is unusable (naming `dataset.skip_invalid_records` where it would
            help).
    """
    report = draft.finish()
    if report.usable and report.format is not None:
        return report.format
    if report.skippable and report.format is not None:
        if skip_invalid:
            skipped.append(f"{report.path}: {report.skip_summary()}")
            return report.format
        raise DataError(report, hint=report.skip_hint())
    raise DataError(report)
