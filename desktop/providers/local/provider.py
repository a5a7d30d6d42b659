"""`LocalProvider`: runs the trainer on this machine, detached, through a queue of slots.

How it works (the files are described in `desktop.providers.local.queue`):

- **Runtime.** The trainer runs in the `TrainerRuntime` of the provider's context (the
  settings' Python, default the app's own; its offline mode), checked once with its `doctor`
  in a worker thread with a timeout; the answer is cached per interpreter. A broken runtime
  raises `RuntimeNotReadyError`. New settings reach the next launch through `apply_context`;
  jobs already running keep their runtime.
- **Environment and command.** Every trainer child gets `TrainerRuntime.child_env` (source
  checkout on PYTHONPATH, offline variables, secrets) and `TrainerRuntime.argv`: one recipe,
  the app's, for the app and the detached scheduler alike.
- **Slots.** One per GPU (those doctor found, or `SlotConfig.gpus`), plus one CPU slot. A job
  with `gpus_requested == 0` takes the CPU slot, otherwise that many GPUs; it gets
  `CUDA_VISIBLE_DEVICES` set to them ("" for CPU jobs).
- **launch.** Under the queue lock the job is added to the queue; when its slots are free and no
  earlier job waits for the same kind of slot, the app starts it at once (its secrets from
  `env_provider` go only into the child's environment) and claims the slots with the pid and
  process start time. Otherwise it stays queued and the detached scheduler
  (`desktop.providers.local.scheduler`, spawned with the app's Python) starts it later, even
  after the app has exited. The scheduler reads secrets for such jobs from the keychain or
  `FTDESK_<NAME>` itself: only the variable names are written to disk, never a value.
- **The trainer** is `python -m trainer run --job-dir DIR [--resume]` in its own session /
  process group (Windows: CREATE_NEW_PROCESS_GROUP | DETACHED_PROCESS), stdin from /dev/null,
  stdout+stderr appended to DIR/train.log. Its handle goes to DIR/launch.json.
- **poll.** New events (at most 4 MB per poll), the newest status event's state, and liveness
  by pid AND start (exact start tick + boot id on Linux, else wall-clock start time within 2 s)
  AND a command line naming the job dir (a reused pid is not the job; a zombie is dead; a
  stepped wall clock does not make a live trainer look gone). The start tick and boot id travel
  in `ProviderHandle.extra` (`pid_start_ticks`, `boot_id`). Once the process is
  gone: the rest of the events, then status.json's final state and exit code; no status.json
  → `failed: trainer exited without a final status` (+ the exit code when a reaper recorded
  it). A queued job stays `queued` until launch.json appears; then `JobUpdate.handle` carries
  the new handle. A final state is reported only once the trainer has written status.json or
  is gone.
- **cancel.** A queued job is taken out of the queue under the lock and never starts; the next
  poll reports `cancelled` (cancel itself returns nothing). A running job gets SIGTERM to its
  process group (the trainer checkpoints and exits 0 with status cancelled), SIGKILL after
  `cancel_grace_s`; cancel returns when the process is gone. A trainer that had to be killed is
  reported `cancelled` with that reason. Cancelling twice or cancelling a finished job is a
  no-op. (Windows has no SIGTERM for a detached process: the tree is terminated at once.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from desktop.core.errors import ConfigError, ProviderError, RuntimeNotReadyError
from desktop.core.runtime import TrainerRuntime
from desktop.models import Job, JobState, JobUpdate, LogChunk, ProviderHandle, Settings
from desktop.providers.base import Capability, ProviderContext
from desktop.providers.local.logs import append_log_line, read_log
from desktop.providers.local.observe import (
    EXITED_WITHOUT_STATUS,
    observe_started,
    only_if_changed,
)
from desktop.providers.local.process import (
    LockBusy,
    ProcessIdentity,
    identity_alive,
    kill_group,
    spawn_detached,
    terminate_group,
)
from desktop.providers.local.queue import (
    CANCELLED_FILE,
    EXIT_FILE,
    LAUNCH_FILE,
    JobQueue,
    LaunchRecord,
    QueueEntry,
    plan_starts,
    read_exit,
    read_launch,
    start_entry,
    write_exit,
)
from desktop.providers.offline import OFFLINE_ENV
from trainer.protocol import (
    STATUS_FILE,
    read_status,
    write_json_atomic,
)
from trainer.reports import DoctorReport

__all__ = [
    "EXITED_WITHOUT_STATUS",
    "LocalProvider",
    "SlotConfig",
    "build_local_provider",
    "clear_runtime_cache",
]

log = logging.getLogger(__name__)

TRAIN_LOG = "train.log"


@dataclass(frozen=True)
class SlotConfig:
    """Which slots the queue hands out.

    Attributes:
        gpus: GPU indices to use; None takes every GPU `trainer doctor` finds. There is always
            one CPU slot besides.
    """

    gpus: tuple[int, ...] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SlotConfig:
        """`settings.gpu_slots` GPUs (0..n-1), or every GPU doctor finds when it is unset."""
        slots = settings.gpu_slots
        return cls(gpus=None if slots is None else tuple(range(slots)))


# Doctor answers per interpreter: asking costs seconds (torch import), the answer rarely changes.
_RUNTIME_CACHE: dict[str, DoctorReport] = {}
_RUNTIME_CACHE_LOCK = threading.Lock()


def clear_runtime_cache() -> None:
    """Forget every cached doctor answer (after the user installed something)."""
    with _RUNTIME_CACHE_LOCK:
        _RUNTIME_CACHE.clear()


def _handle_from(record: LaunchRecord) -> ProviderHandle:
    extra = {"launcher": record.launcher, **record.identity().extra()}
    if record.queued_at is not None:
        extra["queued_at"] = repr(record.queued_at)
    return ProviderHandle(
        provider="local",
        pid=record.pid,
        pid_start_time=record.pid_start_time,
        gpus=record.gpus,
        launched_at=record.started_at,
        extra=extra,
    )


def _identity_of(handle: ProviderHandle) -> ProcessIdentity:
    """The process identity in a handle; one recorded before start ticks existed has only the
    wall-clock start time (compared with a tolerance, plus the command-line check)."""
    assert handle.pid is not None
    return ProcessIdentity.from_extra(handle.pid, handle.pid_start_time or 0.0, handle.extra)


def scheduler_command(home: Path) -> list[str]:
    """The command that starts the detached scheduler for `home`.

    From source or an install: `python -m desktop.providers.local.scheduler`. A frozen bundle
    has no `-m`: its executable takes the hidden `--scheduler` subcommand (desktop.__main__).
    """
    if getattr(sys, "frozen", False):
        return [sys.executable, "--scheduler", "--home", str(home)]
    return [sys.executable, "-m", "desktop.providers.local.scheduler", "--home", str(home)]


class LocalProvider:
    """Runs jobs on this machine; see the module docstring for the whole picture.

    Args:
        home: the app's data folder; the queue lives in `home/queue/`.
        python: the trainer runtime's interpreter (default: the app's own); ignored when
            `runtime` is given.
        slots: which GPUs to hand out (default: all that doctor finds).
        poll_interval: how often a watcher should poll (seconds); advisory for the JobService.
        cancel_grace_s: how long a cancelled trainer may take to checkpoint before SIGKILL.
        offline: start trainers with the offline environment (`OFFLINE_ENV`); ignored when
            `runtime` is given.
        runtime: the trainer runtime (its Python, offline mode and child environment).
        env_provider: secrets for a job as environment variables (name → value); called at
            launch, values go only into the child's environment.
        doctor_timeout_s: how long `trainer doctor` may take.
        scheduler_argv: how to start the scheduler (default: this Python, `-m
            desktop.providers.local.scheduler`); a frozen app passes its own entry point.
    """

    name = "local"
    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.GPU,
            Capability.MULTI_GPU,
            Capability.QUEUE,
            Capability.OFFLINE,
            Capability.REATTACH,
        }
    )

    def __init__(
        self,
        home: Path,
        python: str | None = None,
        slots: SlotConfig | None = None,
        poll_interval: float = 1.0,
        cancel_grace_s: float = 60.0,
        *,
        offline: bool = False,
        runtime: TrainerRuntime | None = None,
        env_provider: Callable[[Job], Mapping[str, str]] | None = None,
        doctor_timeout_s: float = 180.0,
        scheduler_argv: Sequence[str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.trainer = runtime or TrainerRuntime(python, offline=offline)
        self.slots = slots or SlotConfig()
        self.poll_interval = poll_interval
        self.cancel_grace_s = cancel_grace_s
        self.env_provider = env_provider
        self.doctor_timeout_s = doctor_timeout_s
        self.scheduler_argv = list(scheduler_argv or scheduler_command(self.home))
        self.queue = JobQueue(self.home)
        self._lock = threading.Lock()
        # Trainers and schedulers this process started: reaped here while it lives.
        self._children: dict[str, tuple[subprocess.Popen[bytes], LaunchRecord, Path]] = {}
        self._exit_codes: dict[str, tuple[int, int]] = {}  # job id → (pid, exit code)
        self._schedulers: list[subprocess.Popen[bytes]] = []

    @classmethod
    def from_context(cls, context: ProviderContext) -> LocalProvider:
        """The local provider the app's settings describe (the registered factory)."""
        provider = cls(context.home)
        provider.apply_context(context)
        return provider

    def apply_context(self, context: ProviderContext) -> None:
        """Launch with the context's runtime, slots, secrets and grace from now on.

        Jobs already running keep the runtime they started with and stay watched: the
        children this provider started are still reaped here.
        """
        settings = context.settings
        self.trainer = context.runtime
        self.slots = SlotConfig.from_settings(settings)
        self.poll_interval = settings.poll_interval_s
        self.cancel_grace_s = settings.cancel_grace_s
        self.env_provider = context.secrets

    @property
    def python(self) -> str:
        """The interpreter the next launch runs the trainer with."""
        return self.trainer.python

    @property
    def offline(self) -> bool:
        """Whether the next launch gets the offline environment."""
        return self.trainer.offline

    # -- runtime ----------------------------------------------------------------------------

    async def doctor(
        self, *, refresh: bool = False, runtime: TrainerRuntime | None = None
    ) -> DoctorReport:
        """The trainer runtime as its doctor describes it (cached per interpreter).

        Raises:
            RuntimeNotReadyError: missing interpreter, no trainer, doctor not ok; with the
                problems and what to do.
        """
        trainer = runtime or self.trainer
        with _RUNTIME_CACHE_LOCK:
            cached = None if refresh else _RUNTIME_CACHE.get(trainer.python)
        if cached is not None:
            return cached
        report = await asyncio.to_thread(trainer.doctor, timeout_s=self.doctor_timeout_s)
        if not report.ok:
            raise RuntimeNotReadyError(trainer.not_ready_sentence(report))
        with _RUNTIME_CACHE_LOCK:
            _RUNTIME_CACHE[trainer.python] = report
        return report

    async def gpu_slots(self, *, runtime: TrainerRuntime | None = None) -> tuple[int, ...]:
        """The GPU indices the queue hands out."""
        if self.slots.gpus is not None:
            return tuple(self.slots.gpus)
        report = await self.doctor(runtime=runtime)
        return tuple(g.index for g in report.gpus)

    async def aclose(self) -> None:
        """Nothing to release: trainers and the scheduler run on without the app."""
        return None

    # -- launch -----------------------------------------------------------------------------

    async def launch(self, job: Job) -> ProviderHandle:
        """Start the job now when its slots are free, else queue it (see the module docstring).

        Returns a handle with the pid when it started, or one without a pid while queued.

        Raises:
            ConfigError: the dataset is a URL (only a RunPod pod fetches one).
            RuntimeNotReadyError: the trainer runtime is not usable.
            ProviderError: the job dir has no config.json, the machine has fewer GPUs than the
                job asks for, or the trainer could not be started.
        """
        data = job.config.dataset
        if "://" in data.path or "://" in (data.eval_path or ""):
            raise ConfigError(
                "dataset.path: a dataset URL is fetched only by RunPod pods; download the file "
                "and give its path to train here"
            )
        trainer = self.trainer  # settings applied meanwhile are for the next launch
        await self.doctor(runtime=trainer)
        gpus = await self.gpu_slots(runtime=trainer)
        if job.gpus_requested > len(gpus):
            raise ProviderError(
                f"job {job.id} asks for {job.gpus_requested} GPU(s) but this machine offers "
                f"{len(gpus)} ({', '.join(map(str, gpus)) or 'none'}); lower hardware.num_gpus "
                "or train on the CPU"
            )
        secrets: Mapping[str, str] = {}
        if self.env_provider is not None:
            secrets = await asyncio.to_thread(self.env_provider, job)
        return await asyncio.to_thread(self._launch_sync, job, trainer, gpus, dict(secrets))

    def _launch_sync(
        self, job: Job, trainer: TrainerRuntime, gpus: tuple[int, ...], secrets: dict[str, str]
    ) -> ProviderHandle:
        job_dir = Path(job.job_dir).resolve()
        if not (job_dir / "config.json").is_file():
            raise ProviderError(f"job {job.id}: {job_dir / 'config.json'} does not exist")
        self._clear_previous_run(job_dir)
        now_ns = time.time_ns()
        entry = QueueEntry(
            job_id=job.id,
            job_dir=str(job_dir),
            gpus_requested=job.gpus_requested,
            python=trainer.interpreter(),  # a venv folder means its Python
            resume=job.resume,
            # Recorded for the scheduler, which may start the job after this app has exited.
            env=dict(OFFLINE_ENV) if trainer.offline else {},
            secret_env_names=sorted(secrets),
            enqueued_at=now_ns / 1e9,
            order=now_ns,
        )
        record: LaunchRecord | None = None
        with self.queue.lock():
            self.queue.write_slot_table(gpus)
            self.queue.add(entry)
            free_gpus, cpu_free = self.queue.free_resources()
            plans = plan_starts(self.queue.entries(), free_gpus, cpu_free)
            mine = [p for p in plans if p.entry.job_id == job.id]
            if mine:
                try:
                    popen, record = start_entry(
                        self.queue, mine[0], launcher="app", secrets=secrets
                    )
                except OSError as exc:
                    self.queue.remove(job.id)
                    raise ProviderError(
                        f"job {job.id}: could not start the trainer with {trainer.python}: {exc}"
                    ) from None
                with self._lock:
                    self._children[job.id] = (popen, record, job_dir)
                    self._exit_codes.pop(job.id, None)
            waiting = bool(self.queue.entries())
        if waiting:
            self._ensure_scheduler()
        if record is not None:
            return _handle_from(record)
        return ProviderHandle(provider="local", extra={"queued_at": repr(entry.enqueued_at)})

    @staticmethod
    def _clear_previous_run(job_dir: Path) -> None:
        """A relaunch (resume) must not be judged by the last run's files."""
        for name in (LAUNCH_FILE, EXIT_FILE, CANCELLED_FILE):
            with contextlib.suppress(FileNotFoundError):
                (job_dir / name).unlink()
        status = job_dir / STATUS_FILE
        if status.exists():
            os.replace(status, job_dir / "status.previous.json")

    def _ensure_scheduler(self) -> None:
        """Spawn the scheduler unless one runs (it holds the scheduler lock); never raises."""
        probe = self.queue.scheduler_lock()
        try:
            probe.acquire(blocking=False)
        except LockBusy:
            return
        probe.release()
        try:
            popen, _identity = spawn_detached(
                self.scheduler_argv,
                log_path=self.queue.scheduler_log,
                env=TrainerRuntime().child_env(),  # the app's Python, finding `desktop` too
                cwd=self.home,
            )
        except OSError as exc:
            # The job stays queued; the next poll tries again.
            log.warning(
                "could not start the local queue scheduler %s: %s", self.scheduler_argv, exc
            )
            return
        with self._lock:
            self._schedulers.append(popen)

    def _reap(self) -> None:
        """Collect exit codes of children this process started (and clear their zombies)."""
        with self._lock:
            for job_id, (popen, record, job_dir) in list(self._children.items()):
                code = popen.poll()
                if code is None:
                    continue
                del self._children[job_id]
                self._exit_codes[job_id] = (record.pid, code)
                write_exit(job_dir, record.identity(), code)
            self._schedulers = [p for p in self._schedulers if p.poll() is None]

    def _exit_code(self, job_id: str, job_dir: Path, identity: ProcessIdentity) -> int | None:
        """The exit code of a trainer that is gone, when its reaper knows it.

        A killed multi-threaded process shows as a zombie a moment before its parent can reap
        it, so this waits briefly: for our own child (up to 5 s), or for the scheduler's
        exit.json (up to 2 s) when the scheduler started the job and still runs.
        """
        with self._lock:
            known = self._exit_codes.get(job_id)
            child = self._children.get(job_id)
        pid = identity.pid
        if known is not None and known[0] == pid:
            return known[1]
        if child is not None and child[1].pid == pid:
            popen, record, _ = child
            try:
                code = popen.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                return None
            with self._lock:
                self._children.pop(job_id, None)
                self._exit_codes[job_id] = (pid, code)
            write_exit(job_dir, record.identity(), code)
            return code
        deadline = time.monotonic() + 2.0
        while True:
            record_ = read_exit(job_dir)
            if record_ is not None and record_.is_of(identity):
                return record_.exit_code
            launch = read_launch(job_dir)
            by_scheduler = launch is not None and launch.launcher == "scheduler"
            if not by_scheduler or time.monotonic() >= deadline or not self._scheduler_running():
                return None
            time.sleep(0.1)

    # -- poll -------------------------------------------------------------------------------

    async def poll(self, job: Job) -> JobUpdate:
        """What happened since `job.events_offset`; see the module docstring."""
        return await asyncio.to_thread(self._poll_sync, job)

    def _poll_sync(self, job: Job) -> JobUpdate:
        self._reap()
        job_dir = Path(job.job_dir).resolve()
        record = read_launch(job_dir)
        if record is None and (job.handle is None or job.handle.pid is None):
            # Under the lock: a start moves a job from the queue to launch.json atomically.
            with self.queue.lock():
                queued = self.queue.has(job.id)
                record = None if queued else read_launch(job_dir)
            if queued:
                if not self._scheduler_running():
                    self._ensure_scheduler()  # it died or was never started: the queue must move
                return JobUpdate(state=only_if_changed(job, JobState.QUEUED))
            if record is None:
                return self._never_started(job, job_dir)
        handle_update: ProviderHandle | None = None
        if record is not None:
            identity = record.identity()
            old = job.handle
            if old is None or old.pid is None or _identity_of(old) != identity:
                handle_update = _handle_from(record)
        else:
            assert job.handle is not None and job.handle.pid is not None
            identity = _identity_of(job.handle)
        return self._watch(job, job_dir, identity, handle_update)

    def _scheduler_running(self) -> bool:
        probe = self.queue.scheduler_lock()
        try:
            probe.acquire(blocking=False)
        except LockBusy:
            return True
        probe.release()
        return False

    def _never_started(self, job: Job, job_dir: Path) -> JobUpdate:
        if (job_dir / CANCELLED_FILE).exists():
            return JobUpdate(
                state=only_if_changed(job, JobState.CANCELLED), reason="cancelled while queued"
            )
        status = read_status(job_dir)
        if status is not None and status.state in ("failed", "cancelled", "completed"):
            # The scheduler could not start it and wrote why.
            return JobUpdate(
                state=only_if_changed(job, JobState(status.state)),
                reason=status.message,
                exit_code=status.exit_code,
            )
        return JobUpdate(
            state=only_if_changed(job, JobState.FAILED),
            reason="the job is neither queued nor started (its queue entry is gone)",
        )

    def _watch(
        self,
        job: Job,
        job_dir: Path,
        identity: ProcessIdentity,
        handle_update: ProviderHandle | None,
    ) -> JobUpdate:
        return observe_started(
            job,
            job_dir,
            identity,
            handle_update,
            exit_code=lambda: self._exit_code(job.id, job_dir, identity),
        )

    # -- cancel -----------------------------------------------------------------------------

    async def cancel(self, job: Job) -> None:
        """Cancel a queued or running job (idempotent); see the module docstring."""
        await asyncio.to_thread(self._cancel_sync, job)

    def _cancel_sync(self, job: Job) -> None:
        job_dir = Path(job.job_dir).resolve()
        with self.queue.lock():
            if self.queue.remove(job.id):
                write_json_atomic(
                    job_dir / CANCELLED_FILE, {"cancelled_at": time.time(), "while": "queued"}
                )
                record = read_launch(job_dir)
                # A queue entry never hides a trainer that runs for this job: stop that too.
                if record is None or not identity_alive(record.identity(), job_dir):
                    return
        record = read_launch(job_dir)
        if record is not None:
            identity = record.identity()
        elif job.handle is not None and job.handle.pid is not None:
            identity = _identity_of(job.handle)
        else:
            return  # neither queued nor started: nothing to stop
        self._reap()
        if not identity_alive(identity, job_dir):
            return
        pid = identity.pid
        if not (job_dir / CANCELLED_FILE).exists():
            write_json_atomic(
                job_dir / CANCELLED_FILE, {"cancelled_at": time.time(), "while": "running"}
            )
        append_log_line(job_dir / TRAIN_LOG, f"cancel requested: SIGTERM to process group {pid}")
        terminate_group(identity, job_dir)
        if self._wait_gone(identity, job_dir, self.cancel_grace_s):
            return
        append_log_line(job_dir / TRAIN_LOG, f"no exit within {self.cancel_grace_s:.0f} s: SIGKILL")
        kill_group(identity, job_dir)
        self._wait_gone(identity, job_dir, 10.0)

    def _wait_gone(self, identity: ProcessIdentity, job_dir: Path, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._reap()
            if not identity_alive(identity, job_dir):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    # -- logs, artifacts --------------------------------------------------------------------

    async def logs(self, job: Job, since: int) -> LogChunk:
        """train.log from byte `since` (at most 1 MB per call); resume with `next_offset`."""
        return await asyncio.to_thread(read_log, Path(job.job_dir) / TRAIN_LOG, since)

    async def fetch_artifacts(self, job: Job, dest: Path) -> None:
        """No-op: a local job's output already is on this machine (`<job-dir>/output/`)."""
        return None

    def queue_position(self, job_id: str) -> int | None:
        """0-based place of a waiting job in the FIFO queue; None when it is not waiting."""
        for index, entry in enumerate(self.queue.entries()):
            if entry.job_id == job_id:
                return index
        return None


def build_local_provider(context: ProviderContext) -> LocalProvider:
    """The factory registered as "local": a `LocalProvider` for the context's settings."""
    return LocalProvider.from_context(context)
