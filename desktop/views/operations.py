"""Background operations for the window, and the one message bus for user-facing errors.

As in Anki's `aqt/operations`: a view asks `Operations.run(...)` to do something (launch a job,
check a dataset, read the keychain); the work runs as a tracked asyncio task (blocking calls in
a worker thread), and when it ends either the success callback updates the UI or the error is
shown. Expected errors (`FtdeskError`: a bad field, an unusable dataset, an unreachable
provider) become one sentence on the `MessageBus`, which the status bar shows. Anything else is
a bug: it is written to the log file with its traceback and shown in a dialog with that
traceback; the app keeps running.

This module is the views' one door to the Qt-free core (the import contracts let no other
widget module import `desktop.core`, `desktop.providers` or `desktop.cli`): the core's error
types, the memory-fit constants, the keychain types and the blocking use-cases the window runs
through `Operations.run_in_thread` (config files and presets, the memory estimate, one record
of a data file) are named here. No helper here starts a process: the trainer's checks go
through `JobService.runtime` (`desktop.core.runtime.TrainerRuntime`).

The window's first frame imports this module, so it stays light: asyncio, pydantic, the task
runner and the keychain are imported when first used (`HEAVY_MODULES` in heavy_imports.py).

Over 600 lines because it is that one door: every core use-case a widget needs (RunPod's
catalog, runtime setup, model pulls, export, chat, Slurm partitions) has its thin, lazily
imported wrapper here, and splitting the door would let widgets reach the core another way.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QWidget

from desktop.core.data_preview import read_record
from desktop.core.errors import ConfigError, FtdeskError, RuntimeNotReadyError
from desktop.core.memory_fit import GPUS, FitLevel, MemoryEstimate, fit_level
from desktop.core.paths import data_home, resource_path

if TYPE_CHECKING:
    import asyncio

    from desktop.core.chat_session import (
        ChatSession,
        Conversation,
        GenerationSettings,
        load_conversation,
        save_conversation,
    )
    from desktop.core.config_io import PresetInfo
    from desktop.core.dataset_path import DatasetPathCheck
    from desktop.core.models_cache import PullPlan
    from desktop.core.notify import JobEndNotifier
    from desktop.core.provenance_check import ProvenanceChangedError
    from desktop.core.secrets import SecretName, SecretStatus, SecretStore
    from desktop.core.service import JobService
    from desktop.core.sleep_inhibit import LocalJobsInhibitor
    from desktop.core.tasks import TaskRunner
    from desktop.models import ClusterProfile, Job, Settings
    from desktop.views.state import AppState
    from trainer.config import TrainingConfig
    from trainer.reports import DoctorReport

__all__ = [
    "GPUS",
    "ChatSession",
    "ConfigError",
    "Conversation",
    "DatasetPathCheck",
    "FitLevel",
    "FtdeskError",
    "GenerationSettings",
    "JobEndNotifier",
    "LocalJobsInhibitor",
    "MemoryEstimate",
    "MessageBus",
    "Operations",
    "ProvenanceChangedError",
    "RuntimeNotReadyError",
    "SecretName",
    "SecretStatus",
    "SecretStore",
    "check_runtime",
    "data_home",
    "demo_folder",
    "estimate_memory",
    "export_config",
    "export_trl_sft_yaml",
    "fit_level",
    "format_exception",
    "import_config",
    "inspect_dataset_paths",
    "job_end_notifier",
    "last_config_path",
    "list_presets",
    "load_conversation",
    "load_preset",
    "local_jobs_inhibitor",
    "plan_model_pull",
    "pull_model",
    "read_job_log",
    "read_last_config",
    "read_record",
    "resource_path",
    "runtime_blockers",
    "save_conversation",
    "save_settings",
    "serve_history",
    "show_traceback_dialog",
    "window_state_path",
    "write_last_config",
]

#: Names served on first use (`__getattr__`): their modules import pydantic, which the
#: window's first frame must not pay for.
_LAZY = {
    "ChatSession": "desktop.core.chat_session",  # the Chat tab's model server and conversation
    "Conversation": "desktop.core.chat_session",
    "GenerationSettings": "desktop.core.chat_session",
    "load_conversation": "desktop.core.chat_session",
    "save_conversation": "desktop.core.chat_session",
    "DatasetPathCheck": "desktop.core.dataset_path",
    "JobEndNotifier": "desktop.core.notify",
    "LocalJobsInhibitor": "desktop.core.sleep_inhibit",
    "ProvenanceChangedError": "desktop.core.provenance_check",
    "SecretName": "desktop.core.secrets",
    "SecretStatus": "desktop.core.secrets",
    "SecretStore": "desktop.core.secrets",
    # Batch compare (compare_panel): the run, its cancel, the prompts file, the saved results;
    # BASE is the base model's key in a row's answers.
    **dict.fromkeys(
        ("BASE", "CompareCancel", "CompareCancelled", "compare_jobs", "read_prompts"),
        "desktop.core.compare",
    ),
    "save_compare_results": "desktop.core.compare",
    # RunPod in the window: the catalog, the key's test, the estimate, the orphan sweep.
    **dict.fromkeys(
        (
            "gpu_offers",
            "test_runpod_key",
            "estimate_offers",
            "find_orphan_pods",
            "delete_orphan_pods",
            "adopt_orphan",
        ),
        "desktop.core.runpod_window",
    ),
}

_LAST_CONFIG = "last_config.json"

log = logging.getLogger(__name__)

T = TypeVar("T")


class MessageBus(QObject):
    """The one channel for messages meant for the person at the window.

    Signals:
        info_posted(str): a short status message ("job 2024… launched").
        error_posted(str): an expected error, one sentence with what to do next.
        bug_reported(str, str): an unexpected error: a summary and its traceback.
    """

    info_posted = Signal(str)
    error_posted = Signal(str)
    bug_reported = Signal(str, str)

    def info(self, message: str) -> None:
        """Post a status message."""
        log.info("%s", message)
        self.info_posted.emit(message)

    def error(self, message: str) -> None:
        """Post an expected error (the status bar shows it)."""
        log.warning("%s", message)
        self.error_posted.emit(message)

    def bug(self, summary: str, exc: BaseException) -> None:
        """Report an unexpected exception: logged with its traceback, then shown in a dialog."""
        text = format_exception(exc)
        log.error("%s\n%s", summary, text)
        self.bug_reported.emit(summary, text)


def format_exception(exc: BaseException) -> str:
    """The exception's traceback as text (redacted by the log filter when logged)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def show_traceback_dialog(parent: QWidget | None, summary: str, text: str) -> None:
    """A window-modal dialog with the summary and the full traceback under "Show Details".

    The log file holds the same traceback; the app keeps running after the dialog closes.
    """
    from PySide6.QtWidgets import QMessageBox  # its enums cost ~20 ms: not at the first frame

    box = QMessageBox(parent)
    box.setObjectName("traceback_dialog")
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle("Finetune Desk: unexpected error")
    box.setText(f"Something went wrong: {summary}")
    box.setInformativeText(
        "This is a bug in Finetune Desk. The app keeps running; the traceback below was also "
        "written to the log file. Please include it when you report the problem."
    )
    box.setDetailedText(text)
    box.setStandardButtons(QMessageBox.StandardButton.Close)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    # open(), not exec(): this runs inside an operation's task, and a nested event loop there
    # would step other asyncio tasks re-entrantly under qasync (and never return in a test).
    box.open()


class Operations(QObject):
    """Runs async work in the background and routes its outcome.

    Every task is started on a `TaskRunner` under a name (a second "launch" while one is
    running is refused with a message rather than started twice).

    Args:
        bus: where errors and messages go.
        runner: the task runner (default: a new one).
        parent: the QObject parent.

    Signals:
        busy_changed(bool): True while any operation runs.
    """

    busy_changed = Signal(bool)

    def __init__(
        self,
        bus: MessageBus,
        runner: TaskRunner | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        from desktop.core.tasks import TaskRunner

        self.bus = bus
        self.runner = runner or TaskRunner()
        self._running: set[str] = set()
        self._closed = False

    def run(
        self,
        name: str,
        coro: Coroutine[Any, Any, T],
        on_done: Callable[[T], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        *,
        quiet: bool = False,
    ) -> asyncio.Task[Any] | None:
        """Run `coro` as the task `name`; then `on_done(result)` or show the error.

        `on_error`, when given, is called for expected errors (FtdeskError) after they are
        posted, so a view can also show it in place (e.g. on a panel). With `quiet`, expected
        errors go only to `on_error` (a badge that explains itself). Unexpected errors always go
        to the traceback dialog.

        Returns:
            The task, or None when an operation of that name is already running.
        """
        if self._closed:  # a debounce timer that fires after close(): nothing may start now
            coro.close()
            log.debug("%s not started: the operations are closed", name)
            return None
        if name in self._running:
            coro.close()
            self.bus.info(f"{name} is already running")
            return None
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the app is shutting down: nothing can run any more
            coro.close()
            log.debug("%s not started: no running event loop", name)
            return None
        self._running.add(name)
        if len(self._running) == 1:
            self.busy_changed.emit(True)
        task = self.runner.start(name, self._wrap(name, coro, on_done, on_error, quiet))
        # A task cancelled before its first step (the window closing) never awaited `coro`.
        task.add_done_callback(lambda _task: coro.close())
        return task

    def run_in_thread(
        self,
        name: str,
        func: Callable[..., T],
        *args: Any,
        on_done: Callable[[T], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        quiet: bool = False,
    ) -> asyncio.Task[Any] | None:
        """Run the blocking `func(*args)` in a worker thread, then as `run`."""
        import asyncio

        return self.run(name, asyncio.to_thread(func, *args), on_done, on_error, quiet=quiet)

    def is_running(self, name: str) -> bool:
        """Whether the operation `name` is in progress."""
        return name in self._running

    async def _wrap(
        self,
        name: str,
        coro: Coroutine[Any, Any, T],
        on_done: Callable[[T], None] | None,
        on_error: Callable[[BaseException], None] | None,
        quiet: bool = False,
    ) -> None:
        import asyncio

        try:
            try:
                result = await coro
            except asyncio.CancelledError:
                raise
            except FtdeskError as exc:
                if quiet:
                    log.debug("%s: %s", name, exc)
                else:
                    self.bus.error(str(exc))
                if on_error is not None:
                    on_error(exc)
                return
            except Exception as exc:
                self.bus.bug(f"{name} failed: {exc}", exc)
                if on_error is not None:
                    on_error(exc)
                return
            if on_done is not None:
                try:
                    on_done(result)
                except Exception as exc:
                    self.bus.bug(f"{name}: updating the window failed: {exc}", exc)
        finally:
            self._running.discard(name)
            if not self._running:
                self.busy_changed.emit(False)

    async def close(self) -> None:
        """Cancel every operation still running; none starts after this."""
        self._closed = True
        await self.runner.cancel_all()


# ---------------------------------------------------------------------------------------------
# Blocking helpers (Qt-free), for `Operations.run_in_thread`, and the lazy core names.


def __getattr__(name: str) -> Any:
    """The keychain and listener types, imported on first use (see `_LAZY`)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def window_state_path() -> Path:
    """`data_home()/window.ini`: geometry, splitters, the chosen GPU."""
    return data_home() / "window.ini"


def demo_folder() -> Path:
    """Where the demo lives: `data_home()/demo`."""
    return data_home() / "demo"


def last_config_path() -> Path:
    """Where the editor's last valid config is kept between starts."""
    return data_home() / _LAST_CONFIG


def list_presets() -> list[PresetInfo]:
    """The bundled presets (name, title, description, GPU)."""
    from desktop.core import config_io

    return config_io.list_presets()


def load_preset(name: str, demo_dir: Path | None = None) -> TrainingConfig:
    """The preset `name` as a config (`{demo}` paths point into `demo_dir`).

    Raises:
        ConfigError: no such preset, or it is not valid.
    """
    from desktop.core import config_io

    return config_io.load_preset(name, demo_dir=demo_dir)


def import_config(path: str | Path) -> TrainingConfig:
    """Read a JSON or YAML config (blocking).

    Raises:
        ConfigError: unreadable or invalid; the message names the field and line.
    """
    from desktop.core import config_io

    return config_io.import_config(path)


def export_config(config: TrainingConfig, path: str | Path) -> Path:
    """Write the config as JSON or YAML by its suffix (blocking); returns the path."""
    from desktop.core import config_io

    return config_io.export_config(config, path)


def export_trl_sft_yaml(config: TrainingConfig, path: str | Path) -> list[str]:
    """Write a `trl sft --config` YAML (blocking); returns the notes written at its top."""
    from desktop.core import config_io

    return config_io.export_trl_sft_yaml(config, path)


def read_last_config() -> TrainingConfig | None:
    """The config remembered by `write_last_config`, or None when there is none (blocking).

    Raises:
        FtdeskError: the file is there but cannot be used.
    """
    path = last_config_path()
    if not path.exists():
        return None
    return import_config(path)


def write_last_config(config: TrainingConfig) -> None:
    """Remember the config for the next start (blocking; a failure is logged, not raised)."""
    try:
        export_config(config, last_config_path())
    except FtdeskError as exc:
        log.warning("cannot remember the last config: %s", exc)


async def read_job_log(service: JobService, job: Job) -> list[str]:
    """The stored log of a finished job, as lines (its watcher, which streams logs, has ended)."""
    chunk = await service.logs(job.id)
    return list(chunk.text.splitlines())


def check_runtime(python: str, offline: bool) -> DoctorReport:
    """`trainer doctor` with the interpreter `python` (blocking): the Settings dialog checks a
    Python before it becomes the job service's.

    Raises:
        RuntimeNotReadyError: the interpreter cannot start or printed no report.
    """
    from desktop.core.runtime import TrainerRuntime

    return TrainerRuntime(python, offline=offline).doctor()


def runtime_status(python: str, offline: bool) -> Any:
    """The runtime `python` names, its kind and doctor's verdict (blocking; never raises for a
    broken runtime: `RuntimeStatus.problem` holds the sentence)."""
    from desktop.core.runtime import TrainerRuntime
    from desktop.core.runtime_setup import runtime_status as status

    return status(data_home(), TrainerRuntime(python, offline=offline))


def use_existing_runtime(python: str, offline: bool) -> str:
    """Check a picked Python (or venv folder) with doctor (blocking); returns the interpreter.
    Raises `RuntimeNotReadyError` (why, and the fix) when it cannot train."""
    from desktop.core.runtime_setup import use_existing

    return use_existing(python, offline=offline)[0]


def plan_runtime_setup(wheelhouse: str | None) -> Any:
    """What `Set up` will do (blocking: asks nvidia-smi): a `SetupPlan` to show, then run.
    Raises `RuntimeNotReadyError` when the wheelhouse is unusable or uv is missing."""
    from desktop.core.runtime_setup import plan_setup

    return plan_setup(data_home(), wheelhouse=Path(wheelhouse) if wheelhouse else None)


def runtime_setup_run(
    plan: Any,
    on_line: Callable[[str], None],
    on_progress: Callable[[int, int, str], None],
    offline: bool,
) -> Any:
    """A `SetupRun` for `plan`: `run` and `cancel` (both blocking) go to worker threads; the
    callbacks come from the worker thread."""
    from desktop.core.runtime_setup import SetupRun

    return SetupRun(plan, on_line=on_line, on_progress=on_progress, offline=offline)


def remove_runtime(current: str | None) -> str:
    """Delete the venv the app set up (blocking); returns the folder. Raises
    `RuntimeNotReadyError` for the person's own Python, or when nothing was set up."""
    from desktop.core.runtime_setup import remove_managed

    return str(remove_managed(data_home(), current))


def save_settings(settings: Settings) -> None:
    """Write the settings file (blocking).

    Raises:
        ConfigError: the file cannot be written (the message says where and why).
    """
    from desktop.models import save_settings as write

    try:
        write(settings)
    except OSError as exc:
        raise ConfigError(f"cannot save the settings: {exc.strerror or exc}") from exc


def job_end_notifier(tray: Callable[[str, str], None] | None) -> JobEndNotifier:
    """The listener that tells the person when a job ends (desktop notification, else `tray`)."""
    from desktop.core.notify import JobEndNotifier, make_sender

    return JobEndNotifier(make_sender(tray))


def serve_history(state: AppState, service: JobService, ops: Operations) -> None:
    """Answer AppState's `history_wanted(job_id)` (a job was selected whose stored series are
    not in memory): read them in a worker thread and hand them to `state.set_history`."""

    def wanted(job_id: str) -> None:
        name = f"load the history of job {job_id}"
        task = ops.run_in_thread(
            name,
            service.series_columns,
            job_id,
            on_done=lambda columns: state.set_history(job_id, columns),
            on_error=lambda _exc: state.history_failed(job_id),
        )
        if task is None and not ops.is_running(name):  # no loop: the window is closing
            state.history_failed(job_id)

    state.history_wanted.connect(wanted)
    state.lazy_history = True


def local_jobs_inhibitor() -> LocalJobsInhibitor:
    """The listener that keeps the machine awake while a local job runs."""
    from desktop.core.sleep_inhibit import LocalJobsInhibitor

    return LocalJobsInhibitor()


def estimate_memory(config: TrainingConfig) -> MemoryEstimate:
    """The memory estimate for the config (reads the model's config.json: blocking)."""
    from desktop.core.memory_fit import estimate_for_config, read_model_config

    return estimate_for_config(config, read_model_config(config.model.name_or_path))


def inspect_dataset_paths(values: dict[str, str]) -> dict[str, DatasetPathCheck]:
    """A quick look at each dataset path (field path -> value): exists, readable, format and
    size (blocking: a stat, the first bytes and a line count)."""
    from desktop.core.dataset_path import inspect_dataset_path

    return {field: inspect_dataset_path(value) for field, value in values.items()}


def runtime_blockers(config: TrainingConfig, doctor: DoctorReport | None, target: str) -> list[str]:
    """What the launch `target` lacks for `config` ("needs CUDA: ..."), one sentence each.

    Only the local target is judged, by this runtime's doctor report; a target whose
    capabilities are not known yet (no report; a cloud provider until it declares them) blocks
    nothing here: its own checks run at launch.
    """
    from desktop.core.runtime_fit import TargetCapabilities
    from desktop.core.runtime_fit import runtime_blockers as blockers

    if target != "local" or doctor is None:
        return []
    return blockers(config, TargetCapabilities.from_doctor(doctor))


def billed_active_jobs(service: JobService, jobs: Iterable[Job]) -> list[Job]:
    """The active jobs among `jobs` whose provider bills (`Capability.BILLING`): the cloud jobs
    a closing window asks about. A provider that cannot be built now (offline mode, gone from
    the registry) is skipped: nothing could be cancelled through it either."""
    from desktop.models import ACTIVE_STATES
    from desktop.providers.base import Capability

    billed: list[Job] = []
    for job in jobs:
        if job.state not in ACTIVE_STATES:
            continue
        try:
            backend = service.provider(job.provider)
        except FtdeskError as exc:
            log.info("job %s: its provider is not available at close: %s", job.id, exc)
            continue
        if Capability.BILLING in backend.capabilities:
            billed.append(job)
    return billed


def cloud_job_limits(job: Job) -> str:
    """`budget $X, max runtime Y` of a cloud job: its budget, and the maximum runtime its
    pod.json recorded at launch ("not recorded" where there is none)."""
    from desktop.providers.runpod.pod_files import load_record

    try:
        record = load_record(job.job_dir)
    except (OSError, ValueError) as exc:
        log.info("job %s: pod.json unreadable: %s", job.id, exc)
        record = None
    amount = job.budget_usd if job.budget_usd is not None or record is None else record.budget_usd
    budget = "not set" if amount is None else f"${amount}"
    runtime = "not recorded" if record is None else f"{record.max_runtime_s / 3600:g} h"
    return f"budget {budget}, max runtime {runtime}"


async def slurm_partitions(profile: ClusterProfile) -> list[tuple[str, str]]:
    """The cluster's partitions from `sinfo` over SSH, as (name, description) pairs, the
    default partition first (the passphrase of a key file from the keychain).

    Raises:
        ProviderError: SSH or `sinfo` failed; the message says which and what to do.
    """
    import asyncio

    from desktop.providers.slurm.keys import ssh_passphrase
    from desktop.providers.slurm.probe import partitions
    from desktop.providers.slurm.ssh import SshSession

    passphrase = await asyncio.to_thread(ssh_passphrase, [profile])
    session = SshSession(profile, passphrase, retry_s=10.0)
    try:
        found = await partitions(session)
    finally:
        await session.aclose()
    found.sort(key=lambda p: not p.default)
    return [(p.name, p.describe()) for p in found]


async def cancel_jobs(service: JobService, job_ids: Iterable[str]) -> list[str]:
    """Cancel each job (its provider's cancel: the trainer checkpoints, the pod is deleted);
    returns the ids cancelled. The first failure raises after the others were asked."""
    done: list[str] = []
    failures: list[BaseException] = []
    for job_id in job_ids:
        try:
            await service.cancel(job_id)
        except FtdeskError as exc:
            failures.append(exc)
        else:
            done.append(job_id)
    if failures:
        raise failures[0]
    return done


def plan_model_pull(repo_id: str, revision: str | None, offline: bool) -> PullPlan:
    """What pulling the Hub model needs: files, bytes, free space (blocking; `models_cache`)."""
    from desktop.core import models_cache as mc

    token = None if offline else mc.stored_hf_token()
    return mc.plan_pull(repo_id, revision, token=token, offline=offline)


def pull_model(
    plan: PullPlan, offline: bool, progress: Callable[[int, int], None], cancel: Any
) -> Path:
    """Download what `plan` found missing (blocking); `cancel`: a `threading.Event`."""
    from desktop.core import models_cache as mc

    token = None if offline else mc.stored_hf_token()
    return mc.pull(plan, token=token, offline=offline, progress=progress, cancel=cancel)


def export_job(
    runtime: Any, offline: bool, job: Job, request: dict[str, Any], on_progress: Any, cancel: Any
) -> Any:
    """Merge and/or push `job` (blocking; `desktop.core.export`): `request` holds
    `ExportRequest`'s fields, `cancel` is a `threading.Event` that stops the trainer child."""
    from desktop.core.export import ExportRequest
    from desktop.core.export import export_job as run_export

    fields = {**request, "out": Path(request["out"]).expanduser() if request.get("out") else None}
    req = ExportRequest(**fields)
    return run_export(runtime, job, req, offline=offline, on_progress=on_progress, cancel=cancel)
