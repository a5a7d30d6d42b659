"""Ingest: one poll's `JobUpdate` becomes stored metric points, snapshot fields and transitions.

`ingest` is blocking and runs in a worker thread (`ingest_in_worker`), never on the event
loop's (the window's Qt) thread: the parsing, the SQLite writes and the metric columns the
listeners get. It returns what the listeners must hear; the job service tells them on the
loop's thread, in order.

One ingester per job, even with a window and a CLI open at once: `take_ingest_lock` is a
cross-process lock in the job's folder.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop.core.file_lock import FileLock, LockBusy
from desktop.core.metric_points import points_across_resumes
from desktop.core.redaction import redact
from desktop.core.store import JobStore
from desktop.models import (
    Job,
    JobState,
    JobUpdate,
    SeriesColumns,
    can_transition,
    metric_columns,
)
from trainer.protocol import (
    ArtifactEvent,
    ErrorEvent,
    MetricEvent,
    ProgressEvent,
    StatusEvent,
    read_status,
)

__all__ = [
    "Ingested",
    "ingest",
    "ingest_in_worker",
    "mark_unreachable",
    "plan_timed_transitions",
    "plan_transitions",
    "split_log_lines",
    "take_ingest_lock",
]

log = logging.getLogger(__name__)

RUNNING_STATES = (JobState.STARTING, JobState.TRAINING, JobState.SAVING)


@dataclass(frozen=True)
class Ingested:
    """What one ingest stored, in the order the listeners hear it.

    Attributes:
        job: the newest stored snapshot.
        steps: snapshots after each transition stored before the last write (intermediate
            states of a poll that saw several), in order; `job_changed` for each.
        columns: the new metric points as columns per series (empty: none); `metrics_added`
            comes after `steps` and before the final `job_changed(job)`.
    """

    job: Job
    steps: tuple[Job, ...] = ()
    columns: Mapping[str, SeriesColumns] = field(default_factory=dict)


def take_ingest_lock(job_dir: Path) -> tuple[bool, FileLock | None]:
    """Try to take the job's ingest lock without waiting (a non-blocking flock).

    Returns:
        (mine, lock): `mine` is whether this process may ingest; `lock` is the lock to release
        afterwards (None when there is nothing to release).
    """
    if not job_dir.is_dir():
        # No job dir (deleted files): nothing to ingest from it either; let the provider say so.
        return True, None
    lock = FileLock(job_dir / ".ingest.lock")
    try:
        lock.acquire(blocking=False)
    except LockBusy:
        return False, None
    except OSError:
        return True, None  # an unlockable folder: ingest anyway, as a lone reader would
    return True, lock


async def ingest_in_worker(store: JobStore, job: Job, update: JobUpdate) -> Ingested:
    """`ingest` in a worker thread. A caller cancelled meanwhile still waits for the worker,
    which writes on regardless, so the ingest lock it holds outlasts the write."""
    writing = asyncio.ensure_future(asyncio.to_thread(ingest, store, job, update))
    try:
        return await asyncio.shield(writing)
    except asyncio.CancelledError:
        with suppress(Exception):
            await writing
        raise


def mark_unreachable(store: JobStore, job: Job, reason: str) -> Job:
    """Store `unknown` (when allowed) for a job whose provider could not be asked; blocking."""
    if job.state is not JobState.UNKNOWN and can_transition(job.state, JobState.UNKNOWN):
        return store.transition(job, JobState.UNKNOWN, reason)
    return job


def ingest(store: JobStore, job: Job, update: JobUpdate) -> Ingested:
    """Turn one poll's findings into stored points, snapshot fields and transitions (blocking).

    Points, the snapshot (with the new event offsets) and the last transition are written in one
    store transaction, so a watcher that dies at any moment loses nothing and counts nothing
    twice when it comes back.
    """
    points, resumed_from_step = points_across_resumes(job.id, update.events)
    fields: dict[str, Any] = {}
    observed: list[tuple[JobState, str, float | None]] = []  # (state, reason, when it happened)
    error_message = ""
    best = job.best_eval_loss
    for event in update.events:
        if isinstance(event, MetricEvent):
            fields["step"] = event.step
            if event.total_steps is not None:
                fields["total_steps"] = event.total_steps
            if event.epoch is not None:
                fields["epoch"] = event.epoch
            if event.loss is not None:
                fields["last_loss"] = event.loss
            if event.eval_loss is not None and (best is None or event.eval_loss < best):
                best = event.eval_loss
                fields["best_eval_loss"] = best
            if event.eta_seconds is not None:
                fields["eta_seconds"] = event.eta_seconds
        elif isinstance(event, ProgressEvent):
            fields["step"] = event.step
            if event.total_steps is not None:
                fields["total_steps"] = event.total_steps
            if event.eta_seconds is not None:
                fields["eta_seconds"] = event.eta_seconds
        elif isinstance(event, StatusEvent):
            if event.state in ("completed", "failed", "cancelled"):
                # A final word counts once the provider confirms it (status.json written or
                # the process gone): update.state below.
                continue
            reason = event.message or f"trainer: {event.state}"
            resumed = f"resumed from step {event.resumed_from_step}"
            if event.resumed_from_step is not None and resumed not in reason:
                reason = f"{reason} ({resumed})"
            observed.append((JobState(event.state), reason, event.time))
        elif isinstance(event, ArtifactEvent):
            if event.artifact == "checkpoint":
                fields["last_checkpoint"] = event.path
            elif event.artifact in ("adapter", "model"):
                fields["output_dir"] = Path(event.path)
        elif isinstance(event, ErrorEvent):
            error_message = event.message
    if update.state is not None:
        observed.append((update.state, update.reason, update.state_time))
    # What the provider observed itself carries over to the snapshot as it is.
    for name in ("events_offset", "events_last_seq", "exit_code", "cost_usd", "handle"):
        value = getattr(update, name)
        if value is not None:
            fields[name] = value

    transitions = plan_timed_transitions(job.state, observed)
    final = transitions[-1][0] if transitions else None
    for state, _, at in transitions:
        if state in RUNNING_STATES and job.started_at is None and "started_at" not in fields:
            fields["started_at"] = time.time() if at is None else at
    if final is not None and final.is_final:
        at = transitions[-1][2]
        fields["finished_at"] = time.time() if at is None else at
        fields.update(_from_status_file(job, fields))
        fields["eta_seconds"] = None
    if final is JobState.FAILED and error_message:
        state, reason, at = transitions[-1]
        if not reason or reason.startswith("trainer:"):
            transitions[-1] = (state, error_message, at)
    # Reasons are stored and shown: a secret a trainer printed must not reach either.
    transitions = [(state, redact(reason), at) for state, reason, at in transitions]

    changed = {k: v for k, v in fields.items() if getattr(job, k) != v}
    if not points and not changed and not transitions and resumed_from_step is None:
        return Ingested(job)
    steps = []
    for state, reason, at in transitions[:-1]:
        job = store.transition(job, state, reason, at=at)
        steps.append(job)
    snapshot = job.model_copy(update=changed)
    last = transitions[-1] if transitions else None
    job = store.record_progress(snapshot, points, last, resumed_from_step=resumed_from_step)
    return Ingested(job, tuple(steps), metric_columns(points) if points else {})


def plan_transitions(
    current: JobState, observed: list[tuple[JobState, str]]
) -> list[tuple[JobState, str]]:
    """The allowed transitions that walk `current` through the observed states, in order.

    A state equal to the current one is no change. A trainer that started and ended between
    two polls (queued → completed) passes through `starting`, which it did go through; any other
    jump that is not allowed is dropped with a warning rather than stored.
    """
    timed = plan_timed_transitions(current, [(new, reason, None) for new, reason in observed])
    return [(new, reason) for new, reason, _ in timed]


def plan_timed_transitions(
    current: JobState, observed: list[tuple[JobState, str, float | None]]
) -> list[tuple[JobState, str, float | None]]:
    """`plan_transitions` for (state, reason, when it happened) triples.

    A `starting` passed through is given the time of the state that proves it (no later).
    """
    out: list[tuple[JobState, str, float | None]] = []
    state = current
    for new, reason, at in observed:
        if new is state:
            continue
        if new is JobState.STARTING and state in (JobState.TRAINING, JobState.SAVING):
            # A requeued or restarted attempt of a job that is already running starts again:
            # the job did not go back, it goes on.
            log.info("a new attempt of a %s job started", state)
            continue
        if can_transition(state, new):
            out.append((new, reason, at))
            state = new
        elif (
            new is not JobState.QUEUED
            and can_transition(state, JobState.STARTING)
            and can_transition(JobState.STARTING, new)
        ):
            out.append((JobState.STARTING, "trainer started", at))
            out.append((new, reason, at))
            state = new
        else:
            log.warning("ignored an observed change %s → %s (not allowed)", state, new)
    return out


def _from_status_file(job: Job, fields: dict[str, Any]) -> dict[str, Any]:
    """Snapshot fields from the trainer's `status.json`, when it left one."""
    status = read_status(job.job_dir)
    if status is None:
        return {}
    out: dict[str, Any] = {}
    if "exit_code" not in fields:
        out["exit_code"] = status.exit_code
    if status.last_step is not None:
        out["step"] = status.last_step
    if status.total_steps is not None:
        out["total_steps"] = status.total_steps
    if status.last_checkpoint:
        out["last_checkpoint"] = status.last_checkpoint
    if status.final_loss is not None:
        out["last_loss"] = status.final_loss
    if status.output_dir:
        out["output_dir"] = Path(status.output_dir)
    return out


def split_log_lines(text: str, *, final: bool) -> tuple[list[str], str]:
    """Whole lines of a log chunk and the unfinished rest (kept for the next chunk).

    With `final` the job has ended: the rest is a line of its own and nothing is kept.
    """
    lines = text.split("\n")
    tail = lines.pop()
    if tail and final:
        return [*lines, tail], ""
    return lines, tail
