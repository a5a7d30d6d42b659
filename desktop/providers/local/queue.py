"""The local job queue, kept as files under `<home>/queue/` so that it outlives the app.

```
<home>/queue/queue.lock          flock: every change to entries or claims happens under it
<home>/queue/scheduler.lock      flock: held by the one running scheduler for its whole life
<home>/queue/slots.json          the slot table (GPU indices) the provider last configured
<home>/queue/entries/<id>.json   one waiting job: dir, GPUs asked, non-secret env, enqueue time
<home>/queue/claims/<id>.json    one started job's slots + pid + process start time
<home>/queue/scheduler.log       the scheduler's own console
<job-dir>/launch.json            the started job's handle (pid, start time, GPUs, started_at)
<job-dir>/exit.json              its exit code, written by whoever reaped it (when known)
<job-dir>/cancelled.json         written when a queued job was cancelled before it started
```

A slot is taken while a claim's process is alive (pid AND start, and a command line naming the
job dir; see `desktop.providers.local.process`); a claim whose process is gone is deleted by the
next reader, so a crash never leaks a slot. Secrets are never written here: an entry lists only
the *names* of the environment variables its secrets go into.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from desktop.core.runtime import TrainerRuntime
from desktop.providers.local.process import (
    CREATE_TIME_TOLERANCE_S,
    FileLock,
    ProcessIdentity,
    identity_alive,
    spawn_detached,
)
from desktop.providers.offline import OFFLINE_ENV
from trainer.protocol import StatusFile, write_json_atomic, write_status

__all__ = [
    "CANCELLED_FILE",
    "EXIT_FILE",
    "LAUNCH_FILE",
    "OFFLINE_ENV",
    "ExitRecord",
    "JobQueue",
    "LaunchRecord",
    "QueueEntry",
    "SlotClaim",
    "SlotTable",
    "StartPlan",
    "build_trainer_env",
    "fail_unstartable",
    "plan_starts",
    "read_exit",
    "read_launch",
    "start_entry",
    "trainer_command",
    "write_exit",
]

log = logging.getLogger(__name__)

LAUNCH_FILE = "launch.json"
EXIT_FILE = "exit.json"
CANCELLED_FILE = "cancelled.json"
TRAIN_LOG = "train.log"


class _Record(BaseModel):
    # Files written by another version of the app may hold more fields: ignore them.
    model_config = ConfigDict(extra="ignore", frozen=True)


class QueueEntry(_Record):
    """One job waiting for slots (`queue/entries/<job_id>.json`). Never holds a secret."""

    job_id: str
    job_dir: str
    gpus_requested: int = Field(ge=0)
    python: str
    resume: bool = False
    env: dict[str, str] = Field(default_factory=dict, description="Non-secret extra env.")
    secret_env_names: list[str] = Field(
        default_factory=list, description="Env vars the scheduler fills from the keychain."
    )
    enqueued_at: float
    order: int = Field(description="time.time_ns() at enqueue: FIFO key.")


class SlotClaim(_Record):
    """Slots held by a started job (`queue/claims/<job_id>.json`)."""

    job_id: str
    job_dir: str
    gpus: tuple[int, ...] = ()
    cpu: bool = False
    pid: int
    pid_start_time: float
    pid_start_ticks: int | None = Field(
        default=None, description="Start tick since boot (Linux /proc/<pid>/stat field 22)."
    )
    boot_id: str | None = Field(default=None, description="The boot `pid_start_ticks` counts in.")
    started_at: float

    def identity(self) -> ProcessIdentity:
        """The trainer process's identity."""
        return ProcessIdentity(self.pid, self.pid_start_time, self.pid_start_ticks, self.boot_id)


class LaunchRecord(_Record):
    """A started job's handle (`<job-dir>/launch.json`)."""

    job_id: str
    pid: int
    pid_start_time: float
    pid_start_ticks: int | None = Field(
        default=None, description="Start tick since boot (Linux /proc/<pid>/stat field 22)."
    )
    boot_id: str | None = Field(default=None, description="The boot `pid_start_ticks` counts in.")
    gpus: tuple[int, ...] = ()
    cpu: bool = False
    started_at: float
    queued_at: float | None = None
    command: list[str] = Field(default_factory=list)
    launcher: str = Field(description="'app' (started at launch) or 'scheduler'.")

    def identity(self) -> ProcessIdentity:
        """The trainer process's identity."""
        return ProcessIdentity(self.pid, self.pid_start_time, self.pid_start_ticks, self.boot_id)


class ExitRecord(_Record):
    """How a started job's process ended (`<job-dir>/exit.json`), when its reaper knew."""

    pid: int
    pid_start_time: float
    pid_start_ticks: int | None = Field(
        default=None, description="Start tick since boot (Linux /proc/<pid>/stat field 22)."
    )
    boot_id: str | None = Field(default=None, description="The boot `pid_start_ticks` counts in.")
    exit_code: int
    exited_at: float

    def is_of(self, identity: ProcessIdentity) -> bool:
        """Whether this exit belongs to the process `identity` (not an earlier run's)."""
        if self.pid != identity.pid:
            return False
        if self.pid_start_ticks is not None and identity.start_ticks is not None:
            return self.pid_start_ticks == identity.start_ticks and self.boot_id == identity.boot_id
        return abs(self.pid_start_time - identity.create_time) <= CREATE_TIME_TOLERANCE_S


class SlotTable(_Record):
    """The slots that exist (`queue/slots.json`): GPU indices, plus always one CPU slot."""

    gpus: tuple[int, ...] = ()
    updated_at: float = Field(default_factory=time.time)


class StartPlan(_Record):
    """An entry the queue can start now, with the GPUs it gets."""

    entry: QueueEntry
    gpus: tuple[int, ...] = ()


M = TypeVar("M", bound=BaseModel)


def _read_model(path: Path, model: type[M]) -> M | None:
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError) as exc:
        log.warning("%s: unreadable (%s)", path, str(exc).splitlines()[0] if str(exc) else exc)
        return None


def read_launch(job_dir: Path) -> LaunchRecord | None:
    """`<job-dir>/launch.json`, or None."""
    return _read_model(job_dir / LAUNCH_FILE, LaunchRecord)


def read_exit(job_dir: Path) -> ExitRecord | None:
    """`<job-dir>/exit.json`, or None."""
    return _read_model(job_dir / EXIT_FILE, ExitRecord)


def write_exit(job_dir: Path, identity: ProcessIdentity, exit_code: int) -> None:
    """Record how a reaped trainer ended, for pollers that are not its parent."""
    record = ExitRecord(
        pid=identity.pid,
        pid_start_time=identity.create_time,
        pid_start_ticks=identity.start_ticks,
        boot_id=identity.boot_id,
        exit_code=exit_code,
        exited_at=time.time(),
    )
    with contextlib.suppress(OSError):
        write_json_atomic(job_dir / EXIT_FILE, record.model_dump(mode="json"))


class JobQueue:
    """The queue's files under `<home>/queue/`. Mutations must run inside `with queue.lock():`."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.root = self.home / "queue"
        self.entries_dir = self.root / "entries"
        self.claims_dir = self.root / "claims"
        self.slots_path = self.root / "slots.json"
        self.scheduler_log = self.root / "scheduler.log"
        for folder in (self.entries_dir, self.claims_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def lock(self) -> FileLock:
        """The lock that guards entries and claims (use as a context manager)."""
        return FileLock(self.root / "queue.lock")

    def scheduler_lock(self) -> FileLock:
        """The lock the one running scheduler holds."""
        return FileLock(self.root / "scheduler.lock")

    # -- the slot table ---------------------------------------------------------------------

    def write_slot_table(self, gpus: Sequence[int]) -> None:
        """Record which GPUs exist (the scheduler reads it)."""
        table = SlotTable(gpus=tuple(sorted(set(gpus))))
        write_json_atomic(self.slots_path, table.model_dump(mode="json"))

    def slot_table(self) -> SlotTable:
        """The slot table; one CPU slot and no GPU when none was written."""
        return _read_model(self.slots_path, SlotTable) or SlotTable()

    # -- entries ----------------------------------------------------------------------------

    def _entry_path(self, job_id: str) -> Path:
        return self.entries_dir / f"{job_id}.json"

    def add(self, entry: QueueEntry) -> None:
        """Add a waiting job (atomically)."""
        write_json_atomic(self._entry_path(entry.job_id), entry.model_dump(mode="json"))

    def remove(self, job_id: str) -> bool:
        """Remove a waiting job; False when it was not waiting."""
        try:
            self._entry_path(job_id).unlink()
        except FileNotFoundError:
            return False
        return True

    def has(self, job_id: str) -> bool:
        """Whether the job is waiting in the queue."""
        return self._entry_path(job_id).exists()

    def entries(self) -> list[QueueEntry]:
        """Waiting jobs in FIFO order. An unreadable entry is renamed `*.bad` and skipped."""
        found: list[QueueEntry] = []
        for path in self.entries_dir.glob("*.json"):
            entry = _read_model(path, QueueEntry)
            if entry is None:
                if path.exists():
                    with contextlib.suppress(OSError):
                        path.rename(path.with_suffix(".bad"))
                continue
            found.append(entry)
        found.sort(key=lambda e: (e.order, e.job_id))
        return found

    # -- claims -----------------------------------------------------------------------------

    def claim(self, claim: SlotClaim) -> None:
        """Record that a started job holds its slots."""
        write_json_atomic(self.claims_dir / f"{claim.job_id}.json", claim.model_dump(mode="json"))

    def release(self, job_id: str) -> None:
        """Drop a job's claim (its process is gone)."""
        with contextlib.suppress(FileNotFoundError):
            (self.claims_dir / f"{job_id}.json").unlink()

    def live_claims(self) -> list[SlotClaim]:
        """Claims whose process is still running; dead ones are deleted on the way."""
        live: list[SlotClaim] = []
        for path in self.claims_dir.glob("*.json"):
            claim = _read_model(path, SlotClaim)
            if claim is not None and identity_alive(claim.identity(), claim.job_dir):
                live.append(claim)
                continue
            if claim is None and path.exists():
                # Half-written claims cannot happen (atomic writes); a garbled one frees its slot.
                log.warning("%s: unreadable claim removed", path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return live

    def free_resources(self) -> tuple[list[int], bool]:
        """(free GPU indices, whether the CPU slot is free), from live claims."""
        gpus = set(self.slot_table().gpus)
        cpu_free = True
        for claim in self.live_claims():
            gpus -= set(claim.gpus)
            if claim.cpu:
                cpu_free = False
        return sorted(gpus), cpu_free


def plan_starts(
    entries: Sequence[QueueEntry], free_gpus: Sequence[int], cpu_free: bool
) -> list[StartPlan]:
    """Which waiting jobs start now, FIFO per kind of slot.

    CPU jobs (0 GPUs) share the one CPU slot; GPU jobs take the lowest free indices. A GPU job
    that does not fit yet blocks every later GPU job (no overtaking: a big job is never
    starved by small ones); CPU and GPU jobs do not block each other.
    """
    free = sorted(free_gpus)
    plans: list[StartPlan] = []
    cpu_blocked = not cpu_free
    gpu_blocked = False
    for entry in entries:
        wanted = entry.gpus_requested
        if wanted == 0:
            if not cpu_blocked:
                plans.append(StartPlan(entry=entry))
            cpu_blocked = True
        elif not gpu_blocked and len(free) >= wanted:
            taken, free = free[:wanted], free[wanted:]
            plans.append(StartPlan(entry=entry, gpus=tuple(taken)))
        else:
            gpu_blocked = True
    return plans


def trainer_command(python: str, job_dir: Path, *, resume: bool) -> list[str]:
    """`python -m trainer run --job-dir DIR [--resume]` (the runtime's `argv`)."""
    args = ["--job-dir", str(job_dir), *(["--resume"] if resume else [])]
    return TrainerRuntime(python).argv("run", *args)


def build_trainer_env(
    base: Mapping[str, str],
    extra: Mapping[str, str],
    gpus: Sequence[int],
    secrets: Mapping[str, str],
) -> dict[str, str]:
    """The trainer's environment: `base` + `extra` + CUDA_VISIBLE_DEVICES + secrets.

    Built by `TrainerRuntime.child_env` (the source checkout on PYTHONPATH, the secrets last),
    the one recipe for every trainer child. The offline variables are in `extra`: they were
    decided when the job was queued and recorded in its entry.

    Slot indices are the ones `trainer doctor` saw, i.e. positions within the app's own
    CUDA_VISIBLE_DEVICES when that is set (`2,3` → slot 0 is device 2).
    """
    env = dict(base)
    env.update(extra)
    inherited = [d.strip() for d in base.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = [inherited[g] if g < len(inherited) else str(g) for g in gpus]
    env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    env["PYTHONUNBUFFERED"] = "1"
    return TrainerRuntime().child_env(secrets, base=env)


def start_entry(
    queue: JobQueue,
    plan: StartPlan,
    *,
    launcher: str,
    secrets: Mapping[str, str],
    base_env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], LaunchRecord]:
    """Start a planned entry: spawn the trainer, claim its slots, write launch.json.

    Must run under `queue.lock()`. The entry is removed from the queue.

    Raises:
        OSError: the trainer could not be started (the entry is removed all the same; the
            caller reports the failure).
    """
    entry = plan.entry
    job_dir = Path(entry.job_dir)
    argv = trainer_command(entry.python, job_dir, resume=entry.resume)
    env = build_trainer_env(
        os.environ if base_env is None else base_env, entry.env, plan.gpus, secrets
    )
    queue.remove(entry.job_id)
    log_path = job_dir / TRAIN_LOG
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    devices = ",".join(str(g) for g in plan.gpus) or "none (CPU)"
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(f"[finetune-desk {stamp}] starting: {shlex.join(argv)} (GPUs: {devices})\n")
    popen, identity = spawn_detached(argv, log_path=log_path, env=env, cwd=job_dir)
    now = time.time()
    cpu = entry.gpus_requested == 0
    queue.claim(
        SlotClaim(
            job_id=entry.job_id,
            job_dir=str(job_dir),
            gpus=plan.gpus,
            cpu=cpu,
            pid=popen.pid,
            pid_start_time=identity.create_time,
            pid_start_ticks=identity.start_ticks,
            boot_id=identity.boot_id,
            started_at=now,
        )
    )
    record = LaunchRecord(
        job_id=entry.job_id,
        pid=popen.pid,
        pid_start_time=identity.create_time,
        pid_start_ticks=identity.start_ticks,
        boot_id=identity.boot_id,
        gpus=plan.gpus,
        cpu=cpu,
        started_at=now,
        queued_at=entry.enqueued_at,
        command=argv,
        launcher=launcher,
    )
    write_json_atomic(job_dir / LAUNCH_FILE, record.model_dump(mode="json"))
    return popen, record


def fail_unstartable(job_dir: Path, message: str) -> None:
    """A queued job that can never start: its final word is `failed` with the reason."""
    with contextlib.suppress(OSError):
        with open(job_dir / TRAIN_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"[finetune-desk] {message}\n")
        write_status(job_dir, StatusFile(state="failed", exit_code=1, message=message))
