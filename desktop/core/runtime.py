"""The trainer runtime seen from the app: one gateway to `python -m trainer <command>`.

The trainer runs in its own Python (the settings' "trainer runtime", else the app's own
interpreter). Everything the app asks of it before a job exists goes through `TrainerRuntime`:
`doctor` (can this Python train?), `check-data` (is this dataset usable?) and `make-demo`
(write the built-in demo). `TrainerRuntime.run_json` is the one function in `desktop/` that
starts such a check and parses its JSON; `tests/test_one_trainer_runner.py` proves it. A long
command (`export`: merge, push) goes through it too, streaming its progress lines and stopped
by a cancel event. `TrainerRuntime.start_server` starts the one long-lived child that is not a
training run, the model server (`python -m trainer serve`).
`TrainerRuntime.child_env` is the one recipe for a trainer child's environment (the source
checkout on PYTHONPATH, the offline variables, the secrets), used for every trainer process,
the providers' training launches included.

Qt-free and blocking: the window and the job service call it from a worker thread.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from desktop.core.errors import DatasetError, FtdeskError, RuntimeNotReadyError
from desktop.providers.offline import OFFLINE_ENV
from trainer.reports import DataReport, DemoReport, DoctorReport

if TYPE_CHECKING:
    from desktop.models import Settings

R = TypeVar("R", DataReport, DoctorReport, DemoReport)

__all__ = [
    "MIN_PYTHON",
    "NOT_SET_UP",
    "SETUP_FIX",
    "SUPPORTED_PYTHONS",
    "TrainerCommandCancelledError",
    "TrainerRuntime",
    "require_usable",
    "source_root",
    "venv_python",
]

# The Python versions the trainer supports (torch publishes wheels for them).
MIN_PYTHON = (3, 11)
SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")

# Where a person fixes a broken runtime: the button and the command. Every
# RuntimeNotReadyError about the runtime ends with it.
SETUP_FIX = (
    "set one up with Settings → Trainer runtime → Set up (or `finetune-desk runtime setup`), "
    "or pick a Python with the train extra there with Use existing… (or `finetune-desk runtime "
    "setup --python PATH`); `finetune-desk doctor` checks it"
)
_FIX = SETUP_FIX


# A frozen app has no Python of its own to train with: the runtime must be chosen or set up.
NOT_SET_UP = f"the trainer runtime is not set up yet: {SETUP_FIX}"


def venv_python(venv: Path) -> Path:
    """The interpreter of the virtual environment `venv` (Windows or POSIX layout)."""
    windows = venv / "Scripts" / "python.exe"
    return windows if os.name == "nt" or windows.is_file() else venv / "bin" / "python"


def source_root() -> Path | None:
    """The folder holding the `trainer` package when it runs from a source checkout, else None.

    The trainer ships with the app: a runtime needs only its requirements. From a checkout that
    is not installed in the runtime, this folder goes on PYTHONPATH. An installed package (in
    site-packages) is not added: another interpreter must not load this one's site-packages.
    A frozen bundle carries the trainer as source files in `trainer_src/` (its own copy is
    compiled into the executable, which no runtime can import).
    """
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle is not None:
        frozen_source = Path(bundle) / "trainer_src"
        return frozen_source if (frozen_source / "trainer").is_dir() else None
    import trainer

    root = Path(trainer.__file__).resolve().parent.parent
    if root.name in ("site-packages", "dist-packages"):
        return None
    return root


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


class TrainerRuntime:
    """The trainer runtime (a Python interpreter with the train extra) seen from the app.

    Args:
        python: the interpreter; None means the app's own (`sys.executable`), except in a
            frozen bundle, whose executable is no Python: the runtime is then "not set up" and
            every command raises `RuntimeNotReadyError(NOT_SET_UP)`.
        offline: give every child the offline environment (`OFFLINE_ENV`).

    Attributes:
        python: the interpreter every trainer child runs with.
        offline: whether children get the offline environment.
    """

    def __init__(self, python: str | None = None, *, offline: bool = False) -> None:
        frozen = bool(getattr(sys, "frozen", False))
        self.python: str = python or ("" if frozen else sys.executable)
        self.offline: bool = offline

    @classmethod
    def from_settings(cls, settings: Settings, *, offline: bool | None = None) -> TrainerRuntime:
        """The runtime the settings name; `offline` (when given) overrides the setting."""
        return cls(
            settings.trainer_python, offline=settings.offline if offline is None else offline
        )

    def __repr__(self) -> str:
        return f"TrainerRuntime(python={self.python!r}, offline={self.offline})"

    def child_env(
        self,
        secrets: Mapping[str, str] | None = None,
        *,
        base: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The environment of a trainer child process.

        `base` (default: this process's environment; in a frozen app without the bundle's
        LD_LIBRARY_PATH), then the source checkout first on
        PYTHONPATH (when running from one, so a runtime without the app installed finds
        `trainer`), then `OFFLINE_ENV` in offline mode, then `secrets` (environment variable
        name to value). Secrets come last so nothing in `base` can shadow them; they live only
        in the returned dict, never in a file.
        """
        env = dict(os.environ if base is None else base)
        if getattr(sys, "frozen", False):
            # A PyInstaller bundle points LD_LIBRARY_PATH at its own libraries (an older
            # libstdc++, its OpenSSL); the runtime's Python must load the system's.
            original = env.pop("LD_LIBRARY_PATH_ORIG", None)
            if original is None:
                env.pop("LD_LIBRARY_PATH", None)
            else:
                env["LD_LIBRARY_PATH"] = original
        root = source_root()
        if root is not None:
            parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            if str(root) not in parts:
                env["PYTHONPATH"] = os.pathsep.join([str(root), *parts])
        if self.offline:
            env.update(OFFLINE_ENV)
        env.update(secrets or {})
        return env

    def interpreter(self) -> str:
        """The interpreter to start: `python`, or the one inside it when it names a venv folder.

        Raises:
            RuntimeNotReadyError: no runtime is set up, or it is a folder that is not a
                virtual environment; the sentence names the fix.
        """
        if not self.python:
            raise RuntimeNotReadyError(NOT_SET_UP)
        path = Path(self.python)
        if path.is_dir():
            inside = venv_python(path)
            if not inside.is_file():
                raise RuntimeNotReadyError(
                    f"the trainer runtime {self.python} is a folder but not a virtual "
                    f"environment (it has no {inside.relative_to(path)}); {SETUP_FIX}"
                )
            return str(inside)
        return self.python

    def argv(self, command: str, *args: str) -> list[str]:
        """`[python, "-m", "trainer", command, *args]`.

        Raises:
            RuntimeNotReadyError: no usable interpreter is set (see `interpreter`).
        """
        return [self.interpreter(), "-m", "trainer", command, *args]

    def python_version(self) -> tuple[int, int] | None:
        """The interpreter's (major, minor), asked with a one-line program; None when it does
        not answer. Only called to explain a runtime that could not run the trainer."""
        try:
            proc = subprocess.run(  # works on any Python, 2.7 included
                [
                    self.interpreter(),
                    "-I",
                    "-c",
                    "import sys; print('%d.%d' % sys.version_info[:2])",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired, RuntimeNotReadyError):
            return None
        match = re.fullmatch(r"(\d+)\.(\d+)", proc.stdout.strip())
        return (int(match.group(1)), int(match.group(2))) if match else None

    def version_problem(self, version: tuple[int, int] | None) -> str | None:
        """The sentence for an interpreter whose version the trainer does not support."""
        if version is None or f"{version[0]}.{version[1]}" in SUPPORTED_PYTHONS:
            return None
        return (
            f"the trainer runtime {self.python} is Python {version[0]}.{version[1]}, but the "
            f"trainer supports Python {SUPPORTED_PYTHONS[0]} to {SUPPORTED_PYTHONS[-1]}; "
            f"{SETUP_FIX}"
        )

    def not_ready_sentence(self, report: DoctorReport) -> str:
        """One sentence for a runtime whose doctor says it cannot train, naming the fix."""
        match = re.match(r"(\d+)\.(\d+)", report.python)
        if match:
            problem = self.version_problem((int(match.group(1)), int(match.group(2))))
            if problem:
                return problem
        if report.torch is None:
            return (
                f"the trainer runtime {self.python} has no torch (the trainer's packages are "
                f"missing); {SETUP_FIX}"
            )
        problems = "; ".join(report.problems) or "doctor reports it not ready"
        return f"the trainer runtime {self.python} cannot train ({problems}); {SETUP_FIX}"

    def run_json(
        self,
        command: str,
        *args: str,
        timeout_s: float,
        accept_codes: tuple[int, ...] = (0,),
        secrets: Mapping[str, str] | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Run `python -m trainer COMMAND ARGS` (ARGS hold `--json`) and return its JSON object.

        The one place in the app that runs a trainer check: the child gets `child_env()` (no
        secrets), no stdin, and `timeout_s` to answer. A report comes back for every exit code
        in `accept_codes` (`check-data` exits 2 with a full report when the data is unusable;
        `doctor` exits 1 when the runtime has problems).

        A long command (`export`) streams: with `on_progress` or `cancel`, every stdout line
        that is a JSON object with a "progress" key goes to `on_progress` as it is printed, the
        last other JSON object is the report, `secrets` join the child's environment only,
        and setting `cancel` stops the child (`TrainerCommandCancelledError`).

        Raises:
            RuntimeNotReadyError: the runtime cannot start, did not finish in time, printed no
                JSON object, or exited with a code outside `accept_codes`; the sentence names
                the Python and what to do.
        """
        argv = self.argv(command, *args)
        shown = f"`{self.python} -m trainer {command}`"
        if on_progress is not None or cancel is not None:
            try:
                child = subprocess.Popen(  # streamed: read line by line below
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    encoding="utf-8",
                    errors="replace",
                    env=self.child_env(secrets),
                    stdin=subprocess.DEVNULL,
                )
            except OSError as exc:
                raise RuntimeNotReadyError(
                    f"cannot start the trainer runtime {self.python}: {exc.strerror or exc}; {_FIX}"
                ) from exc
            return _streamed(child, shown, timeout_s, accept_codes, on_progress, cancel)
        try:
            proc = subprocess.run(  # short-lived child: pipes are fine here
                argv,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout_s,
                env=self.child_env(),
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeNotReadyError(
                f"{shown} did not finish within {timeout_s:g} s; check that this Python and its "
                f"torch install work, or {_FIX}"
            ) from exc
        except OSError as exc:
            raise RuntimeNotReadyError(
                f"cannot start the trainer runtime {self.python}: {exc.strerror or exc}; {_FIX}"
            ) from exc
        data: dict[str, Any] | None = None
        try:
            decoded = json.loads(proc.stdout)
            if isinstance(decoded, dict):
                data = decoded
        except ValueError:
            pass  # no JSON at all: reported below with the child's last words
        if data is None or proc.returncode not in accept_codes:
            version_problem = self.version_problem(self.python_version())
            if version_problem:
                raise RuntimeNotReadyError(version_problem)
            what = "printed no JSON report" if data is None else "failed"
            said = f"{shown} {what} (exit code {proc.returncode}): " + (
                _tail(proc.stderr or proc.stdout) or "no output"
            )
            missing = re.search(r"No module named '(\w+)", proc.stderr or "")
            if missing:  # the packages are missing, not the trainer broken: say which
                said = (
                    f"the trainer runtime {self.python} has no {missing.group(1)} (the "
                    f"trainer's packages are missing): {said}"
                )
            raise RuntimeNotReadyError(f"{said}; {_FIX}")
        return data

    def start_server(self, *args: str) -> subprocess.Popen[bytes]:
        """Start `python -m trainer serve ARGS`: the model server, a long-lived child.

        The other gateway besides `run_json`: the server speaks JSON lines on its stdin and
        stdout (`trainer.serve_protocol`; `desktop.core.model_server.ModelServer` is the
        client, which also drains stderr) and exits when its stdin closes. It gets
        `child_env()`: the source checkout and, in offline mode, the offline variables.

        Raises:
            RuntimeNotReadyError: no runtime is set up, or its Python cannot be started.
        """
        argv = self.argv("serve", *args)
        try:
            return subprocess.Popen(  # long-lived; the client owns and reaps it
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.child_env(),
            )
        except OSError as exc:
            raise RuntimeNotReadyError(
                f"cannot start the trainer runtime {self.python}: {exc.strerror or exc}; {_FIX}"
            ) from exc

    def doctor(self, *, timeout_s: float = 300.0) -> DoctorReport:
        """`trainer doctor --json`: what this runtime has (torch, CUDA, GPUs, libraries).

        The report comes back whether or not the runtime can train (`report.ok`).

        Raises:
            RuntimeNotReadyError: the runtime cannot run the doctor or its report is malformed.
        """
        data = self.run_json("doctor", "--json", timeout_s=timeout_s, accept_codes=(0, 1))
        return self._parse(DoctorReport, data, "doctor")

    def check_data(
        self,
        path: str,
        *,
        fmt: str = "auto",
        split: str | None = None,
        field_map: Mapping[str, str | None] | None = None,
        model: str | None = None,
        max_length: int | None = None,
        all_tokens: bool = False,
        sample: int | None = None,
        timeout_s: float = 300.0,
    ) -> DataReport:
        """`trainer check-data PATH --json`: the dataset's report, usable or not.

        Args:
            path: a data file, saved-dataset folder or Hub id.
            fmt: the dataset format, or "auto" to detect it.
            split: the split of a saved or Hub dataset.
            field_map: column overrides (`{"prompt": "question"}`); None values are skipped.
            model: a model folder whose tokenizer counts the tokens.
            max_length: the training max length (the report gives the share cut).
            all_tokens: count every token as trained (completions-only off).
            sample: records to count tokens on (0: all); None: the trainer's default.
            timeout_s: how long the check may take.

        Raises:
            RuntimeNotReadyError: the runtime could not run the check.
        """
        args = [path, "--json", "--format", fmt]
        if split:
            args += ["--split", split]
        for key, column in (field_map or {}).items():
            if column:
                args += ["--field", f"{key}={column}"]
        if model:
            args += ["--model", model]
        if max_length is not None:
            args += ["--max-length", str(max_length)]
        if all_tokens:
            args.append("--all-tokens")
        if sample is not None:
            args += ["--sample", str(sample)]
        data = self.run_json("check-data", *args, timeout_s=timeout_s, accept_codes=(0, 2))
        return self._parse(DataReport, data, "check-data")

    def make_demo(self, folder: Path, *, timeout_s: float = 600.0) -> Path:
        """`trainer make-demo FOLDER --json`: write the tiny demo model, data and config.

        Returns:
            The folder holding the demo's `config.json`.

        Raises:
            RuntimeNotReadyError: the runtime could not write the demo (the folder already
                holds one, no torch, ...); the sentence carries the trainer's own words.
        """
        folder.mkdir(parents=True, exist_ok=True)
        data = self.run_json("make-demo", str(folder), "--json", timeout_s=timeout_s)
        report = self._parse(DemoReport, data, "make-demo")
        if not report.config.is_file():
            raise RuntimeNotReadyError(
                f"`{self.python} -m trainer make-demo` wrote no {report.config}; {_FIX}"
            )
        return report.config.parent

    def _parse(self, model: type[R], data: Mapping[str, Any], command: str) -> R:
        try:
            return model.parse(data)
        except ValueError as exc:
            raise RuntimeNotReadyError(
                f"`{self.python} -m trainer {command}` printed a report this app cannot read "
                f"({exc}); the trainer runtime may be another version than the app: {_FIX}"
            ) from exc


class TrainerCommandCancelledError(FtdeskError):
    """A streamed trainer command was stopped on request (its child is gone)."""

    exit_code = 130


def _streamed(
    child: subprocess.Popen[str],
    shown: str,
    timeout_s: float,
    accept_codes: tuple[int, ...],
    on_progress: Callable[[dict[str, Any]], None] | None,
    cancel: threading.Event | None,
) -> dict[str, Any]:
    """Follow a started trainer command: progress lines to `on_progress`, the last other JSON
    object as its report; stop it when `cancel` is set or `timeout_s` passes."""
    assert child.stdout is not None and child.stderr is not None
    stderr_tail: list[str] = []
    ended = threading.Event()
    why_stopped: list[str] = []

    def drain_stderr() -> None:  # a full stderr pipe would block the child
        assert child.stderr is not None
        for line in child.stderr:
            stderr_tail[:] = [*stderr_tail[-20:], line.rstrip()]

    def watch() -> None:  # the cancel and the deadline, while stdout is read below
        deadline = time.monotonic() + timeout_s
        while not ended.is_set():
            if cancel is not None and cancel.is_set():
                why_stopped.append("cancel")
            elif time.monotonic() > deadline:
                why_stopped.append("timeout")
            if why_stopped:
                child.terminate()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                return
            ended.wait(0.1)

    helpers = [threading.Thread(target=f, daemon=True) for f in (drain_stderr, watch)]
    for helper in helpers:
        helper.start()
    report: dict[str, Any] | None = None
    try:
        for line in child.stdout:
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a library's chatter on stdout
            if not isinstance(item, dict):
                continue
            if "progress" in item and isinstance(item["progress"], dict):
                if on_progress is not None:
                    on_progress(item["progress"])
            else:
                report = item
        code = child.wait()
    finally:
        ended.set()
        for helper in helpers:
            helper.join(15)
    if why_stopped == ["cancel"]:
        raise TrainerCommandCancelledError(f"{shown} was cancelled; nothing more was done")
    if why_stopped:
        raise RuntimeNotReadyError(f"{shown} did not finish within {timeout_s:g} s; {_FIX}")
    if report is None or code not in accept_codes:
        what = "printed no JSON report" if report is None else "failed"
        raise RuntimeNotReadyError(
            f"{shown} {what} (exit code {code}): "
            f"{' | '.join(stderr_tail[-3:]) or 'no output'}; {_FIX}"
        )
    return report


def require_usable(report: DataReport) -> DataReport:
    """`report` itself when the dataset is usable.

    Raises:
        DatasetError: the dataset is not usable; the message lists up to ten problems with
            their line (or record) numbers and how many more there are.
    """
    if report.usable:
        return report
    shown = report.problems[:10]
    lines = [f"{report.path}: the dataset is not usable:"]
    lines += [f"  {report.path}: {problem.render(report.location)}" for problem in shown]
    hidden = max(report.problem_count, len(report.problems)) - len(shown)
    if hidden > 0:
        lines.append(f"  ... and {hidden} more problems")
    elif not shown:
        lines.append("  (no details given)")
    raise DatasetError("\n".join(lines))
