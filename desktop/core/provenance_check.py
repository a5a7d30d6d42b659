"""Before a resume: has what the job trained on changed since its last attempt? (Qt-free)

The trainer records each attempt in the job's `provenance.json` (`trainer.reports.Provenance`).
Before a cancelled or failed job is queued again, `check_resume` computes what it can on this
side without the ML stack (the dataset's size and sha256, the model's revision or folder
fingerprint, with the same functions the trainer uses) and asks the trainer runtime's doctor
for its package versions, then compares. A change refuses the resume with one sentence per
change, unless the person forces it; the forced changes go into the job's history. A job
with no record (made by an older version) resumes and says so.

Blocking: it hashes the dataset and runs the runtime's doctor; call it in a worker thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from desktop.core.errors import ConfigError, DatasetError, FtdeskError
from trainer.reports import (
    DatasetProvenance,
    ModelProvenance,
    Provenance,
    dataset_digest,
    fmt_size,
    model_revision,
    read_provenance,
)

if TYPE_CHECKING:
    from desktop.core.runtime import TrainerRuntime
    from desktop.models import Job

__all__ = ["NO_PROVENANCE", "ProvenanceChangedError", "ResumeVerdict", "check_resume"]

log = logging.getLogger(__name__)

NO_PROVENANCE = "no provenance recorded for this job (made by an older version)"

# What each kind of change lets a forced resume continue with.
_CONTINUE_WITH = {
    "the dataset": "on the new data",
    "the model": "with the new model",
    "the trainer's packages": "with the packages installed now",
}


class ResumeVerdict(NamedTuple):
    """What `check_resume` found, when it lets the resume go on.

    Attributes:
        said: a sentence for the person (`NO_PROVENANCE`, or the changes forced over); None
            when nothing changed.
        history: what the job's history adds to the resume's reason (the changes a forced
            resume continues over); None when there is nothing to record.
    """

    said: str | None = None
    history: str | None = None


class ProvenanceChangedError(ConfigError):
    """A resume refused: the data, the model or the trainer changed since the job's last
    attempt. The message has one sentence per change; `changes` lists them.

    Args:
        job_id: the job.
        changes: one sentence per change, without the advice.
    """

    def __init__(self, job_id: str, changes: list[str]) -> None:
        self.job_id = job_id
        self.changes = list(changes)
        sentences = []
        for change in changes:
            with_what = next(
                (v for k, v in _CONTINUE_WITH.items() if change.startswith(k)), "anyway"
            )
            sentences.append(
                f"{change}; resume with --force to continue {with_what}, or start a new job."
            )
        super().__init__(f"job {job_id}: " + " ".join(sentences))


def _local(path: str, job_dir: Path) -> Path:
    """A config path as the trainer reads it: relative ones against the job's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else job_dir / p


def _packages_now(runtime: TrainerRuntime) -> dict[str, str | None]:
    """The trainer runtime's versions as its doctor reports them (empty when it cannot say:
    then nothing is compared, and the launch reports the runtime's problem)."""
    try:
        report = runtime.doctor()
    except FtdeskError as exc:
        log.info("resume: the trainer runtime's versions are unknown (%s); not compared", exc)
        return {}
    names = ("python", "torch", "transformers", "peft", "trl", "accelerate", "datasets")
    return {name: getattr(report, name) for name in names}


def check_resume(job: Job, runtime: TrainerRuntime, *, force: bool) -> ResumeVerdict:
    """Compare the job's last recorded attempt with what a resume would train on now.

    Args:
        job: the job about to be resumed (its folder holds `provenance.json`).
        runtime: the trainer runtime the resume will run in.
        force: continue over changes instead of refusing.

    Returns:
        What to tell the person and what to add to the history (see `ResumeVerdict`).

    Raises:
        ProvenanceChangedError: something changed and `force` is off (exit code 2).
        DatasetError: the recorded dataset file or folder is gone (forcing cannot help).
    """
    try:
        record = read_provenance(job.job_dir)
    except ValueError as exc:
        if not force:
            raise ProvenanceChangedError(
                job.id, [f"its provenance record cannot be compared ({exc})"]
            ) from None
        said = f"forced over an unreadable provenance record ({exc})"
        return ResumeVerdict(said, said)
    then = record.latest if record is not None else None
    if then is None:
        return ResumeVerdict(NO_PROVENANCE)
    config = job.config
    data_path = _local(config.dataset.path, job.job_dir)
    if then.dataset.kind != "hub" and not data_path.exists():
        raise DatasetError(
            f"job {job.id}: its dataset {data_path} is not there any more (it was "
            f"{fmt_size(then.dataset.size_bytes)}, sha256 {(then.dataset.sha256 or '?')[:12]}); "
            "put it back where it was, or start a new job"
        )
    kind, size, sha256 = then.dataset.kind, None, None  # a Hub dataset: nothing to hash here
    if kind != "hub":
        try:
            kind, size, sha256 = dataset_digest(data_path)
        except OSError as exc:
            raise DatasetError(
                f"job {job.id}: its dataset {data_path} cannot be read: {exc}"
            ) from exc
    model_path = config.model.name_or_path
    if Path(model_path).expanduser().is_absolute() or _local(model_path, job.job_dir).is_dir():
        model_path = str(_local(model_path, job.job_dir))
    revision, revision_kind = model_revision(model_path, config.model.revision)
    now = Provenance(
        attempt=then.attempt + 1,
        recorded_at="",
        dataset=DatasetProvenance(
            path=then.dataset.path,
            kind=kind,
            size_bytes=size,
            sha256=sha256,
        ),
        model=ModelProvenance(
            name_or_path=config.model.name_or_path,
            revision=revision,
            revision_kind=revision_kind,
        ),
        packages=_packages_now(runtime),
        seed=config.training.seed,
    )
    changes = now.changes_since(then)
    if not changes:
        return ResumeVerdict()
    if not force:
        raise ProvenanceChangedError(job.id, changes)
    said = "forced over: " + "; ".join(changes)
    return ResumeVerdict(said, said)
