"""Setting up the trainer runtime: a Python with the trainer's requirements, made by uv.

Two ways to a runtime, both ending with `python -m trainer doctor` through `TrainerRuntime`
and the interpreter stored as the settings' `trainer_python`:

- **Use an existing interpreter** (`use_existing`): a Python (or a venv folder) the person
  picks; nothing is installed.
- **Set one up** (`plan_setup`, then `SetupRun.run`): a venv in the data folder
  (`<data>/runtime/venv`), made by uv with a Python found on the machine (or one uv fetches),
  then torch (the build that matches the NVIDIA driver: `torch_build_for`), then the trainer's
  pinned requirements (the app's metadata, pinned by the `constraints.txt` shipped with it).
  With a wheelhouse the index is switched off (`--no-index --find-links DIR`).

Resuming: every step is idempotent. An existing venv is kept; `uv pip install` installs only
what is missing, so a setup that failed or was cancelled after torch does not fetch torch again
(`tests/test_runtime_setup.py` proves it on the files' inodes). `<data>/runtime/setup.json`
records how far a setup came, for `runtime status` and the window.

Qt-free and blocking: the CLI runs it in its own thread, the window in a worker thread; `cancel`
may be called from any thread and kills the uv child's process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop.core.errors import RuntimeNotReadyError
from desktop.core.runtime import TrainerRuntime
from desktop.core.runtime_plan import (
    SetupPlan,
    SetupStep,
    gb_text,
    managed_venv,
    plan_setup,
    read_setup_state,
    state_path,
    write_state,
)
from trainer.reports import DoctorReport

__all__ = [
    "RuntimeStatus",
    "SetupCancelledError",
    "SetupPlan",
    "SetupRun",
    "device_of",
    "folder_bytes",
    "is_managed",
    "managed_venv",
    "plan_setup",
    "read_setup_state",
    "remove_managed",
    "runtime_status",
    "use_existing",
]

_CANCELLED = (
    "the trainer runtime setup was cancelled; what it installed is kept, and `finetune-desk "
    "runtime setup` (or Set up in Settings → Trainer runtime) resumes it"
)


class SetupCancelledError(RuntimeNotReadyError):
    """The person cancelled the setup; what was installed stays for the next attempt."""


# ---------------------------------------------------------------------------------------------
# Running it


class SetupRun:
    """One setup attempt: the plan's uv commands, then doctor; cancellable from any thread.

    Args:
        plan: what to do (`plan_setup`).
        on_line: called with every line uv prints (and the run's own notes), in order.
        on_progress: called with (steps done, steps in all, what runs now).
        offline: run doctor with the offline environment.
    """

    def __init__(
        self,
        plan: SetupPlan,
        *,
        on_line: Callable[[str], None] = lambda _line: None,
        on_progress: Callable[[int, int, str], None] = lambda _d, _n, _t: None,
        offline: bool = False,
    ) -> None:
        self.plan = plan
        self._on_line = on_line
        self._on_progress = on_progress
        self._offline = offline
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None

    def cancel(self) -> None:
        """Stop the setup: the running uv (and its children) are killed; safe from any thread."""
        self._cancelled.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            _kill_tree(proc)

    @property
    def cancelled(self) -> bool:
        """Whether `cancel` was called."""
        return self._cancelled.is_set()

    def run(self) -> DoctorReport:
        """Set the runtime up and validate it with doctor.

        Returns:
            The doctor's report of the new runtime (`ok` is True).

        Raises:
            RuntimeNotReadyError: the space does not fit, a uv step failed (its last words),
                or doctor says the runtime cannot train; the state file says what was done.
            SetupCancelledError: `cancel` was called.
        """
        plan = self.plan
        if not plan.fits():
            raise RuntimeNotReadyError(
                f"setting up the trainer runtime needs about {gb_text(plan.need_bytes)} in "
                f"{plan.venv.parent}, but only {gb_text(plan.free_bytes)} is free; free some space "
                "(or set FTDESK_HOME to a folder on a larger drive) and try again"
            )
        steps = plan.steps()
        total = len(steps) + 1
        done = [s for s in read_setup_state(plan.home).get("steps_done", []) if s != "doctor"]
        write_state(
            plan.home, state="running", venv=str(plan.venv), python=str(plan.python),
            torch=plan.torch.name, wheelhouse=str(plan.wheelhouse or ""), steps_done=done,
        )  # fmt: skip
        for line in plan.describe():
            self._on_line(line)
        for index, step in enumerate(steps):
            self._check_cancelled()
            self._on_progress(index, total, step.title)
            self._on_line(f"$ {' '.join(step.argv)}")
            code, tail = self._run_step(step)
            self._check_cancelled()
            if code != 0:
                write_state(plan.home, state="failed", failed_step=step.name)
                raise RuntimeNotReadyError(
                    f"setting up the trainer runtime failed while {step.title} (uv exit code "
                    f"{code}): {tail or 'no output'}; fix that and run `finetune-desk runtime "
                    "setup` again (or Set up in Settings → Trainer runtime): it resumes"
                )
            if step.name not in done:
                done.append(step.name)
            write_state(plan.home, steps_done=done)
        self._on_progress(total - 1, total, "checking the runtime with trainer doctor")
        report = TrainerRuntime(str(plan.python), offline=self._offline).doctor()
        self._check_cancelled()
        if not report.ok:
            write_state(plan.home, state="failed", failed_step="doctor")
            raise RuntimeNotReadyError(
                f"the new trainer runtime {plan.python} does not pass doctor: "
                f"{'; '.join(report.problems)}; run `finetune-desk runtime setup` again"
            )
        write_state(plan.home, state="ready", steps_done=[*done, "doctor"], failed_step=None)
        self._on_progress(total, total, "ready")
        self._on_line(f"ready: {plan.python} (torch {report.torch})")
        return report

    def cancel_now(self) -> SetupCancelledError:
        """Cancel from the thread that ran `run` (after Ctrl-C left it): kill uv, record the
        cancel, and return the error to raise."""
        self.cancel()
        write_state(self.plan.home, state="cancelled")
        return SetupCancelledError(_CANCELLED)

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            write_state(self.plan.home, state="cancelled")
            raise SetupCancelledError(_CANCELLED)

    def _run_step(self, step: SetupStep) -> tuple[int, str]:
        env = TrainerRuntime().child_env()  # without a frozen app's LD_LIBRARY_PATH
        env.setdefault("UV_NO_PROGRESS", "1")  # one line per event, not a redrawn bar
        if self.plan.wheelhouse is not None:
            env["UV_OFFLINE"] = "1"
        tail: list[str] = []
        with self._lock:
            if self._cancelled.is_set():
                return 1, "cancelled"
            try:
                proc = subprocess.Popen(  # a long child: its lines stream to the person
                    step.argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                    encoding="utf-8",
                    errors="replace",
                    env=env,
                    start_new_session=os.name == "posix",
                )
            except OSError as exc:
                return 127, f"cannot start {step.argv[0]}: {exc.strerror or exc}"
            self._proc = proc
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                tail = [*tail[-2:], line]
                self._on_line(line)
        code = proc.wait()
        with self._lock:
            self._proc = None
        return code, " | ".join(tail)


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    """Terminate uv and whatever it started (its process group), then kill what lingers."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=10)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()


# ---------------------------------------------------------------------------------------------
# Using and removing


def use_existing(python: str, *, offline: bool = False) -> tuple[str, DoctorReport]:
    """Check a Python the person picked (a venv folder means its interpreter) with doctor.

    Returns:
        (the interpreter's path, doctor's report); the report is `ok`.

    Raises:
        RuntimeNotReadyError: the path is no usable Python, or doctor says it cannot train;
            the sentence names what is wrong and the fix.
    """
    runtime = TrainerRuntime(python, offline=offline)
    interpreter = runtime.interpreter()
    report = runtime.doctor()
    if not report.ok:
        raise RuntimeNotReadyError(runtime.not_ready_sentence(report))
    return interpreter, report


def remove_managed(home: Path, current: str | None) -> Path:
    """Delete the venv the app set up (and its state file).

    Args:
        home: the data folder.
        current: the settings' trainer runtime.

    Returns:
        The folder deleted.

    Raises:
        RuntimeNotReadyError: the current runtime is the person's own interpreter (it is never
            deleted), or the app set nothing up.
    """
    venv = managed_venv(home)
    if current and not is_managed(home, current):
        raise RuntimeNotReadyError(
            f"the trainer runtime {current} is your own Python, not one this app set up, so "
            "nothing was deleted; choose another in Settings → Trainer runtime, or remove it "
            "yourself"
        )
    if not venv.exists() and not state_path(home).exists():
        raise RuntimeNotReadyError(
            f"this app has set no trainer runtime up in {venv}; nothing to remove"
        )
    shutil.rmtree(venv, ignore_errors=True)
    if venv.exists():
        raise RuntimeNotReadyError(
            f"could not delete all of {venv}; close programs that use it and try again"
        )
    state_path(home).unlink(missing_ok=True)
    return venv


def is_managed(home: Path, python: str) -> bool:
    """Whether `python` lies inside the venv the app set up."""
    venv = managed_venv(home).absolute()
    # Not resolved: the venv's python is a link to the base interpreter, outside the venv.
    return Path(python).absolute().is_relative_to(venv)


def folder_bytes(folder: Path) -> int:
    """The size of the files under `folder` (0 when absent)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


@dataclass(frozen=True)
class RuntimeStatus:
    """The trainer runtime as `runtime status` and the window show it.

    Attributes:
        python: the interpreter ("" when none is set up).
        kind: "managed" (the venv this app set up), "own" (a Python the person chose), "app"
            (the app's own interpreter, in a source checkout) or "none".
        setup_state: the last setup's record (`read_setup_state`).
        report: doctor's report, when doctor could run.
        problem: the one sentence with the fix, when the runtime cannot train.
    """

    python: str
    kind: str
    setup_state: dict[str, Any]
    report: DoctorReport | None
    problem: str | None

    @property
    def ok(self) -> bool:
        """Whether the runtime can train."""
        return self.problem is None and self.report is not None and self.report.ok

    def to_json_dict(self) -> dict[str, Any]:
        """What `runtime status --json` prints."""
        return {
            "python": self.python,
            "kind": self.kind,
            "ok": self.ok,
            "problem": self.problem,
            "setup": self.setup_state.get("state"),
            "steps_done": self.setup_state.get("steps_done", []),
            "torch": self.report.torch if self.report else None,
            "device": device_of(self.report),
            "doctor": self.report.to_json_dict() if self.report else None,
        }


def device_of(report: DoctorReport | None) -> str | None:
    """ "cuda (2 GPUs)", "mps" or "cpu": where this runtime trains."""
    if report is None or report.torch is None:
        return None
    if report.cuda_available:
        return f"cuda {report.cuda_version or ''} ({len(report.gpus)} GPU(s))".replace("  ", " ")
    return "mps" if report.mps_available else "cpu"


def runtime_status(home: Path, runtime: TrainerRuntime) -> RuntimeStatus:
    """Which runtime the settings name, what kind, and doctor's verdict (never raises for a
    broken runtime: the sentence is in `problem`)."""
    state = read_setup_state(home)
    python = runtime.python
    if not python:
        kind = "none"
    elif is_managed(home, python):
        kind = "managed"
    elif python == sys.executable and not getattr(sys, "frozen", False):
        kind = "app"
    else:
        kind = "own"
    try:
        report = runtime.doctor()
    except RuntimeNotReadyError as exc:
        broken = str(exc)
        if kind == "managed" and state.get("state") in ("failed", "cancelled", "running"):
            broken = (
                f"the trainer runtime setup did not finish ({state.get('state')} after "
                f"{', '.join(state.get('steps_done', [])) or 'no step'}); run `finetune-desk "
                "runtime setup` again (or Set up in Settings → Trainer runtime): it resumes"
            )
        return RuntimeStatus(python, kind, state, None, broken)
    problem = None if report.ok else runtime.not_ready_sentence(report)
    return RuntimeStatus(python, kind, state, report, problem)
