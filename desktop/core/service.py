"""The job service: launch, watch, cancel, resume and forget training jobs (Qt-free, asyncio).

One `JobService` serves the CLI and the window. It checks a config before anything is spent
(schema, files on disk, offline rules, the dataset itself through the trainer runtime), writes
the job directory, hands the job to a provider and then watches it with one tracked polling
task per active job: each poll's events become stored metric points, snapshot fields and state
transitions, written in one store transaction together with the new event offsets, so a watcher
that dies at any moment loses nothing and counts nothing twice when it comes back.

It never reports a state it did not observe: states come from the trainer's status events and
from what the provider saw (a process that is gone, a `status.json`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets as _random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from desktop.core.errors import (
    ConfigError,
    DatasetError,
    FtdeskError,
    JobNotFoundError,
    JobStateError,
    OfflineError,
    ProviderError,
    RuntimeNotReadyError,
)
from desktop.core.redaction import redact
from desktop.core.tasks import TaskRunner
from desktop.models import (
    Job,
    JobListener,
    JobState,
    JobUpdate,
    MetricPoint,
    Settings,
    can_transition,
    data_home,
    metric_columns,
)
from desktop.providers.offline import OFFLINE_ENV
from trainer.config import (
    ConfigFileError,
    TrainingConfig,
    format_validation_error,
    load_config,
    looks_like_local_path,
)
from trainer.protocol import (
    ArtifactEvent,
    ErrorEvent,
    MetricEvent,
    ProgressEvent,
    StatusEvent,
    latest_complete_checkpoint,
    read_status,
)

__all__ = [
    "DatasetReport",
    "JobService",
    "check_dataset",
    "check_offline",
    "check_paths",
    "new_job_id",
    "resolve_config",
    "trainer_python",
]

log = logging.getLogger(__name__)

_RUNNING = (JobState.STARTING, JobState.TRAINING, JobState.SAVING)


# ---------------------------------------------------------------------------------------------
# Checks before launch


def trainer_python(settings: Settings) -> str:
    """The interpreter that runs the trainer: the settings' choice, else the app's own."""
    return settings.trainer_python or sys.executable


def resolve_config(config: str | Path | TrainingConfig) -> TrainingConfig:
    """A validated `TrainingConfig` from a file (JSON or YAML) or an object.

    Raises:
        ConfigError: the file is unreadable or a field is invalid; the message names it.
    """
    if isinstance(config, TrainingConfig):
        # Re-validate: a config built in code with validate_assignment can still be stale.
        try:
            return TrainingConfig.model_validate(config.model_dump())
        except ValueError as exc:
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                raise ConfigError(format_validation_error(exc)) from exc
            raise ConfigError(str(exc)) from exc
    try:
        return load_config(config)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from exc


def _hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _in_hub_cache(repo_id: str, kind: str) -> bool:
    """Whether a Hub repository has a downloaded snapshot in the local Hugging Face cache."""
    folder = _hub_cache_dir() / f"{kind}s--{repo_id.replace('/', '--')}" / "snapshots"
    try:
        return any(any(snapshot.iterdir()) for snapshot in folder.iterdir())
    except OSError:
        return False


def _is_local(value: str) -> bool:
    return looks_like_local_path(value) or Path(value).expanduser().exists()


def check_paths(config: TrainingConfig) -> None:
    """Files the config names as local must exist (any mode).

    Raises:
        ConfigError: the model folder is missing.
        DatasetError: the dataset or eval file is missing.
    """
    model = config.model.name_or_path
    if _is_local(model) and not Path(model).expanduser().exists():
        raise ConfigError(
            f"model.name_or_path: {model} does not exist; give a folder with config.json and "
            "weights, or a Hugging Face Hub id (org/name)"
        )
    for field_name, value in (
        ("dataset.path", config.dataset.path),
        ("dataset.eval_path", config.dataset.eval_path),
    ):
        if value and _is_local(value) and not Path(value).expanduser().exists():
            raise DatasetError(f"{field_name}: {value} does not exist; check the path")


def check_offline(config: TrainingConfig) -> None:
    """Offline mode: the model and the data must be on disk, and nothing may be uploaded.

    Raises:
        OfflineError: naming the model, dataset or option that needs the network.
    """
    model = config.model.name_or_path
    if not _is_local(model) and not _in_hub_cache(model, "model"):
        raise OfflineError(
            f"offline mode: the model {model!r} is not on disk (not a folder and not in the "
            f"Hugging Face cache {_hub_cache_dir()}); give a local model folder or go online"
        )
    for field_name, value in (
        ("dataset.path", config.dataset.path),
        ("dataset.eval_path", config.dataset.eval_path),
    ):
        if value and not _is_local(value) and not _in_hub_cache(value, "dataset"):
            raise OfflineError(
                f"offline mode: the dataset {value!r} ({field_name}) is not on disk; give a "
                "local file or go online"
            )
    if config.output.push_to_hub:
        raise OfflineError("offline mode: output.push_to_hub needs the network; turn it off")
    if config.training.report_to == "wandb":
        raise OfflineError(
            "offline mode: training.report_to 'wandb' needs the network; use 'none' or "
            "'tensorboard'"
        )


@dataclass(frozen=True)
class DatasetReport:
    """What `trainer check-data` found in one file."""

    path: str
    usable: bool
    format: str | None = None
    records: int | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)


def _problem_lines(
    path: str, problems: list[dict[str, Any]], total: int, location: str, limit: int = 10
) -> list[str]:
    lines = []
    for problem in problems[:limit]:
        line = problem.get("line")
        where = f"{path}: {location} {line}" if line is not None else path
        lines.append(f"  {where}: {problem.get('message', problem)}")
    if total > min(limit, len(problems)):
        lines.append(f"  ... and {total - min(limit, len(problems))} more problems")
    return lines


def check_dataset(
    path: str,
    python: str,
    *,
    fmt: str = "auto",
    split: str | None = None,
    field_map: Mapping[str, str | None] | None = None,
    timeout_s: float = 300.0,
    env: Mapping[str, str] | None = None,
) -> DatasetReport:
    """Run `python -m trainer check-data PATH --json` with the trainer runtime (blocking).

    Raises:
        DatasetError: the data is unusable; the message lists the problems with line numbers.
        RuntimeNotReadyError: the runtime could not run the check (or did not finish in time).
    """
    cmd = [python, "-m", "trainer", "check-data", path, "--json", "--format", fmt]
    if split:
        cmd += ["--split", split]
    for key, column in (field_map or {}).items():
        if column:
            cmd += ["--field", f"{key}={column}"]
    child_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=child_env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeNotReadyError(
            f"the dataset check of {path} did not finish within {timeout_s:.0f} s; check the "
            f"file with: finetune-desk check-data {path}"
        ) from exc
    except OSError as exc:
        raise RuntimeNotReadyError(
            f"cannot start the trainer runtime {python}: {exc.strerror or exc}; set a Python "
            "with the train extra in the settings, or run: finetune-desk doctor"
        ) from exc
    try:
        data = json.loads(proc.stdout)
        if not isinstance(data, dict) or "usable" not in data:
            raise ValueError("no 'usable' field")
    except ValueError as exc:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeNotReadyError(
            f"the trainer runtime {python} could not check {path} (exit {proc.returncode}): "
            f"{tail or 'no output'}; run: finetune-desk doctor"
        ) from exc
    problems = [p if isinstance(p, dict) else {"message": str(p)} for p in data.get("problems", [])]
    report = DatasetReport(
        path=path,
        usable=bool(data["usable"]) and proc.returncode == 0,
        format=data.get("format"),
        records=data.get("records"),
        problems=problems,
    )
    if not report.usable:
        lines = [f"{path}: the dataset is not usable:"]
        total = int(data.get("problem_count") or len(problems))
        location = str(data.get("location") or "line")
        lines += _problem_lines(path, problems, total, location) or ["  (no details given)"]
        raise DatasetError("\n".join(lines))
    return report


def new_job_id(now: float | None = None) -> str:
    """A short, sortable, unique id: `YYYYMMDD-HHMMSS-xxxx` (local time, 4 random hex)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"{stamp}-{_random.token_hex(2)}"


# ---------------------------------------------------------------------------------------------
# Cross-process lock: one ingester per job, even with a window and a CLI open at once.


@contextmanager
def _ingest_lock(job_dir: Path) -> Iterator[bool]:
    """Try to take the job's ingest lock without waiting; yields whether it was taken."""
    from desktop.providers.local.process import FileLock, LockBusy

    if not job_dir.is_dir():
        # No job dir (deleted files): nothing to ingest from it either; let the provider say so.
        yield True
        return
    lock = FileLock(job_dir / ".ingest.lock")
    try:
        lock.acquire(blocking=False)
    except LockBusy:
        yield False
        return
    except OSError:
        yield True  # an unlockable folder: ingest anyway, as a lone reader would
        return
    try:
        yield True
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------------


def _store_factory() -> Any:
    from desktop.core.store import JobStore

    return JobStore()


class JobService:
    """Launches and watches jobs; the one place the app changes a job.

    Args:
        store: a `desktop.core.store.JobStore` (default: the one under `data_home()`).
        settings: trainer runtime, slots, poll interval, offline default.
        offline: overrides `settings.offline`.
        providers: ready provider instances by name (tests, or a caller that built them);
            others are created from the registry on first use.
        runner: the task runner for the polling tasks (default: a new one).
        secret_store: a `desktop.core.secrets.SecretStore` whose values reach trainers as
            environment variables (default: one is created on first launch).
        check_timeout_s: limit for the dataset check.
        on_error: called with a message for failures of background work (a watcher that broke).
    """

    def __init__(
        self,
        store: Any = None,
        *,
        settings: Settings | None = None,
        offline: bool | None = None,
        providers: Mapping[str, Any] | None = None,
        runner: TaskRunner | None = None,
        secret_store: Any = None,
        check_timeout_s: float = 300.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.offline = self.settings.offline if offline is None else offline
        self._owns_store = store is None
        self.store = store if store is not None else _store_factory()
        self._providers: dict[str, Any] = dict(providers or {})
        self._runner = runner or TaskRunner()
        self._runner.set_failure_handler(self._on_task_failed)
        self._secret_store = secret_store
        self._check_timeout_s = check_timeout_s
        self._on_error = on_error
        self._listeners: list[JobListener] = []
        self._log_offsets: dict[str, int] = {}
        self._log_carry: dict[str, str] = {}
        self._seen: dict[str, Job] = {}

    # -- listeners ----------------------------------------------------------------------------

    def add_listener(self, listener: JobListener) -> None:
        """Tell `listener` about every job added, changed or removed from now on."""
        self._listeners.append(listener)

    def remove_listener(self, listener: JobListener) -> None:
        """Stop telling `listener`."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, method: str, *args: Any) -> None:
        for listener in list(self._listeners):
            try:
                getattr(listener, method)(*args)
            except Exception:
                log.exception("job listener %r failed in %s", listener, method)

    # -- queries ------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The stored job with this id or unique id prefix (raises JobNotFoundError)."""
        job: Job = self.store.get_job(job_id)
        return job

    def jobs(self, states: set[JobState] | None = None) -> list[Job]:
        """Stored jobs (all, or those in `states`)."""
        jobs: list[Job] = self.store.list_jobs(states=states)
        return jobs

    def is_watching(self, job_id: str) -> bool:
        """Whether a polling task is running for the job."""
        return self._runner.is_running(_watch_name(job_id))

    # -- providers ----------------------------------------------------------------------------

    def provider(self, name: str) -> Any:
        """The provider instance for `name`, created on first use.

        Raises:
            ConfigError: no such provider.
            OfflineError: the provider needs the network and offline mode is on.
        """
        if name in self._providers:
            return self._providers[name]
        if self.offline and name != "local":
            raise OfflineError(f"offline mode: provider {name!r} needs the network; use 'local'")
        import importlib

        from desktop.providers.base import get_provider_factory

        # A provider package registers itself when imported; "local" always exists.
        importlib.import_module("desktop.providers.local")
        if name.isidentifier():
            try:
                importlib.import_module(f"desktop.providers.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"desktop.providers.{name}":
                    raise  # the provider exists but lacks something it needs
        try:
            factory = get_provider_factory(name)
        except KeyError as exc:
            raise ConfigError(f"--provider: {exc.args[0]}") from None
        if name == "local":
            from desktop.providers.local import SlotConfig

            slots = self.settings.gpu_slots
            instance = factory(
                home=data_home(),
                python=trainer_python(self.settings),
                slots=SlotConfig(gpus=None if slots is None else tuple(range(slots))),
                poll_interval=self.settings.poll_interval_s,
                cancel_grace_s=self.settings.cancel_grace_s,
                offline=self.offline,
                env_provider=self.trainer_env,
            )
        else:
            instance = factory()
        self._providers[name] = instance
        return instance

    def trainer_env(self, job: Job) -> dict[str, str]:
        """The secrets a job's trainer gets, as environment variables (`{"HF_TOKEN": ...}`).

        Called by the provider in a worker thread at launch. Secrets leave the keychain here
        and go only into the child's environment; they are never written to a file. A secret
        the job needs (a Hub model or dataset, a push, W&B) that cannot be read is logged as a
        warning; the Hugging Face token is passed to every other job too when it is at hand
        (gated tokenizers, templates), quietly otherwise. A keychain that fails never stops a
        job: the trainer then reports what it lacked.
        """
        from desktop.core.secrets import SecretName

        cfg = job.config
        uses_hub = (
            not _is_local(cfg.model.name_or_path)
            or not _is_local(cfg.dataset.path)
            or cfg.output.push_to_hub
        )
        needed = ["hf_token"] if uses_hub else []
        if cfg.training.report_to == "wandb":
            needed.append("wandb_api_key")
        env: dict[str, str] = {}
        try:
            store = self._secrets()
            if needed:
                env.update(store.trainer_env(needed))
            if not uses_hub:
                token = store.get(SecretName.HF_TOKEN)
                if token is not None:
                    env[SecretName.HF_TOKEN.trainer_env_var] = token.get_secret_value()
        except FtdeskError as exc:
            log.debug("job %s starts without optional secrets: %s", job.id, exc)
        return env

    def _secrets(self) -> Any:
        if self._secret_store is None:
            from desktop.core.secrets import SecretStore

            self._secret_store = SecretStore()
        return self._secret_store

    # -- validation ---------------------------------------------------------------------------

    async def validate(
        self, config: str | Path | TrainingConfig
    ) -> tuple[TrainingConfig, list[DatasetReport]]:
        """Every check `launch` makes, without launching: schema, files, offline rules, data.

        Raises:
            ConfigError, DatasetError, OfflineError, RuntimeNotReadyError: naming what is wrong.
        """
        cfg = resolve_config(config)
        check_paths(cfg)
        if self.offline:
            check_offline(cfg)
        reports = []
        data = cfg.dataset
        for value, split in ((data.path, data.split), (data.eval_path, None)):
            if value and _is_local(value):
                reports.append(
                    await asyncio.to_thread(
                        check_dataset,
                        value,
                        trainer_python(self.settings),
                        fmt=data.format,
                        split=split,
                        field_map=data.field_map.model_dump(),
                        timeout_s=self._check_timeout_s,
                        env=OFFLINE_ENV if self.offline else None,
                    )
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
        gpus_requested = await _gpus_requested(cfg, backend)
        jobs_root = data_home() / "jobs"
        jobs_root.mkdir(parents=True, exist_ok=True)
        while True:
            job_id = new_job_id()
            job_dir = jobs_root / job_id
            try:
                job_dir.mkdir()
                break
            except FileExistsError:
                continue
        (job_dir / "config.json").write_text(cfg.to_json(), encoding="utf-8")
        job = Job(
            id=job_id,
            name=name or cfg.name,
            provider=provider,
            config=cfg,
            job_dir=job_dir,
            gpus_requested=gpus_requested,
        )
        self.store.add_job(job, "created")
        job = self.get(job_id)
        self._emit("job_added", job)
        await self._hand_to_provider(job, backend, "launch")
        job = self.get(job_id)
        self._watch(job)
        return job

    async def _hand_to_provider(self, job: Job, backend: Any, what: str) -> None:
        try:
            handle = await backend.launch(job)
        except FtdeskError as exc:
            failed = self.store.transition(job, JobState.FAILED, f"{what} failed: {exc}")
            self._changed(failed)
            raise
        except Exception as exc:
            failed = self.store.transition(job, JobState.FAILED, f"{what} failed: {exc}")
            self._changed(failed)
            raise ProviderError(
                f"job {job.id}: the {job.provider} provider could not {what} it: {exc}"
            ) from exc
        stored = self.get(job.id).model_copy(update={"handle": handle})
        self.store.save_job(stored)
        self._changed(self.get(job.id))

    async def cancel(self, job_id: str) -> Job:
        """Ask the provider to stop the job (idempotent). The state changes when it is observed.

        Raises:
            JobStateError: the job has already ended.
        """
        job = self.get(job_id)
        if job.is_final:
            raise JobStateError(f"job {job.id} has already ended ({job.state.value})")
        await self.provider(job.provider).cancel(job)
        if not self.is_watching(job.id):
            self._watch(job)
        return self.get(job.id)

    async def resume(self, job_id: str) -> Job:
        """Queue a cancelled or failed job again from its last checkpoint, in the same job dir.

        Its metrics continue in the same series.

        Raises:
            JobStateError: the job is not cancelled/failed, or has no checkpoint.
        """
        job = self.get(job_id)
        if job.state not in (JobState.CANCELLED, JobState.FAILED):
            raise JobStateError(
                f"job {job.id} is {job.state.value}; only a cancelled or failed job can be resumed"
            )
        checkpoint = _last_checkpoint(job)
        if checkpoint is None:
            raise JobStateError(
                f"job {job.id} has no checkpoint to resume from; start it again with "
                "finetune-desk run CONFIG"
            )
        backend = self.provider(job.provider)
        if self.offline:
            check_offline(job.config)
        job = self.store.transition(
            job,
            JobState.QUEUED,
            f"resume from {checkpoint}",
            resume=True,
            handle=None,
            exit_code=None,
            finished_at=None,
            eta_seconds=None,
        )
        self._changed(job)
        await self._hand_to_provider(job, backend, "resume")
        job = self.get(job.id)
        self._watch(job)
        return job

    async def delete(self, job_id: str, delete_files: bool) -> None:
        """Forget a job that has ended; with `delete_files`, its job directory too.

        The caller asks the person before passing `delete_files=True`.

        Raises:
            JobStateError: the job is still active (cancel it first).
        """
        job = self.get(job_id)
        if not job.is_final:
            raise JobStateError(f"job {job.id} is {job.state.value}; cancel it before deleting it")
        self._runner.cancel(_watch_name(job.id))
        self.store.delete_job(job.id)
        # Only a folder that is a job dir (it holds the job's config.json) is ever removed.
        if delete_files and (job.job_dir / "config.json").is_file():
            await asyncio.to_thread(shutil.rmtree, job.job_dir)
        self._seen.pop(job.id, None)
        self._emit("job_removed", job.id)

    def export_metrics_csv(self, job_id: str, out: TextIO) -> int:
        """Write the job's metrics as CSV (one row per step); returns the number of rows."""
        job = self.get(job_id)
        rows: int = self.store.export_metrics_csv(job.id, out)
        return rows

    async def start(self, *, with_history: bool = False) -> list[Job]:
        """Load every job and reattach to those that have not ended.

        A trainer still alive is watched again; one that is gone is settled by what it left
        (`status.json` → that final state; nothing → failed). Returns the stored jobs.

        Args:
            with_history: also hand listeners every stored metric point (read in a worker
                thread) before any watcher starts, so charts rebuild in step order.
        """
        jobs = self.jobs()
        for job in jobs:
            self._seen[job.id] = job
            self._emit("job_added", job)
        if with_history:
            store = self.store
            history = await asyncio.to_thread(lambda: [(j.id, store.metrics(j.id)) for j in jobs])
            for job_id, points in history:
                if points:
                    self._emit("metrics_added", job_id, metric_columns(points))
        for job in jobs:
            if job.is_final:
                continue
            try:
                self._watch(job)
            except FtdeskError as exc:
                log.warning("cannot reattach job %s: %s", job.id, exc)
                self._report(f"job {job.id}: {exc}")
        return self.jobs()

    async def refresh(self, job_id: str | None = None) -> list[Job]:
        """Poll active jobs once (all, or one) and store what they did. For the CLI's reads."""
        targets = [self.get(job_id)] if job_id else self.jobs()
        out = []
        for job in targets:
            if not job.is_final and not self.is_watching(job.id):
                job = await self.poll_once(job.id)
            out.append(job)
        return out

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Watch the job until it ends (or `timeout` seconds pass); returns its snapshot."""
        job = self.get(job_id)
        if job.is_final:
            return job
        if not self.is_watching(job.id):
            self._watch(job)
        with suppress(TimeoutError):
            await asyncio.wait_for(self._runner.wait(_watch_name(job.id)), timeout)
        return self.get(job.id)

    async def close(self) -> None:
        """Stop watching. Trainers keep running; `start()` (here or in the next app) reattaches."""
        await self._runner.cancel_all()
        if self._owns_store:
            self.store.close()
        for backend in self._providers.values():
            closer = getattr(backend, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:
                    log.exception("closing provider %s failed", getattr(backend, "name", backend))

    # -- watching -----------------------------------------------------------------------------

    def _watch(self, job: Job) -> None:
        name = _watch_name(job.id)
        if job.is_final or self._runner.is_running(name):
            return
        self._runner.start(name, self._watch_loop(job.id))

    async def _watch_loop(self, job_id: str) -> None:
        interval = self.settings.poll_interval_s
        delay = interval
        failing = False
        while True:
            try:
                job = await self.poll_once(job_id)
            except JobNotFoundError:
                return  # deleted meanwhile (by this app or another)
            except (FtdeskError, OSError) as exc:
                # A locked database, a job dir on a disk that went away: keep trying, slower,
                # and say so once. Anything else is a bug and goes to the runner's handler.
                if not failing:
                    self._report(f"job {job_id}: cannot read its progress ({exc}); retrying")
                failing = True
                delay = min(delay * 2, 30.0)
                await asyncio.sleep(delay)
                continue
            if failing:
                log.info("job %s: reading progress works again", job_id)
            failing, delay = False, interval
            if job.is_final:
                await self._emit_logs(job, final=True)
                return
            await asyncio.sleep(interval)

    async def poll_once(self, job_id: str) -> Job:
        """Poll the job's provider once and store what it saw; returns the new snapshot.

        When another process is ingesting this job right now, this one only reads the store.
        """
        job = self.get(job_id)
        if job.is_final:
            return job
        with _ingest_lock(job.job_dir) as mine:
            if not mine:
                job = self.get(job_id)
                self._changed(job)
                return job
            job = self.get(job_id)  # what another process may have stored meanwhile
            if job.is_final:
                self._changed(job)
                return job
            backend = self.provider(job.provider)
            try:
                update: JobUpdate = await backend.poll(job)
            except ProviderError as exc:
                reason = f"{job.provider} provider unreachable: {exc}"
                if job.state is not JobState.UNKNOWN and can_transition(
                    job.state, JobState.UNKNOWN
                ):
                    job = self.store.transition(job, JobState.UNKNOWN, reason)
                    self._changed(job)
                return job
            job = self._apply(job, update)
        await self._emit_logs(job)
        return job

    def _apply(self, job: Job, update: JobUpdate) -> Job:
        """Turn one poll's findings into stored points, snapshot fields and transitions."""
        from desktop.core.store import points_from_events

        points: list[MetricPoint] = points_from_events(job.id, update.events)
        fields: dict[str, Any] = {}
        observed: list[tuple[JobState, str]] = []
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
                observed.append((JobState(event.state), reason))
            elif isinstance(event, ArtifactEvent):
                if event.artifact == "checkpoint":
                    fields["last_checkpoint"] = event.path
                elif event.artifact in ("adapter", "model"):
                    fields["output_dir"] = Path(event.path)
            elif isinstance(event, ErrorEvent):
                error_message = event.message
        if update.state is not None:
            observed.append((update.state, update.reason))
        # What the provider observed itself carries over to the snapshot as it is.
        for name in ("events_offset", "events_last_seq", "exit_code", "cost_usd", "handle"):
            value = getattr(update, name)
            if value is not None:
                fields[name] = value

        transitions = _plan_transitions(job.state, observed)
        final = transitions[-1][0] if transitions else None
        for state, _ in transitions:
            if state in _RUNNING and job.started_at is None and "started_at" not in fields:
                fields["started_at"] = time.time()
        if final is not None and final.is_final:
            fields["finished_at"] = time.time()
            fields.update(_from_status_file(job, fields))
            fields["eta_seconds"] = None
        if final is JobState.FAILED and error_message:
            state, reason = transitions[-1]
            if not reason or reason.startswith("trainer:"):
                transitions[-1] = (state, error_message)
        # Reasons are stored and shown: a secret a trainer printed must not reach either.
        transitions = [(state, redact(reason)) for state, reason in transitions]

        changed = {k: v for k, v in fields.items() if getattr(job, k) != v}
        if not points and not changed and not transitions:
            self._changed(job)
            return job
        for state, reason in transitions[:-1]:
            job = self.store.transition(job, state, reason)
            self._changed(job)
        snapshot = job.model_copy(update=changed)
        last = transitions[-1] if transitions else None
        job = self.store.record_progress(snapshot, points, transition=last)
        if points:
            self._emit("metrics_added", job.id, metric_columns(points))
        self._changed(job)
        return job

    def _changed(self, job: Job) -> None:
        if self._seen.get(job.id) != job:
            self._seen[job.id] = job
            self._emit("job_changed", job)

    async def _emit_logs(self, job: Job, final: bool = False) -> None:
        if not self._listeners:
            return
        try:
            backend = self.provider(job.provider)
            since = self._log_offsets.get(job.id, 0)
            chunk = await backend.logs(job, since)
        except (FtdeskError, OSError) as exc:
            log.debug("no logs for job %s: %s", job.id, exc)
            return
        if chunk.next_offset == since and not final:
            return
        self._log_offsets[job.id] = chunk.next_offset
        text = self._log_carry.pop(job.id, "") + chunk.text
        lines = text.split("\n")
        tail = lines.pop()
        if tail and not final:
            self._log_carry[job.id] = tail
        elif tail:
            lines.append(tail)
        if lines:
            self._emit("log_added", job.id, [redact(line) for line in lines])

    def _on_task_failed(self, name: str, exc: BaseException) -> None:
        self._report(f"{name} stopped: {exc}")

    def _report(self, message: str) -> None:
        if self._on_error is not None:
            self._on_error(message)


def _watch_name(job_id: str) -> str:
    return f"watch job {job_id}"


async def _gpus_requested(config: TrainingConfig, backend: Any) -> int:
    """GPUs the queue must hand this job (0: it runs on the CPU). `auto` asks the provider
    which GPUs it has (a provider that cannot say is trusted with the GPUs asked for)."""
    if config.hardware.device == "cpu":
        return 0
    if config.hardware.device == "auto":
        probe = getattr(backend, "gpu_slots", None)
        if probe is not None and not await probe():
            return 0
    return config.hardware.num_gpus


def _plan_transitions(
    current: JobState, observed: list[tuple[JobState, str]]
) -> list[tuple[JobState, str]]:
    """The allowed transitions that walk `current` through the observed states, in order.

    A state equal to the current one is no change. A trainer that started and ended between
    two polls (queued → completed) passes through `starting`, which it did go through; any other
    jump that is not allowed is dropped with a warning rather than stored.
    """
    out: list[tuple[JobState, str]] = []
    state = current
    for new, reason in observed:
        if new is state:
            continue
        if can_transition(state, new):
            out.append((new, reason))
            state = new
        elif (
            new is not JobState.QUEUED
            and can_transition(state, JobState.STARTING)
            and can_transition(JobState.STARTING, new)
        ):
            out.append((JobState.STARTING, "trainer started"))
            out.append((new, reason))
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


def _last_checkpoint(job: Job) -> str | None:
    """The checkpoint `trainer run --resume` continues from: the newest complete one on disk.

    The trainer's own rule (`trainer.protocol.latest_complete_checkpoint`), so the app never
    promises a resume the trainer would refuse (a save interrupted mid-way is not one).
    """
    found = latest_complete_checkpoint(job.job_dir)
    return str(found) if found is not None else None
