"""The trainer runtime seen from the app: one gateway to `python -m trainer <command>`.

The trainer runs in its own Python (the settings' "trainer runtime", else the app's own
interpreter). Everything the app asks of it before a job exists goes through `TrainerRuntime`:
`doctor` (can this Python train?), `check-data` (is this dataset usable?) and `make-demo`
(write the built-in demo). `TrainerRuntime.run_json` is the one function in `desktop/` that
starts such a check and parses its JSON; `tests/test_one_trainer_runner.py` proves it.
`TrainerRuntime.start_server` starts the one long-lived child that is not a training run, the
model server (`python -m trainer serve`). `TrainerRuntime.child_env` is the one recipe for a
trainer child's environment (the source checkout on PYTHONPATH, the offline variables, the
secrets), used for every trainer process, the providers' training launches included.

Qt-free and blocking: the window and the job service call it from a worker thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from desktop.core.errors import DatasetError, RuntimeNotReadyError
from desktop.providers.offline import OFFLINE_ENV
from trainer.reports import DataReport, DemoReport, DoctorReport

if TYPE_CHECKING:
    from desktop.models import Settings

R = TypeVar("R", DataReport, DoctorReport, DemoReport)

__all__ = ["NOT_SET_UP", "TrainerRuntime", "require_usable", "source_root"]

# Where a person fixes a broken runtime; every RuntimeNotReadyError ends with it.
_FIX = (
    "choose a Python with the train extra (pip install 'finetune-desk[train]') as the trainer "
    "runtime in Settings, then run: finetune-desk doctor"
)


# A frozen app has no Python of its own to train with: the runtime must be chosen or set up.
NOT_SET_UP = (
    "the trainer runtime is not set up yet: choose a Python with the train extra in Settings → "
    "Trainer runtime (`finetune-desk runtime setup` will set one up for you in a later version)"
)


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

        `base` (default: this process's environment), then the source checkout first on
        PYTHONPATH (when running from one, so a runtime without the app installed finds
        `trainer`), then `OFFLINE_ENV` in offline mode, then `secrets` (environment variable
        name to value). Secrets come last so nothing in `base` can shadow them; they live only
        in the returned dict, never in a file.
        """
        env = dict(os.environ if base is None else base)
        root = source_root()
        if root is not None:
            parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            if str(root) not in parts:
                env["PYTHONPATH"] = os.pathsep.join([str(root), *parts])
        if self.offline:
            env.update(OFFLINE_ENV)
        env.update(secrets or {})
        return env

    def argv(self, command: str, *args: str) -> list[str]:
        """`[python, "-m", "trainer", command, *args]`.

        Raises:
            RuntimeNotReadyError: no runtime is set up (a frozen app without one).
        """
        if not self.python:
            raise RuntimeNotReadyError(NOT_SET_UP)
        return [self.python, "-m", "trainer", command, *args]

    def run_json(
        self,
        command: str,
        *args: str,
        timeout_s: float,
        accept_codes: tuple[int, ...] = (0,),
    ) -> dict[str, Any]:
        """Run `python -m trainer COMMAND ARGS` (ARGS hold `--json`) and return its JSON object.

        The one place in the app that runs a trainer check: the child gets `child_env()` (no
        secrets), no stdin, and `timeout_s` to answer. A report comes back for every exit code
        in `accept_codes` (`check-data` exits 2 with a full report when the data is unusable;
        `doctor` exits 1 when the runtime has problems).

        Raises:
            RuntimeNotReadyError: the runtime cannot start, did not finish in time, printed no
                JSON object, or exited with a code outside `accept_codes`; the sentence names
                the Python and what to do.
        """
        argv = self.argv(command, *args)
        shown = f"`{self.python} -m trainer {command}`"
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
            what = "printed no JSON report" if data is None else "failed"
            raise RuntimeNotReadyError(
                f"{shown} {what} (exit code {proc.returncode}): "
                f"{_tail(proc.stderr or proc.stdout) or 'no output'}; {_FIX}"
            )
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
