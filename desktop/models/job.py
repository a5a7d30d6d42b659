"""Jobs, their states and the values that cross layers (all frozen snapshots)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from trainer.config import TrainingConfig
from trainer.protocol import Event

__all__ = [
    "ACTIVE_STATES",
    "ALLOWED_TRANSITIONS",
    "FINAL_STATES",
    "Job",
    "JobListener",
    "JobState",
    "JobUpdate",
    "LogChunk",
    "MetricPoint",
    "ProviderHandle",
    "SeriesColumns",
    "StateTransition",
    "can_transition",
    "metric_columns",
]


class JobState(StrEnum):
    """Where a job stands (docs/architecture.md, "Job states"): queued → provisioning →
    starting → training → saving → completed, or failed / cancelled; unknown while a provider
    cannot be reached."""

    QUEUED = "queued"
    PROVISIONING = "provisioning"
    STARTING = "starting"
    TRAINING = "training"
    SAVING = "saving"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """True for completed, failed and cancelled."""
        return self in FINAL_STATES


FINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
)
ACTIVE_STATES: frozenset[JobState] = frozenset(set(JobState) - FINAL_STATES)

_RUNNING = {JobState.STARTING, JobState.TRAINING, JobState.SAVING}
_ENDINGS = {JobState.FAILED, JobState.CANCELLED, JobState.UNKNOWN}

ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.PROVISIONING, JobState.STARTING} | _ENDINGS),
    JobState.PROVISIONING: frozenset({JobState.STARTING} | _ENDINGS),
    JobState.STARTING: frozenset(
        {JobState.TRAINING, JobState.SAVING, JobState.COMPLETED} | _ENDINGS
    ),
    # A trainer saves checkpoints mid-run: training ↔ saving go back and forth.
    JobState.TRAINING: frozenset({JobState.SAVING, JobState.COMPLETED} | _ENDINGS),
    JobState.SAVING: frozenset({JobState.TRAINING, JobState.COMPLETED} | _ENDINGS),
    # unknown: the provider could not be reached; anything it reports when it is back is allowed.
    JobState.UNKNOWN: frozenset(set(JobState) - {JobState.QUEUED, JobState.UNKNOWN}),
    # A resume starts a cancelled or failed job again from its checkpoint.
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
    JobState.COMPLETED: frozenset(),
}


def can_transition(old: JobState, new: JobState) -> bool:
    """Whether `old → new` is an allowed state change (staying put is not a transition)."""
    return new in ALLOWED_TRANSITIONS[old]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProviderHandle(_Frozen):
    """What a provider needs to find a launched job again after the app restarts."""

    provider: str
    pid: int | None = None
    pid_start_time: float | None = Field(
        default=None, description="Process start time (psutil create_time): a reused pid differs."
    )
    pod_id: str | None = None
    gpus: tuple[int, ...] = ()
    launched_at: float = Field(default_factory=time.time)
    extra: dict[str, str] = Field(default_factory=dict)


class Job(_Frozen):
    """A snapshot of one job. Change it with `model_copy(update=...)`; never in place."""

    id: str
    name: str
    provider: str = "local"
    state: JobState = JobState.QUEUED
    state_reason: str = ""
    config: TrainingConfig
    job_dir: Path
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    handle: ProviderHandle | None = None
    gpus_requested: int = Field(default=0, ge=0, description="0: a CPU slot.")
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    last_loss: float | None = None
    best_eval_loss: float | None = None
    eta_seconds: float | None = None
    exit_code: int | None = None
    output_dir: Path | None = None
    last_checkpoint: str | None = None
    resume: bool = Field(default=False, description="Launch with --resume (continue a checkpoint).")
    cost_usd: Decimal | None = None
    budget_usd: Decimal | None = None
    events_offset: int = Field(default=0, ge=0, description="Bytes of events.jsonl ingested.")
    events_last_seq: int = Field(default=-1, description="Last event seq ingested.")

    @property
    def is_final(self) -> bool:
        """True when the job has completed, failed or been cancelled."""
        return self.state.is_final


class StateTransition(_Frozen):
    """One stored state change."""

    job_id: str
    old: JobState | None
    new: JobState
    time: float
    reason: str = ""


class MetricPoint(_Frozen):
    """One value of one series at one step (`name`: loss, eval_loss, learning_rate, ...)."""

    job_id: str
    step: int
    name: str
    value: float
    time: float


@dataclass(frozen=True, slots=True)
class SeriesColumns:
    """New points of one metric series as columns, in the order they were logged.

    What crosses from the job service to its listeners: the chart appends each column to its
    buffers in one go instead of walking one `MetricPoint` object per value.
    """

    steps: tuple[int, ...]
    values: tuple[float, ...]
    times: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.steps)


def metric_columns(points: Iterable[MetricPoint]) -> dict[str, SeriesColumns]:
    """Group points by series name into columns (each series keeps the points' order)."""
    grouped: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for point in points:
        steps, values, times = grouped.setdefault(point.name, ([], [], []))
        steps.append(point.step)
        values.append(point.value)
        times.append(point.time)
    return {
        name: SeriesColumns(tuple(steps), tuple(values), tuple(times))
        for name, (steps, values, times) in grouped.items()
    }


class LogChunk(_Frozen):
    """Log text from `offset` (bytes) to `next_offset`; resume with `next_offset`."""

    text: str
    offset: int
    next_offset: int


class JobUpdate(_Frozen):
    """What one poll found: new events (in seq order), the observed state and cost.

    `state` is None when the poll saw nothing that changes the state; the provider never
    invents a state it did not observe.
    """

    events: tuple[Event, ...] = ()
    state: JobState | None = None
    reason: str = ""
    state_time: float | None = Field(
        default=None,
        description="When the observed state happened (Unix time) by the best evidence "
        "(status.json, the recorded exit); None: nothing better than the time it is stored.",
    )
    exit_code: int | None = None
    events_offset: int | None = None
    events_last_seq: int | None = None
    cost_usd: Decimal | None = None
    handle: ProviderHandle | None = Field(
        default=None, description="A changed handle (e.g. a queued job got its process)."
    )


class JobListener(Protocol):
    """What a watcher of the `JobService` implements (the GUI's AppState, the CLI's printer).

    Called on the event loop's thread.
    """

    def job_added(self, job: Job) -> None:
        """A job record was created (or loaded at start)."""

    def job_changed(self, job: Job) -> None:
        """A job's snapshot changed (state, progress, loss, ...)."""

    def job_removed(self, job_id: str) -> None:
        """A job record was deleted."""

    def metrics_added(self, job_id: str, columns: Mapping[str, SeriesColumns]) -> None:
        """New metric points were stored for a job, as columns per series name."""

    def log_added(self, job_id: str, lines: list[str]) -> None:
        """New log lines (`train.log`) of a job."""
