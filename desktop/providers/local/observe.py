"""What a poll of a started local job observes: new events, liveness and the final word.

A final state is reported only once the trainer has written `status.json` or is gone; events
are read before the state is judged, so a trainer that is gone has had all its events read.
While the trainer lives, `status.json` counts only when it carries that process's pid and start
(`write_status` signs it): a file anyone else wrote waits until the trainer is gone. A job
whose folder was deleted is failed with that reason and its trainer killed. A trainer gone
without a final status from a full drive is failed saying so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from desktop.models import Job, JobState, JobUpdate, ProviderHandle, can_transition
from desktop.providers.local.logs import append_log_line
from desktop.providers.local.process import (
    ProcessIdentity,
    describe_exit,
    identity_alive,
    kill_group,
)
from desktop.providers.local.queue import CANCELLED_FILE, TRAIN_LOG, read_exit
from trainer.protocol import (
    EVENTS_FILE,
    STATUS_FILE,
    Event,
    EventReader,
    StatusEvent,
    StatusFile,
    read_status,
)

__all__ = [
    "EXITED_WITHOUT_STATUS",
    "MAX_EVENT_BYTES_PER_POLL",
    "latest_running_state",
    "observe_started",
    "only_if_changed",
    "written_by",
]

EXITED_WITHOUT_STATUS = "trainer exited without a final status"
MAX_EVENT_BYTES_PER_POLL = 4 * 1024 * 1024
_FINAL = ("completed", "failed", "cancelled")


def only_if_changed(job: Job, state: JobState | None) -> JobState | None:
    """`state` when it differs from the job's, else None (no change to report)."""
    return None if state is None or state == job.state else state


def latest_running_state(events: Sequence[Event]) -> JobState | None:
    """The newest non-final status among `events` (final ones wait for status.json)."""
    for event in reversed(events):
        if isinstance(event, StatusEvent) and event.state not in _FINAL:
            return JobState(event.state)
    return None


def written_by(status: StatusFile, identity: ProcessIdentity) -> bool:
    """Whether `status.json` was written by the trainer process `identity` (pid and start)."""
    return (
        status.writer_pid == identity.pid
        and status.writer_start_ticks is not None
        and status.writer_start_ticks == identity.start_ticks
    )


def _drive_full(job_dir: Path) -> bool:
    """Whether the job folder's drive has no room left (less than 1 MiB; the trainer keeps a
    256 KiB reserve for its last word, so a silent exit with less is the disk's doing)."""
    try:
        return shutil.disk_usage(job_dir).free < 1024 * 1024
    except OSError:
        return False


def _without_replayed_states(job: Job, events: list[Event]) -> list[Event]:
    """A stream read again from its start replays states the job has left: drop those."""
    state = job.state
    kept: list[Event] = []
    for event in events:
        if isinstance(event, StatusEvent) and event.state not in _FINAL:
            new = JobState(event.state)
            if new is not state and not can_transition(state, new):
                continue
            state = new
        kept.append(event)
    return kept


def observe_started(
    job: Job,
    job_dir: Path,
    identity: ProcessIdentity,
    handle_update: ProviderHandle | None,
    *,
    exit_code: Callable[[], int | None],
) -> JobUpdate:
    """One poll of a started trainer (blocking): at most 4 MB of new events and its state.

    Args:
        job: the stored snapshot (its event offsets say where to read on).
        job_dir: the job's folder.
        identity: the trainer process as launched.
        handle_update: a new handle to report (the scheduler started the job), or None.
        exit_code: the gone trainer's exit code when its reaper knows it (asked only then).
    """
    if not (job_dir / "config.json").is_file():
        # The folder is the job's truth: with it gone (or only recreated by a trainer writing
        # on) nothing the trainer does can be kept, and its end must not read as "completed".
        kill_group(identity, job_dir)
        return JobUpdate(
            state=only_if_changed(job, JobState.FAILED),
            reason=f"its folder {job_dir} was deleted",
            handle=handle_update,
        )
    # Liveness first: events read after "gone" are then complete.
    alive = identity_alive(identity, job_dir)
    status = read_status(job_dir)
    if status is not None and alive and not written_by(status, identity):
        status = None  # anyone may write a file: a live trainer's word counts only if signed
    ended = not alive or (status is not None and status.state in _FINAL)
    events_path = job_dir / EVENTS_FILE
    reader = EventReader(events_path, job.events_offset, job.events_last_seq)
    try:
        backlog = events_path.stat().st_size - job.events_offset
    except FileNotFoundError:
        backlog = 0
    complete = backlog <= MAX_EVENT_BYTES_PER_POLL
    if complete:
        events = reader.read_new(final=not alive)
    else:
        events = reader.read_new(max_bytes=MAX_EVENT_BYTES_PER_POLL)
        if not events and reader.offset == job.events_offset:
            events = reader.read_new(final=not alive)  # one line larger than the budget
            complete = True
    for notice in reader.notices:
        append_log_line(job_dir / TRAIN_LOG, notice)
    if reader.restarted:
        events = _without_replayed_states(job, events)
    base = JobUpdate(
        events=tuple(events),
        events_offset=reader.offset,
        events_last_seq=reader.last_seq,
        handle=handle_update,
    )
    if not (ended and complete):
        state = latest_running_state(events)
        return base.model_copy(update={"state": only_if_changed(job, state)})
    # The trainer is gone (or said its last word): the final state.
    if status is not None and status.state in _FINAL:
        return base.model_copy(
            update={
                "state": only_if_changed(job, JobState(status.state)),
                "reason": status.message,
                "exit_code": status.exit_code,
                "state_time": _written_at(job_dir, status),
            }
        )
    code = exit_code()
    exit_record = read_exit(job_dir)
    # When the process ended, as its reaper recorded; else unknown (stored as "now").
    ended_at = exit_record.exited_at if exit_record and exit_record.is_of(identity) else None
    if (job_dir / CANCELLED_FILE).exists():
        return base.model_copy(
            update={
                "state": only_if_changed(job, JobState.CANCELLED),
                "reason": "cancelled; the trainer did not stop in time and was killed "
                f"({describe_exit(code)})",
                "exit_code": code,
                "state_time": ended_at,
            }
        )
    reason = EXITED_WITHOUT_STATUS
    if code is not None:
        reason += f" ({describe_exit(code)})"
    if _drive_full(job_dir):
        reason += (
            f"; the drive holding {job_dir} is full, which kept the trainer from writing its "
            "final status: free space there, then run --resume"
        )
    return base.model_copy(
        update={
            "state": only_if_changed(job, JobState.FAILED),
            "reason": reason,
            "exit_code": code,
            "state_time": ended_at,
        }
    )


def _written_at(job_dir: Path, status: StatusFile) -> float | None:
    """When the trainer wrote `status.json`: its own stamp, else the file's mtime."""
    if "finished_at" in status.model_fields_set:
        return status.finished_at
    try:
        return (job_dir / STATUS_FILE).stat().st_mtime
    except OSError:
        return None
