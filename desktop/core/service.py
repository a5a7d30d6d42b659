"""The job service: launch, watch, cancel, resume and forget training jobs (Qt-free, asyncio).

One `JobService` serves the CLI and the window: the use-cases. It checks a config before
anything is spent (`checks`), writes the job directory (`job_dirs`), hands the job to a provider
built from the registry on first use (`provider_pool`) and then watches it with one tracked
polling task per active job (`watch.JobWatcher`); each poll's findings are stored by `ingest` in
a worker thread, so a watcher that dies at any moment loses nothing and counts nothing twice
when it comes back. Listeners hear of every change once (`job_events.JobEvents`).

It never reports a state it did not observe: states come from the trainer's status events and
from what the provider saw (a process that is gone, a `status.json`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import shutil
from collections.abc import Callable, Mapping
from contextlib import suppress
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from desktop.core.checks import (
    check_datasets,
    check_offline,
    check_paths,
    gpus_requested,
    resolve_config,
)
from desktop.core.errors import (
    FtdeskError,
    JobStateError,
    OfflineError,
    ProviderError,
    is_disk_full,
)
from desktop.core.job_dirs import create_job_dir, hold_job_lock, resume_point
from desktop.core.job_events import JobEvents
from desktop.core.provenance_check import check_resume
from desktop.core.provider_pool import ProviderPool, import_provider
from desktop.core.runtime import TrainerRuntime
from desktop.core.store import JobStore
from desktop.core.tasks import BugHandler, TaskRunner, print_bug
from desktop.core.watch import JobWatcher
from desktop.models import (
    Job,
    JobListener,
    JobState,
    LogChunk,
    SeriesColumns,
    Settings,
    data_home,
    metric_columns,
)
from desktop.providers.base import Capability, Provider
from trainer.checkpoint_check import ResumePoint
from trainer.config import TrainingConfig
from trainer.reports import DataReport

if TYPE_CHECKING:
    from desktop.core.secrets import SecretStore

__all__ = ["JobService"]

log = logging.getLogger(__name__)

SCREEN_POINTS = 20_000
"""Points per series a chart is handed from history: ten times a wide screen's pixel columns,
so zooming in still shows detail; longer histories are downsampled in SQL."""


# How long a watcher retries while the disk is full (see JobService's disk_full_give_up_s).
DISK_FULL_GIVE_UP_S = 30.0


class JobService:
    """Launches and watches jobs; the one place the app changes a job.

    Store reads and writes of the async methods, poll parsing and metric columns run in worker
    threads; listeners are called on the event loop's thread, in order. `get` and `jobs` are
    the blocking reads for callers that are not on the loop (the CLI, tests).

    Args:
        store: the job store (default: the one under `data_home()`).
        settings: trainer runtime, slots, poll interval, offline default.
        offline: overrides `settings.offline`.
        providers: ready provider instances by name (tests, or a caller that built them);
            others are built from the registry on first use.
        runner: the task runner for the polling tasks (default: a new one).
        secret_store: the secret store whose values reach trainers as environment variables
            (default: one is created on first launch).
        check_timeout_s: limit for the dataset check.
        on_error: called with a message for failures of background work (a watcher that broke).
        on_bug: called with a summary and the exception when a listener raises (a bug): the
            window shows its traceback dialog; default: printed with the traceback on stderr.
        disk_full_give_up_s: how long a watcher keeps retrying while the disk is full before it
            stops, says why, and records the job in `abandoned` (job id -> that sentence);
            default: never (the window keeps watching and catches up once space is freed; the
            CLI's followers pass `DISK_FULL_GIVE_UP_S`).
    """

    def __init__(
        self,
        store: JobStore | None = None,
        *,
        settings: Settings | None = None,
        offline: bool | None = None,
        providers: Mapping[str, Provider] | None = None,
        runner: TaskRunner | None = None,
        secret_store: SecretStore | None = None,
        check_timeout_s: float = 300.0,
        on_error: Callable[[str], None] | None = None,
        on_bug: BugHandler | None = None,
        disk_full_give_up_s: float = math.inf,
    ) -> None:
        self._settings = settings or Settings()
        self._offline = self._settings.offline if offline is None else offline
        self._runtime = TrainerRuntime.from_settings(self._settings, offline=self._offline)
        self._owns_store = store is None
        self.store: JobStore = store if store is not None else JobStore()
        self._pool = ProviderPool(
            providers, settings=self._settings, runtime=self._runtime, secret_store=secret_store
        )
        self._runner = runner or TaskRunner()
        self._runner.set_failure_handler(self._on_task_failed)
        self._check_timeout_s = check_timeout_s
        self._on_error = on_error
        self._events = JobEvents(on_bug or print_bug)
        self._watcher = JobWatcher(
            self.store,
            self._events,
            self._runner,
            provider=self.provider,
            poll_interval_s=lambda: self._settings.poll_interval_s,
            report=self._report,
            disk_full_give_up_s=disk_full_give_up_s,
        )

    @property
    def abandoned(self) -> dict[str, str]:
        """Jobs whose watcher gave up on a full disk: job id -> the sentence that said so."""
        return self._watcher.abandoned

    # -- settings -----------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in force (change them with `apply_settings`)."""
        return self._settings

    @property
    def offline(self) -> bool:
        """Whether offline mode is on (change it with `apply_settings`)."""
        return self._offline

    @property
    def runtime(self) -> TrainerRuntime:
        """The trainer runtime of the current settings and offline mode."""
        return self._runtime

    def apply_settings(self, settings: Settings, *, offline: bool | None = None) -> None:
        """Use `settings` (and `offline`, default `settings.offline`) from the next launch on.

        Every provider built so far is told the new context (trainer Python, offline mode,
        slots, poll interval, cancel grace); jobs that are running keep running and keep being
        watched.
        """
        self._settings = settings
        self._offline = settings.offline if offline is None else offline
        self._runtime = TrainerRuntime.from_settings(settings, offline=self._offline)
        self._pool.apply(settings, self._runtime)

    # -- listeners ----------------------------------------------------------------------------

    def add_listener(self, listener: JobListener) -> None:
        """Tell `listener` about every job added, changed or removed from now on."""
        self._events.add_listener(listener)

    def remove_listener(self, listener: JobListener) -> None:
        """Stop telling `listener`."""
        self._events.remove_listener(listener)

    # -- queries ------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The stored job with this id or unique id prefix (raises JobNotFoundError)."""
        return self.store.get_job(job_id)

    def jobs(self, states: set[JobState] | None = None) -> list[Job]:
        """Stored jobs (all, or those in `states`)."""
        return self.store.list_jobs(states=states)

    async def _get(self, job_id: str) -> Job:
        return await asyncio.to_thread(self.store.get_job, job_id)

    def queue_position(self, job: Job) -> int | None:
        """0-based place of a waiting job in its provider's queue; None: not waiting, or its
        provider has no queue (`Capability.QUEUE`)."""
        backend = self.provider(job.provider)
        if job.state is not JobState.QUEUED or Capability.QUEUE not in backend.capabilities:
            return None
        return backend.queue_position(job.id)

    def is_watching(self, job_id: str) -> bool:
        """Whether a polling task is running for the job."""
        return self._watcher.is_watching(job_id)

    # -- providers ----------------------------------------------------------------------------

    def provider(self, name: str) -> Provider:
        """The provider instance for `name`, built from the registry on first use.

        Raises:
            ConfigError: no such provider.
            OfflineError: the provider needs the network and offline mode is on.
        """
        backend = self._pool.get(name)
        if self._offline and Capability.OFFLINE not in backend.capabilities:
            raise OfflineError(f"offline mode: provider {name!r} needs the network; use 'local'")
        return backend

    def trainer_env(self, job: Job) -> dict[str, str]:
        """The secrets a job's trainer gets, as environment variables (`{"HF_TOKEN": ...}`).

        Called by the provider in a worker thread at launch; see `job_secrets.secrets_for_job`.
        """
        return self._pool.trainer_env(job)

    # -- validation ---------------------------------------------------------------------------

    async def validate(
        self, config: str | Path | TrainingConfig
    ) -> tuple[TrainingConfig, list[DataReport]]:
        """Every check `launch` makes, without launching: schema, files, offline rules, data.

        Raises:
            ConfigError, DatasetError, OfflineError, RuntimeNotReadyError: naming what is wrong.
        """
        cfg = resolve_config(config)
        check_paths(cfg)
        if self._offline:
            check_offline(cfg)
        reports = await asyncio.to_thread(
            check_datasets, cfg, self._runtime, timeout_s=self._check_timeout_s
        )
        return cfg, reports

    # -- operations ---------------------------------------------------------------------------

    async def launch(
        self,
        config: str | Path | TrainingConfig,
        provider: str = "local",
        name: str | None = None,
    ) -> Job:
        """Check the config and data, create the job and hand it to the provider.

        Nothing is spent before the checks pass. The job is watched until it ends (call
        `close()` to stop watching; the trainer keeps running).

        Raises:
            ConfigError, DatasetError, OfflineError, RuntimeNotReadyError: the checks failed.
            ProviderError: the provider could not take the job (the job is stored as failed).
        """
        cfg, _ = await self.validate(config)
        backend = self.provider(provider)
        gpus = await gpus_requested(cfg, backend)

        def create() -> Job:
            job_id, job_dir = create_job_dir(data_home() / "jobs")
            try:
                (job_dir / "config.json").write_text(cfg.to_json(), encoding="utf-8")
                job = Job(
                    id=job_id,
                    name=name or cfg.name,
                    provider=provider,
                    config=cfg,
                    job_dir=job_dir,
                    gpus_requested=gpus,
                )
                self.store.add_job(job, "created")
            except BaseException:
                # A folder the store never heard of would be an orphan (a read-only database).
                shutil.rmtree(job_dir, ignore_errors=True)
                raise
            return self.store.get_job(job_id)

        job = await asyncio.to_thread(create)
        self._events.added(job)
        await self._hand_to_provider(job, backend, "launch")
        job = await self._get(job.id)
        self._watcher.watch(job)
        return job

    async def _hand_to_provider(self, job: Job, backend: Provider, what: str) -> None:
        try:
            handle = await backend.launch(job)
        except Exception as exc:
            failed = await asyncio.to_thread(
                self.store.transition, job, JobState.FAILED, f"{what} failed: {exc}"
            )
            self._events.changed(failed)
            if isinstance(exc, FtdeskError):
                raise
            raise ProviderError(
                f"job {job.id}: the {job.provider} provider could not {what} it: {exc}"
            ) from exc

        def save() -> Job:
            # The save is compare-and-set on the state: a watcher in another process may move
            # the job between the read and the write; read again rather than undo its change.
            for attempt in range(5):
                update: dict[str, Any] = {"handle": handle}
                if "budget_usd" in handle.extra:  # a billed provider's limit, for the $ column
                    update["budget_usd"] = Decimal(handle.extra["budget_usd"])
                stored = self.store.get_job(job.id).model_copy(update=update)
                try:
                    self.store.save_job(stored)
                    break
                except JobStateError:
                    if attempt == 4:
                        raise
            return self.store.get_job(job.id)

        self._events.changed(await asyncio.to_thread(save))

    async def cancel(self, job_id: str) -> Job:
        """Ask the provider to stop the job (idempotent). The state changes when it is observed.

        Raises:
            JobStateError: the job has already ended.
        """
        job = await self._get(job_id)
        # Under the job's lock, read again: a resume running in another process finishes
        # first, and this cancel then reaches the trainer that resume started.
        async with hold_job_lock(job.job_dir, wait_s=_CANCEL_LOCK_WAIT_S) as held:
            if not held:
                raise JobStateError(
                    f"job {job.id}: another finetune-desk command has held it for over "
                    f"{_CANCEL_LOCK_WAIT_S:g} s; try again, or see: finetune-desk show {job.id}"
                )
            job = await self._get(job.id)
            if job.is_final:
                raise JobStateError(f"job {job.id} has already ended ({job.state.value})")
            await self.provider(job.provider).cancel(job)
        if not self.is_watching(job.id):
            self._watcher.watch(job)
        return await self._get(job.id)

    async def resume(
        self,
        job_id: str,
        *,
        force: bool = False,
        on_note: Callable[[str], None] | None = None,
    ) -> Job:
        """Queue a cancelled or failed job again from its last checkpoint, in the same job dir.

        Its metrics continue in the same series. The job's lock (`job_dirs.job_lock`) is held
        throughout, and the store's transition is compare-and-set: of several resumes at once
        (any processes) exactly one hands the job to its provider. A job whose data, model or
        trainer packages changed since its last attempt is refused unless `force`
        (`provenance_check`); the history's reason says what a forced resume continued over,
        and `on_note` hears what the check said (a job without provenance, the changes forced).

        Raises:
            JobStateError: the job is not cancelled/failed, has no checkpoint, or another
                command is resuming it already ("already resuming").
            ProvenanceChangedError: what the job trained on changed, and not `force`.
            DatasetError: the job's dataset is gone.
        """
        job = await self._get(job_id)
        # One resume at a time per job, across processes: the others are told at once.
        async with hold_job_lock(job.job_dir, wait_s=0.0) as held:
            if not held:
                raise JobStateError(
                    f"job {job.id}: already resuming (or being cancelled) in another "
                    f"finetune-desk command; see: finetune-desk show {job.id}"
                )
            job = await self._resume_locked(job.id, force, on_note)
        self._watcher.watch(job)
        return job

    async def _resume_locked(
        self, job_id: str, force: bool = False, on_note: Callable[[str], None] | None = None
    ) -> Job:
        job = await self._get(job_id)  # what another process may have done before the lock
        if not job.is_final:
            raise JobStateError(
                f"job {job.id}: already resuming ({job.state.value}); see: finetune-desk show "
                f"{job.id}"
            )
        if job.state not in (JobState.CANCELLED, JobState.FAILED):
            raise JobStateError(
                f"job {job.id} is {job.state.value}; only a cancelled or failed job can be resumed"
            )
        point = await asyncio.to_thread(resume_point, job.job_dir)
        if point.path is None:
            damaged = f" ({point.describe()})" if point.skipped else ""
            raise JobStateError(
                f"job {job.id} has no checkpoint to resume from{damaged}; start it again with "
                "finetune-desk run CONFIG"
            )
        backend = self.provider(job.provider)
        if self._offline:
            check_offline(job.config)
        verdict = await asyncio.to_thread(check_resume, job, self._runtime, force=force)
        reason = f"resume from {point.describe()}" + (
            f"; {verdict.history}" if verdict.history else ""
        )
        # A fresh attempt: nothing of the last one's handle, exit or end carries over.
        fresh: dict[str, Any] = {"handle": None, "exit_code": None, "finished_at": None}
        queue = functools.partial(self.store.transition, resume=True, eta_seconds=None, **fresh)
        try:
            job = await asyncio.to_thread(queue, job, JobState.QUEUED, reason)
        except JobStateError:
            # The store's compare-and-set: another process moved the job first.
            raise JobStateError(
                f"job {job.id}: already resuming in another finetune-desk command; see: "
                f"finetune-desk show {job.id}"
            ) from None
        self._events.changed(job)
        if verdict.said and on_note is not None:
            on_note(verdict.said)
        await self._hand_to_provider(job, backend, "resume")
        return await self._get(job.id)

    async def resume_point(self, job_id: str) -> ResumePoint | None:
        """Where `resume(job_id)` would continue and which newer checkpoints it would skip
        (see `job_dirs.resume_point`); None for a job that cannot be resumed (not cancelled or
        failed). Reads the checkpoint's files, in a worker thread."""
        job = await self._get(job_id)
        if job.state not in (JobState.CANCELLED, JobState.FAILED):
            return None
        return await asyncio.to_thread(resume_point, job.job_dir)

    async def delete(self, job_id: str, delete_files: bool) -> None:
        """Forget a job that has ended; with `delete_files`, its job directory too.

        The caller asks the person before passing `delete_files=True`.

        Raises:
            JobStateError: the job is still active (cancel it first).
        """
        job = await self._get(job_id)
        if not job.is_final:
            raise JobStateError(f"job {job.id} is {job.state.value}; cancel it before deleting it")
        self._watcher.stop(job.id)
        await asyncio.to_thread(self.store.delete_job, job.id)
        # Only a folder that is a job dir (it holds the job's config.json) is ever removed.
        if delete_files and (job.job_dir / "config.json").is_file():
            await asyncio.to_thread(shutil.rmtree, job.job_dir)
        self._events.removed(job.id)

    async def logs(self, job_id: str, since: int = 0) -> LogChunk:
        """The job's console output (`train.log`) from byte `since`, read by its provider."""
        job = await self._get(job_id)
        if not self._pool.is_built(job.provider):
            # The first log shown (a finished job clicked) imports the provider's package:
            # a worker thread's business, not the window's.
            await asyncio.to_thread(import_provider, job.provider)
        return await self.provider(job.provider).logs(job, since)

    def series_columns(self, job_id: str) -> dict[str, SeriesColumns]:
        """One job's stored series for a chart, each at most `SCREEN_POINTS` long (its minima,
        maxima and ends kept). Blocking: the window calls it in a worker thread when the job is
        selected, so history is read for what is looked at, never all at start."""
        return self.store.series_columns(job_id, SCREEN_POINTS)

    def export_metrics_csv(self, job_id: str, out: TextIO) -> int:
        """Write the job's metrics as CSV (one row per step); returns the number of rows."""
        job = self.get(job_id)
        return self.store.export_metrics_csv(job.id, out)

    async def start(self, *, with_history: bool = False) -> list[Job]:
        """Load every job and reattach to those that have not ended.

        A trainer still alive is watched again; one that is gone is settled by what it left
        (`status.json` → that final state; nothing → failed). A job of a provider without
        `Capability.REATTACH` is not watched again. Returns the stored jobs.

        Args:
            with_history: also hand listeners every stored metric point (read and turned into
                columns in a worker thread) before any watcher starts, so charts rebuild in
                step order.
        """
        store = self.store
        jobs = await asyncio.to_thread(self.jobs)
        for job in jobs:
            self._events.added(job)
        if with_history:
            history = await asyncio.to_thread(
                lambda: [(j.id, metric_columns(store.metrics(j.id))) for j in jobs]
            )
            for job_id, columns in history:
                if columns:
                    self._events.emit("metrics_added", job_id, columns)
        for job in jobs:
            if job.is_final:
                continue
            try:
                if Capability.REATTACH in self.provider(job.provider).capabilities:
                    self._watcher.watch(job)
                else:
                    log.info("job %s: its provider cannot reattach; not watched", job.id)
            except FtdeskError as exc:
                log.warning("cannot reattach job %s: %s", job.id, exc)
                self._report(f"job {job.id}: {exc}")
        if all(job.is_final for job in jobs):  # nothing moved: skip reading them all again
            return jobs
        return await asyncio.to_thread(self.jobs)

    async def refresh(self, job_id: str | None = None) -> list[Job]:
        """Poll active jobs once (all, or one) and store what they did. For the CLI's reads."""
        if job_id is not None:
            targets = [await self._get(job_id)]  # "" is refused there, never "every job"
        else:
            targets = await asyncio.to_thread(self.jobs)
        out = []
        for job in targets:
            if not job.is_final and not self.is_watching(job.id):
                try:
                    job = await self.poll_once(job.id)
                except (FtdeskError, OSError) as exc:
                    if not is_disk_full(exc):
                        raise
                    # A read answers from what was stored, and says what it could not save.
                    self._report(f"job {job.id}: could not save its new progress: {exc}")
                    job = await self._get(job.id)
            out.append(job)
        return out

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Watch the job until it ends (or `timeout` seconds pass); returns its snapshot."""
        job = await self._get(job_id)
        if job.is_final:
            return job
        if not self.is_watching(job.id):
            self._watcher.watch(job)
        with suppress(TimeoutError):
            await asyncio.wait_for(self._watcher.wait(job.id), timeout)
        return await self._get(job.id)

    async def close(self) -> None:
        """Stop watching. Trainers keep running; `start()` (here or in the next app) reattaches."""
        await self._runner.cancel_all()
        if self._owns_store:
            self.store.close()
        await self._pool.aclose()

    # -- watching -----------------------------------------------------------------------------

    async def poll_once(self, job_id: str) -> Job:
        """Poll the job's provider once and store what it saw; returns the new snapshot.

        When another process is ingesting this job right now, this one only reads the store.
        The parsing and the store writes run in a worker thread (see `watch.JobWatcher`).
        """
        return await self._watcher.poll_once(job_id)

    def _on_task_failed(self, name: str, exc: BaseException) -> None:
        self._report(f"{name} stopped: {exc}")

    def _report(self, message: str) -> None:
        if self._on_error is not None:
            self._on_error(message)


# A cancel waits this long for a resume in another process (its trainer runtime check may
# take a while on a cold machine) before it gives up.
_CANCEL_LOCK_WAIT_S = 300.0
