"""What the remote providers (RunPod, Slurm) share: the trainer they send, and the events they
mirror into the job folder, read by the local rules.

`trainer_bundle` is the app's own `trainer` package as a `.tar.gz`, so a pod or a cluster trains
with the same trainer as a local run.

A remote job's `events.jsonl` is copied into the job folder byte for byte; these read it from
the job's stored offsets with the same `EventReader` a local job uses, so `ingest` and the chart
see every provider alike. The final state is never taken from the mirror alone: the provider
confirms it with what it observed (the process or the batch job ended).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from desktop.models import Job, JobState, JobUpdate, can_transition
from trainer.protocol import EVENTS_FILE, Event, EventReader, StatusEvent

__all__ = ["append_bytes", "last_status", "read_mirrored", "trainer_bundle"]

_FINAL = ("completed", "failed", "cancelled")


def trainer_bundle() -> bytes:
    """The app's own `trainer` package as a `.tar.gz` (no caches)."""
    import trainer

    root = Path(trainer.__file__).parent
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                tar.add(path, arcname=f"trainer/{path.relative_to(root).as_posix()}")
    return buffer.getvalue()


def append_bytes(path: Path, data: bytes) -> None:
    """Append `data` to `path` (blocking)."""
    with open(path, "ab") as handle:
        handle.write(data)


def _latest_running_state(events: list[Event]) -> JobState | None:
    for event in reversed(events):
        if isinstance(event, StatusEvent) and event.state not in _FINAL:
            return JobState(event.state)
    return None


def read_mirrored(job: Job, final: bool) -> JobUpdate:
    """New mirrored events from the job's stored offsets (blocking), with the newest running
    state they show where the job may move to it (final states are the provider's to
    confirm)."""
    reader = EventReader(job.job_dir / EVENTS_FILE, job.events_offset, job.events_last_seq)
    events = reader.read_new(final=final)
    state = _latest_running_state(events)
    return JobUpdate(
        events=tuple(events),
        events_offset=reader.offset,
        events_last_seq=reader.last_seq,
        # A requeued attempt starts again ("starting") under a job that is already training:
        # only a move the state machine allows is an observation worth storing.
        state=None if state is None or not can_transition(job.state, state) else state,
    )


def last_status(job_dir: Path) -> tuple[str, str] | None:
    """The trainer's newest status event in the mirrored events (state, message), if any.

    The newest one, final or not: after a requeue an earlier attempt's "cancelled" is followed
    by the next attempt's "starting", so only a final status that nothing followed is a verdict.
    """
    found = None
    try:
        with open(job_dir / EVENTS_FILE, encoding="utf-8") as handle:
            for line in handle:
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("kind") == "status":
                    found = (str(data.get("state")), str(data.get("message", "")))
    except FileNotFoundError:
        return None
    return found
