"""Helpers shared by the view tests (job table, chart, log view, AppState).

Warnings logged through Python's logging fail every test (tests/conftest.py); Qt's own warnings
are failed by pytest-qt's `qt_log_level_fail` mark, set in each view test module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from desktop.models.job import Job, JobState
from trainer.config import TrainingConfig

_CONFIG = TrainingConfig.model_validate(
    {"model": {"name_or_path": "org/tiny-model"}, "dataset": {"path": "data/train.jsonl"}}
)


def make_job(job_id: str, name: str | None = None, **fields: Any) -> Job:
    """A job snapshot with a small valid config; `fields` override any Job field."""
    values: dict[str, Any] = {
        "id": job_id,
        "name": name or f"run-{job_id}",
        "config": _CONFIG,
        "job_dir": Path("/tmp/jobs") / job_id,
        "created_at": 1_700_000_000.0,
    }
    values.update(fields)
    if "state" in values:
        values["state"] = JobState(values["state"])
    return Job(**values)
