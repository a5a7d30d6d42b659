"""A dataset check's report while it is filled, and the error that carries it.

The report itself (`DataReport`, what `check-data --json` prints) lives in `trainer.reports`,
frozen; a check fills a mutable `ReportDraft` and freezes it with `finish()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from trainer.reports import DataProblem, DataReport, RenderedExample, TokenStats

__all__ = ["MAX_LISTED_PROBLEMS", "DataError", "ReportDraft"]

MAX_LISTED_PROBLEMS = 200


@dataclass
class ReportDraft:
    """A `DataReport` being filled by a check; `finish()` freezes it."""

    path: str
    format: str | None = None
    records: int = 0
    valid_records: int = 0
    usable: bool = False
    problems: list[DataProblem] = field(default_factory=list)
    problem_count: int = 0
    location: str = "line"
    examples: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    token_stats: TokenStats | None = None
    rendered_example: RenderedExample | None = None

    def add_problem(self, line: int | None, message: str) -> None:
        """Count a problem; list it while under the cap."""
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(DataProblem(line=line, message=message))

    def finish(self) -> DataReport:
        """The report as it stands now (a frozen copy: later changes to the draft stay out)."""
        return DataReport.model_validate({f.name: getattr(self, f.name) for f in fields(self)})


class DataError(ValueError):
    """Data the trainer cannot use. `.report` holds the full report; str() lists the problems."""

    def __init__(self, report: DataReport, hint: str | None = None) -> None:
        self.report = report
        head = f"{report.path}: the dataset is not usable"
        count = report.problem_count
        head += f" ({count} problem{'s' if count != 1 else ''}):" if count else ""
        tail = [f"To train anyway: {hint}."] if hint else []
        super().__init__("\n".join([head, *report.problem_lines(), *tail]))
