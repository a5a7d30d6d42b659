"""`provenance.json`: what each attempt of a job trained on, written before it trains.

The trainer records the dataset (path, size, sha256, record counts), the model (path or Hub id
and its revision: the Hub commit, or a fingerprint of a local folder), the versions of the
training packages and the seed. Each attempt (the first run, every resume) is appended to the
record; earlier attempts are never overwritten, and an attempt that differs from the one
before says how (`Provenance.changes`: a resume forced over a change). The schema and the
digests are `trainer.reports`' (the app computes the same digests to check a resume).

Standard library only (package versions from `importlib.metadata`): nothing here loads torch.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainer.config import TrainingConfig
from trainer.protocol import write_json_atomic
from trainer.ranks import is_main_process
from trainer.reports import (
    PROVENANCE_FILE,
    DatasetProvenance,
    ModelProvenance,
    Provenance,
    ProvenanceRecord,
    dataset_digest,
    model_revision,
    read_provenance,
)

__all__ = ["PACKAGES", "package_versions", "record_attempt", "record_start", "record_trainable"]

# The distributions whose versions decide what a run computes.
PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "finetune-desk")


def package_versions() -> dict[str, str | None]:
    """Python's version and each of `PACKAGES`' installed version (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _write(job_dir: Path, record: ProvenanceRecord) -> None:
    """Replace `provenance.json` atomically: a reader sees the old record or the new one."""
    write_json_atomic(job_dir / PROVENANCE_FILE, record.model_dump(mode="json"))


def _earlier(job_dir: Path) -> tuple[ProvenanceRecord, str | None]:
    """The record so far, and a note when an unreadable one had to be set aside (kept)."""
    try:
        return read_provenance(job_dir) or ProvenanceRecord(), None
    except ValueError as exc:
        aside = job_dir / f"provenance.unreadable-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
        os.replace(job_dir / PROVENANCE_FILE, aside)
        return ProvenanceRecord(), f"{exc}; kept as {aside.name}, a new record starts"


def record_attempt(
    job_dir: Path,
    config: TrainingConfig,
    *,
    records: int,
    eval_records: int | None,
    resumed: bool,
) -> tuple[Provenance, str | None]:
    """Append this attempt to the job's `provenance.json`.

    Args:
        job_dir: the job folder.
        config: the job's config (dataset, model, seed).
        records: training records loaded (before the cut at max_length).
        eval_records: evaluation records, None without evaluation.
        resumed: whether this attempt continues from a checkpoint.

    Returns:
        The attempt recorded, and a note for the log when an unreadable earlier record was set
        aside (None otherwise).

    Raises:
        OSError: the dataset cannot be read, or the record cannot be written.
    """
    kind, size, sha256 = dataset_digest(config.dataset.path)
    revision, revision_kind = model_revision(config.model.name_or_path, config.model.revision)
    record, note = _earlier(job_dir)
    attempt = Provenance(
        attempt=len(record.attempts) + 1,
        recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        resumed=resumed,
        dataset=DatasetProvenance(
            path=config.dataset.path,
            kind=kind,
            size_bytes=size,
            sha256=sha256,
            records=records,
            eval_records=eval_records,
        ),
        model=ModelProvenance(
            name_or_path=config.model.name_or_path,
            revision=revision,
            revision_kind=revision_kind,
        ),
        packages=package_versions(),
        seed=config.training.seed,
    )
    if record.latest is not None:
        attempt = attempt.model_copy(update={"changes": attempt.changes_since(record.latest)})
    _write(job_dir, ProvenanceRecord(attempts=[*record.attempts, attempt]))
    return attempt, note


def record_start(
    job_dir: Path,
    config: TrainingConfig,
    data: Any,
    *,
    resumed: bool,
    note: Callable[..., None],
) -> None:
    """`trainer.run`'s call once the data is loaded: record the attempt (main process only)
    and tell the log what changed since the previous attempt (a forced resume).

    Args:
        job_dir: the job folder.
        config: the job's config.
        data: the loaded `trainer.data.TrainingData`.
        resumed: whether this attempt continues from a checkpoint.
        note: `note(message, level=...)`, a line for the events and the console.
    """
    if not is_main_process():
        return
    evals = len(data.eval) if data.eval else None
    attempt, aside = record_attempt(
        job_dir, config, records=len(data.train), eval_records=evals, resumed=resumed
    )
    if aside:
        note(f"provenance: {aside}", level="warning")
    for change in attempt.changes:
        note(f"provenance: {change}; continuing, as the resume was forced")


def record_trainable(job_dir: Path, trainable: int) -> None:
    """Add the count of records left with a trained token to the newest attempt (main process
    only; nothing when no attempt is recorded)."""
    if not is_main_process():
        return
    record = read_provenance(job_dir)
    if record is None or record.latest is None:
        return
    latest = record.latest
    dataset = latest.dataset.model_copy(update={"trainable_records": trainable})
    attempts = [*record.attempts[:-1], latest.model_copy(update={"dataset": dataset})]
    _write(job_dir, ProvenanceRecord(attempts=attempts))
