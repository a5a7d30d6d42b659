"""Rebuild a damaged job database from the job folders (`finetune-desk repair`, and the
window's offer when the store fails its check at start).

The folders are the source of truth (docs/architecture.md, "The job directory"); the store is
an index of them. A damaged file is moved aside, never deleted, and a new store gets one row
per job folder: its config, the final state its trainer wrote (`status.json`) or `unknown`
for a run without one (the next poll settles it from what the provider sees), and every metric
point of its `events.jsonl`. Only a damaged file (or one that is not a database) is rebuilt:
a store that is locked or from a newer version is refused with its own sentence. Blocking:
the window calls it from a worker thread.
"""

from __future__ import annotations

import time
from pathlib import Path

from desktop.core.metric_points import points_across_resumes
from desktop.core.store import DB_FILENAME, JobStore
from desktop.core.store_schema import StoreDamagedError
from desktop.models import Job, JobState
from trainer.config import TrainingConfig
from trainer.protocol import Event, read_all_events, read_status

__all__ = ["REBUILT_REASON", "rebuild_store", "store_problem"]

REBUILT_REASON = "rebuilt from the job folder by finetune-desk repair"
_FINAL = {
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
}


def _move_aside(db: Path) -> Path:
    """Rename the database (and its WAL files) to `<name>.damaged-<time>`; returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = db.with_name(f"{db.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = db.with_name(db.name + suffix)
        if part.exists():
            part.rename(target.with_name(target.name + suffix))
    return target


def _job_from_folder(folder: Path) -> tuple[Job, list[Event]]:
    config = TrainingConfig.model_validate_json((folder / "config.json").read_bytes())
    events_path = folder / "events.jsonl"
    events = read_all_events(events_path) if events_path.exists() else []
    status = read_status(folder)
    fields: dict[str, object] = {}
    if status is not None and status.state in _FINAL:
        state = _FINAL[status.state]
        fields.update(exit_code=status.exit_code, step=status.last_step)
        fields.update(total_steps=status.total_steps)
        if events:  # a finished run's events are all in: nothing left to read
            fields.update(events_offset=events_path.stat().st_size, events_last_seq=events[-1].seq)
    elif (folder / "cancelled.json").exists():
        state = JobState.CANCELLED
    else:
        state = JobState.UNKNOWN  # the next poll reads its events and settles its state
    job = Job(
        id=folder.name,
        name=config.name,
        config=config,
        job_dir=folder,
        created_at=(folder / "config.json").stat().st_mtime,
        state=state,
        state_reason=REBUILT_REASON,
        **fields,
    )
    return job, events


def store_problem(home: Path) -> str | None:
    """Open `home`'s job database once (blocking): None when it is sound (or absent), else
    the sentence that says how it is damaged and the way out.

    Raises:
        StoreError: it cannot be used for another reason (locked, from a newer version), which
            a rebuild would not mend.
    """
    try:
        with JobStore(home / DB_FILENAME):
            return None
    except StoreDamagedError as exc:
        return str(exc)


def rebuild_store(home: Path) -> tuple[Path | None, int, list[str]]:
    """Rebuild `home`'s job database from `home/jobs/*` when it is damaged.

    Returns:
        (where the damaged file was moved, or None when the store was sound and left alone;
        how many jobs were rebuilt; one line per folder that could not be read).

    Raises:
        StoreError: the database is locked or from a newer version (nothing was changed).
    """
    db = home / DB_FILENAME
    if store_problem(home) is None:
        return None, 0, []
    aside = _move_aside(db)
    skipped: list[str] = []
    count = 0
    with JobStore(db) as store:
        folders = sorted(p for p in (home / "jobs").glob("*") if (p / "config.json").is_file())
        for folder in folders:
            try:
                job, events = _job_from_folder(folder)
            except (OSError, ValueError) as exc:
                skipped.append(f"{folder}: {str(exc).splitlines()[0]}")
                continue
            store.add_job(job, REBUILT_REASON)
            points, _ = points_across_resumes(job.id, events)  # none a resume superseded
            if points:
                store.record_progress(store.get_job(job.id), points)
            count += 1
    return aside, count, skipped
