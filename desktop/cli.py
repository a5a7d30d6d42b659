"""`finetune-desk`: the app's services without a window.

Everything the window can launch or inspect, a script can too: run, jobs, show, logs, cancel,
metrics, validate, check-data, keys, doctor. `--json` prints machine-readable output. Expected
errors print one sentence naming the field, line or value and exit with the error's code (2 for
bad input); `finetune-desk` alone opens the window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from desktop.core.errors import ConfigError, FtdeskError
from desktop.models import Job, JobState, MetricPoint, SeriesColumns, data_home, load_settings

__all__ = ["build_parser", "main"]

log = logging.getLogger("desktop.cli")

EXIT_INTERRUPTED = 130
_FOLLOW_EXIT = {JobState.COMPLETED: 0, JobState.FAILED: 1, JobState.CANCELLED: EXIT_INTERRUPTED}
_SERIES = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "tokens_seen")


# ---------------------------------------------------------------------------------------------
# Formatting


def _fmt_float(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _fmt_time(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _fmt_steps(job: Job) -> str:
    if job.step is None:
        return "-"
    return f"{job.step}/{job.total_steps}" if job.total_steps else str(job.step)


def _job_json(job: Job) -> dict[str, Any]:
    data: dict[str, Any] = job.model_dump(mode="json")
    return data


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


class _ProgressPrinter:
    """A `JobListener` that prints one line per new step and one per state change."""

    def __init__(self, job_id: str, out: Any) -> None:
        self.job_id = job_id
        self.out = out
        self._state: JobState | None = None
        self._step: int | None = None
        self._lr: float | None = None

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def job_added(self, job: Job) -> None:
        """Ignored: the followed job exists already."""

    def job_removed(self, job_id: str) -> None:
        """Ignored."""

    def log_added(self, job_id: str, lines: list[str]) -> None:
        """Ignored: `logs -f` shows the console."""

    def metrics_added(self, job_id: str, columns: Mapping[str, SeriesColumns]) -> None:
        """Remember the learning rate for the next progress line."""
        lr = columns.get("learning_rate")
        if job_id == self.job_id and lr:
            self._lr = lr.values[-1]

    def job_changed(self, job: Job) -> None:
        """Print the state when it changed and a progress line when the step moved (the last
        steps before the final state first)."""
        if job.id != self.job_id:
            return
        if job.is_final:
            self._progress(job)
        if job.state is not self._state:
            self._state = job.state
            reason = f" ({job.state_reason})" if job.state_reason else ""
            self._say(f"{job.id}: {job.state.value}{reason}")
        self._progress(job)

    def _progress(self, job: Job) -> None:
        if job.step is None or job.step == self._step:
            return
        self._step = job.step
        parts = [f"step {_fmt_steps(job)}", f"loss {_fmt_float(job.last_loss)}"]
        if self._lr is not None:
            parts.append(f"lr {self._lr:.2e}")
        if job.best_eval_loss is not None:
            parts.append(f"best eval {job.best_eval_loss:.4f}")
        parts.append(f"ETA {_fmt_duration(job.eta_seconds)}")
        self._say("  ".join(parts))


# ---------------------------------------------------------------------------------------------
# Context shared by the commands


class _Context:
    """Settings, offline flag and the lazily built services of one command."""

    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        try:
            self.settings = load_settings()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.offline = bool(getattr(ns, "offline", False)) or self.settings.offline
        self.errors: list[str] = []

    @property
    def python(self) -> str:
        return self.settings.trainer_python or sys.executable

    def trainer_env(self) -> dict[str, str]:
        from desktop.providers.offline import OFFLINE_ENV

        env = dict(os.environ)
        if self.offline:
            env.update(OFFLINE_ENV)
        return env

    def service(self) -> Any:
        from desktop.core.service import JobService

        return JobService(settings=self.settings, offline=self.offline, on_error=self._on_error)

    def _on_error(self, message: str) -> None:
        self.errors.append(message)
        print(f"error: {message}", file=sys.stderr, flush=True)


def _arun(factory: Callable[[], Any]) -> Any:
    return asyncio.run(factory())


# ---------------------------------------------------------------------------------------------
# Commands


async def _follow(ctx: _Context, service: Any, job: Job, out: Any) -> int:
    """Print progress until the job ends; the exit code says how it ended."""
    printer = _ProgressPrinter(job.id, out)
    service.add_listener(printer)
    printer.job_changed(job)
    ctx.ns.following = job.id
    failures = 0
    while True:
        job = await service.wait(job.id)
        if job.is_final:
            break
        failures += 1
        if failures >= 3:
            print(f"error: lost track of job {job.id}; see: finetune-desk show {job.id}")
            return 1
    ctx.ns.following = None
    if job.state is JobState.COMPLETED:
        print(
            f"{job.id}: completed  final loss {_fmt_float(job.last_loss)}  "
            f"output {job.output_dir or '-'}",
            file=out,
        )
    elif job.state is JobState.FAILED:
        print(f"{job.id}: failed: {job.state_reason}", file=out)
        print(f"see the console with: finetune-desk logs {job.id}", file=out)
    return _FOLLOW_EXIT.get(job.state, 1)


def cmd_run(ctx: _Context) -> int:
    """`run CONFIG [--provider local] [--follow] [--json]` and `run --resume JOB`."""
    ns = ctx.ns
    if ns.resume and ns.config:
        raise ConfigError("run: give either CONFIG or --resume JOB, not both")
    if not ns.resume and not ns.config:
        raise ConfigError("run: give a CONFIG file, or --resume JOB to continue a job")

    async def go() -> int:
        service = ctx.service()
        try:
            if ns.resume:
                job = await service.resume(ns.resume)
            else:
                job = await service.launch(Path(ns.config), provider=ns.provider, name=ns.name)
            progress = sys.stderr if ns.json else sys.stdout
            verb = "resumed" if ns.resume else "launched"
            print(f"{job.id}: {verb} ({job.state.value}); job folder {job.job_dir}", file=progress)
            code = 0
            if ns.follow:
                code = await _follow(ctx, service, job, progress)
                job = service.get(job.id)
            else:
                print(
                    f"watch it with: finetune-desk show {job.id}  |  finetune-desk logs "
                    f"{job.id} -f",
                    file=progress,
                )
            if ns.json:
                _print_json(_job_json(job))
            return code
        finally:
            await service.close()

    result: int = _arun(go)
    return result


def cmd_jobs(ctx: _Context) -> int:
    """`jobs [--json]`: every job, oldest first."""

    async def go() -> list[Job]:
        service = ctx.service()
        try:
            jobs: list[Job] = await service.refresh()
            return jobs
        finally:
            await service.close()

    jobs: list[Job] = _arun(go)
    if ctx.ns.json:
        _print_json([_job_json(j) for j in jobs])
        return 0
    if not jobs:
        print("no jobs yet; start one with: finetune-desk run CONFIG")
        return 0
    rows = [
        [
            j.id,
            j.name,
            j.provider,
            j.state.value,
            _fmt_steps(j),
            _fmt_float(j.last_loss),
            _fmt_time(j.created_at),
        ]
        for j in jobs
    ]
    print(_table(rows, ["ID", "NAME", "TARGET", "STATE", "STEP", "LOSS", "CREATED"]))
    return 0


def cmd_show(ctx: _Context) -> int:
    """`show JOB [--json]`: one job in full: state, progress, final loss, output path."""

    async def go() -> tuple[Job, list[Any], int]:
        service = ctx.service()
        try:
            job = (await service.refresh(ctx.ns.job))[0]
            return job, service.store.transitions(job.id), service.store.metric_count(job.id)
        finally:
            await service.close()

    job, transitions, count = _arun(go)
    if ctx.ns.json:
        data = _job_json(job)
        data["transitions"] = [t.model_dump(mode="json") for t in transitions]
        data["metric_points"] = count
        _print_json(data)
        return 0
    loss_label = "final loss" if job.state is JobState.COMPLETED else "last loss"
    rows = [
        ("job", job.id),
        ("name", job.name),
        ("target", job.provider),
        ("state", job.state.value + (f" ({job.state_reason})" if job.state_reason else "")),
        ("step", _fmt_steps(job)),
        (loss_label, _fmt_float(job.last_loss)),
        ("best eval loss", _fmt_float(job.best_eval_loss)),
        ("output", str(job.output_dir) if job.output_dir else "-"),
        ("last checkpoint", job.last_checkpoint or "-"),
        ("exit code", "-" if job.exit_code is None else str(job.exit_code)),
        ("model", job.config.model.name_or_path),
        ("dataset", job.config.dataset.path),
        ("method", job.config.method),
        ("created", _fmt_time(job.created_at)),
        ("started", _fmt_time(job.started_at)),
        ("finished", _fmt_time(job.finished_at)),
        ("job folder", str(job.job_dir)),
        ("metric points", str(count)),
    ]
    if not job.is_final and job.eta_seconds is not None:
        rows.insert(5, ("ETA", _fmt_duration(job.eta_seconds)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}} {value}")
    print("history:")
    for t in transitions:
        old = t.old.value if t.old else "-"
        reason = f"  {t.reason}" if t.reason else ""
        print(f"  {_fmt_time(t.time)}  {old} -> {t.new.value}{reason}")
    return 0


def cmd_logs(ctx: _Context) -> int:
    """`logs JOB [-f]`: the trainer's console; `-f` keeps printing until the job ends."""

    from desktop.core.redaction import redact

    async def go() -> int:
        service = ctx.service()
        carry = ""  # a line not yet complete: a secret may continue in the next chunk

        def show(text: str, final: bool = False) -> None:
            nonlocal carry
            text = carry + text
            cut = len(text) if final else text.rfind("\n") + 1
            carry = text[cut:]
            if cut:
                sys.stdout.write(redact(text[:cut]))
                sys.stdout.flush()

        try:
            job = service.get(ctx.ns.job)
            provider = service.provider(job.provider)
            offset = 0
            while True:
                chunk = await provider.logs(job, offset)
                if chunk.text:
                    show(chunk.text)
                moved = chunk.next_offset != offset
                offset = chunk.next_offset
                if moved:
                    continue
                if not ctx.ns.follow or job.is_final:
                    show("", final=True)
                    return 0
                await asyncio.sleep(service.settings.poll_interval_s)
                job = await service.poll_once(job.id)
        finally:
            await service.close()

    code: int = _arun(go)
    return code


def cmd_cancel(ctx: _Context) -> int:
    """`cancel JOB [--no-wait]`: stop a job; the trainer checkpoints first."""

    async def go() -> int:
        service = ctx.service()
        try:
            job = await service.cancel(ctx.ns.job)
            print(f"{job.id}: cancel requested (the trainer saves a checkpoint first)")
            if ctx.ns.no_wait:
                return 0
            job = await service.wait(job.id, timeout=service.settings.cancel_grace_s + 30.0)
            if not job.is_final:
                print(f"{job.id}: still {job.state.value}; check with: finetune-desk show {job.id}")
                return 1
            checkpoint = f"; checkpoint {job.last_checkpoint}" if job.last_checkpoint else ""
            print(f"{job.id}: {job.state.value}{checkpoint}")
            if job.state is JobState.CANCELLED and job.last_checkpoint:
                print(f"continue it with: finetune-desk run --resume {job.id}")
            return 0
        finally:
            await service.close()

    code: int = _arun(go)
    return code


def cmd_metrics(ctx: _Context) -> int:
    """`metrics JOB [--csv | --json]`: every logged step with its values."""

    async def go() -> tuple[Job, list[MetricPoint], Any]:
        service = ctx.service()
        try:
            job = (await service.refresh(ctx.ns.job))[0]
            if ctx.ns.csv:
                service.export_metrics_csv(job.id, sys.stdout)
                return job, [], None
            return job, service.store.metrics(job.id), None
        finally:
            await service.close()

    job, points, _ = _arun(go)
    if ctx.ns.csv:
        return 0
    steps: dict[int, dict[str, float]] = {}
    for p in points:
        steps.setdefault(p.step, {})[p.name] = p.value
    if ctx.ns.json:
        _print_json([{"step": step, **values} for step, values in sorted(steps.items())])
        return 0
    if not steps:
        print(f"{job.id}: no metrics logged yet ({job.state.value})")
        return 0
    present = {name for values in steps.values() for name in values}
    series = [n for n in _SERIES if n in present] + sorted(present - set(_SERIES))
    series = [n for n in series if n not in ("eta_seconds",)]
    rows = [
        [str(step)] + [_fmt_metric(values.get(name)) for name in series]
        for step, values in sorted(steps.items())
    ]
    print(_table(rows, ["STEP", *[s.upper() for s in series]]))
    return 0


def _fmt_metric(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def cmd_validate(ctx: _Context) -> int:
    """`validate CONFIG`: every check a launch makes (fields, files, offline, data), no launch."""

    async def go() -> Any:
        service = ctx.service()
        try:
            return await service.validate(Path(ctx.ns.config))
        finally:
            await service.close()

    config, reports = _arun(go)
    print(f"{ctx.ns.config}: valid")
    print(f"  model    {config.model.name_or_path}")
    print(f"  method   {config.method}")
    for report in reports:
        print(f"  data     {report.path}: {report.records} records, format {report.format}")
    return 0


def cmd_check_data(ctx: _Context) -> int:
    """`check-data FILE [trainer options]`: the trainer runtime's dataset check, as it prints it."""
    cmd = [ctx.python, "-m", "trainer", "check-data", ctx.ns.file, *ctx.ns.rest]
    try:
        return subprocess.run(cmd, env=ctx.trainer_env(), check=False).returncode
    except OSError as exc:
        from desktop.core.errors import RuntimeNotReadyError

        raise RuntimeNotReadyError(
            f"cannot start the trainer runtime {ctx.python}: {exc.strerror or exc}"
        ) from exc


def _read_secret_value(name: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{name} (input hidden): ")
    return sys.stdin.readline().strip()


def cmd_keys(ctx: _Context) -> int:
    """`keys set|status|delete NAME`: the keychain. A value is read, never printed."""
    from desktop.core.secrets import SecretName, SecretStore, parse_secret_name

    store = SecretStore()
    action, name = ctx.ns.action, ctx.ns.name
    if action == "status":
        names = [parse_secret_name(name)] if name else list(SecretName)
        for secret in names:
            print(store.status(secret).describe())
        return 0
    if not name:
        raise ConfigError(f"keys {action}: give a NAME ({', '.join(n.value for n in SecretName)})")
    secret = parse_secret_name(name)
    if action == "set":
        value = _read_secret_value(secret.value)
        store.set(secret, value)
        print(f"{secret.value}: stored in {store.backend_description()}")
        return 0
    removed = store.delete(secret)
    print(f"{secret.value}: {'deleted' if removed else 'was not stored'}")
    return 0


def cmd_doctor(ctx: _Context) -> int:
    """`doctor`: the app's folders and keychain, then the trainer runtime's own report."""
    from desktop.core.secrets import SecretStore

    print(f"data folder:   {data_home()}")
    print(f"offline mode:  {'on' if ctx.offline else 'off'}")
    print(f"keychain:      {SecretStore().backend_description()}")
    print(f"trainer:       {ctx.python}")
    sys.stdout.flush()
    cmd = [ctx.python, "-m", "trainer", "doctor", *(["--json"] if ctx.ns.json else [])]
    try:
        return subprocess.run(cmd, env=ctx.trainer_env(), check=False).returncode
    except OSError as exc:
        print(f"the trainer runtime cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------
# The parser


def build_parser() -> argparse.ArgumentParser:
    """The `finetune-desk` argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--offline",
        action="store_true",
        default=argparse.SUPPRESS,
        help="refuse every network path (also a setting)",
    )
    parser = argparse.ArgumentParser(
        prog="finetune-desk",
        description="Fine-tune language models locally or on RunPod. Without a command, opens "
        "the window.",
    )
    parser.add_argument("--offline", action="store_true", help="refuse every network path")
    parser.add_argument("--demo", action="store_true", help="open the built-in demo")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable[[_Context], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "launch a training job from a config file (or resume one)")
    p.add_argument("config", nargs="?", help="a config file (.json or .yaml)")
    p.add_argument("--resume", metavar="JOB", help="continue a cancelled or failed job")
    p.add_argument("--provider", default="local", help="where to run it (default: local)")
    p.add_argument("--name", help="a name for the job list (default: the config's name)")
    p.add_argument("--follow", "-f", action="store_true", help="print progress until it ends")
    p.add_argument("--json", action="store_true", help="print the job as JSON")

    p = add("jobs", cmd_jobs, "list jobs")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("show", cmd_show, "show one job: state, progress, final loss, output")
    p.add_argument("job", metavar="JOB", help="job id (or a unique prefix)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("logs", cmd_logs, "print a job's console output")
    p.add_argument("job", metavar="JOB", help="job id (or a unique prefix)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")

    p = add("cancel", cmd_cancel, "cancel a job (it checkpoints first)")
    p.add_argument("job", metavar="JOB", help="job id (or a unique prefix)")
    p.add_argument("--no-wait", action="store_true", help="return without waiting for the end")

    p = add("metrics", cmd_metrics, "print every logged step of a job")
    p.add_argument("job", metavar="JOB", help="job id (or a unique prefix)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV on stdout")
    fmt.add_argument("--json", action="store_true", help="JSON on stdout")

    p = add("validate", cmd_validate, "check a config and its data without launching")
    p.add_argument("config", help="a config file (.json or .yaml)")

    p = add("check-data", cmd_check_data, "check a dataset with the trainer runtime")
    p.add_argument("file", help="a data file (.jsonl, .json, .csv, .parquet) or folder")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="more `trainer check-data` options")

    p = add("keys", cmd_keys, "keychain secrets: set, status, delete")
    p.add_argument("action", choices=("set", "status", "delete"))
    p.add_argument(
        "name", nargs="?", metavar="NAME", help="runpod_api_key, hf_token or wandb_api_key"
    )

    p = add("doctor", cmd_doctor, "describe this installation and the trainer runtime")
    p.add_argument("--json", action="store_true", help="the trainer's report as JSON")
    return parser


def _open_window(argv: Sequence[str]) -> int:
    # The window (Qt) loads only when asked for, never with the CLI's commands.
    from desktop.views.app import main as window_main

    return int(window_main(list(argv)))


def _setup_logging(verbose: bool) -> None:
    from desktop.core.redaction import install_redaction

    install_redaction()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run `finetune-desk` with `argv` (default: the process's arguments); returns the exit
    code."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        ns = parser.parse_args(args)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    _setup_logging(ns.verbose)
    ns.following = None
    if ns.command is None:
        return _open_window(args)
    try:
        ctx = _Context(ns)
        code: int = ns.func(ctx)
        return code
    except FtdeskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        job_id = getattr(ns, "following", None)
        if job_id:
            print(
                f"\nstopped following {job_id}; it keeps running. Cancel it with: "
                f"finetune-desk cancel {job_id}",
                file=sys.stderr,
            )
        else:
            print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
