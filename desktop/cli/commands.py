"""The `finetune-desk` commands: one function per command, each returning its exit code."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.cli.output import (
    FOLLOW_EXIT,
    SERIES,
    ProgressPrinter,
    fmt_duration,
    fmt_float,
    fmt_metric,
    fmt_steps,
    fmt_time,
    job_json,
    print_json,
    table,
)
from desktop.cli.runpod_run import runpod_preflight
from desktop.cli.slurm_flags import slurm_settings
from desktop.core.errors import ConfigError, FtdeskError, RuntimeNotReadyError
from desktop.core.job_dirs import resume_point
from desktop.core.runtime import TrainerRuntime
from desktop.models import Job, JobState, MetricPoint, data_home, load_settings
from trainer.config import TrainingConfig
from trainer.reports import ProvenanceRecord, read_provenance

if TYPE_CHECKING:
    from desktop.core.service import JobService

__all__ = [
    "Context",
    "check_name",
    "cmd_cancel",
    "cmd_check_data",
    "cmd_doctor",
    "cmd_jobs",
    "cmd_keys",
    "cmd_logs",
    "cmd_metrics",
    "cmd_repair",
    "cmd_run",
    "cmd_show",
    "cmd_validate",
]


class Context:
    """Settings, offline flag, trainer runtime and the lazily built services of one command.

    Args:
        ns: the parsed command line.
    """

    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        try:
            self.settings = load_settings()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.offline = bool(getattr(ns, "offline", False)) or self.settings.offline
        self.runtime = TrainerRuntime.from_settings(self.settings, offline=self.offline)
        self.errors: list[str] = []

    def service(self) -> JobService:
        """A new job service for this command's settings and offline mode."""
        from desktop.core.service import DISK_FULL_GIVE_UP_S, JobService

        give_up = _seconds_from_env(DISK_FULL_GIVE_UP_ENV, DISK_FULL_GIVE_UP_S)
        return JobService(
            settings=self.settings,
            offline=self.offline,
            on_error=self._on_error,
            disk_full_give_up_s=give_up,
        )

    def _on_error(self, message: str) -> None:
        self.errors.append(message)
        print(f"error: {message}", file=sys.stderr, flush=True)


# How long `run --follow` and `logs -f` keep retrying while the disk is full (seconds).
DISK_FULL_GIVE_UP_ENV = "FTDESK_DISK_FULL_GIVE_UP_S"


def _seconds_from_env(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable `name`, else `default`.

    Raises:
        ConfigError: the variable is set to something that is not a positive number.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r}: give a positive number of seconds, or unset it")
    return value


def _name_limit() -> int:
    """The config's own bound on a run name (TrainingConfig.name's max_length)."""
    for rule in TrainingConfig.model_fields["name"].metadata:
        limit = getattr(rule, "max_length", None)
        if isinstance(limit, int):
            return limit
    return 120


def check_name(name: str) -> None:
    """Refuse a `--name` that would break a table or drive the terminal (a newline, an ANSI
    escape) or that the config would reject (empty, too long).

    Raises:
        ConfigError: naming `--name` and the rule; the value itself is never echoed raw.
    """
    limit = _name_limit()
    if not name.strip() or len(name) > limit or not name.isprintable():
        raise ConfigError(
            f"--name must be one line of 1 to {limit} printable characters (no newline or "
            f"control character); got {len(name)} character(s): {name[:40]!a}"
        )


def _arun(factory: Callable[[], Any]) -> Any:
    return asyncio.run(factory())


# ---------------------------------------------------------------------------------------------
# Commands


async def _follow(ctx: Context, service: JobService, job: Job, out: Any) -> int:
    """Print progress until the job ends; the exit code says how it ended."""
    printer = ProgressPrinter(job.id, out)
    service.add_listener(printer)
    printer.job_changed(job)
    ctx.ns.following = job.id
    failures = 0
    while True:
        job = await service.wait(job.id)
        if job.is_final:
            break
        if job.id in service.abandoned:  # the disk is full: said on stderr already
            print(f"{job.id}: stopped following; see: finetune-desk show {job.id}", file=out)
            return 1
        failures += 1
        if failures >= 3:
            print(f"error: lost track of job {job.id}; see: finetune-desk show {job.id}")
            return 1
    ctx.ns.following = None
    if job.state is JobState.COMPLETED:
        print(
            f"{job.id}: completed  final loss {fmt_float(job.last_loss)}  "
            f"output {job.output_dir or '-'}",
            file=out,
        )
    elif job.state is JobState.FAILED:
        print(f"{job.id}: failed: {job.state_reason}", file=out)
        print(f"see the console with: finetune-desk logs {job.id}", file=out)
    return FOLLOW_EXIT.get(job.state, 1)


def _warn_about_disk_space(config_path: Path) -> None:
    """A `warning:` line on stderr when the run's checkpoints and output will not fit on the
    jobs folder's drive. Silent when no estimate can be made (the launch names a bad config)."""
    from desktop.core.checks import check_disk_space, resolve_config

    try:
        space = check_disk_space(resolve_config(config_path), data_home() / "jobs")
    except (FtdeskError, OSError):
        return
    warning = space.warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def cmd_run(ctx: Context) -> int:
    """`run CONFIG [--provider local] [--follow] [--json]` and `run --resume JOB`."""
    ns = ctx.ns
    if ns.resume and ns.config:
        raise ConfigError("run: give either CONFIG or --resume JOB, not both")
    if not ns.resume and not ns.config:
        raise ConfigError("run: give a CONFIG file, or --resume JOB to continue a job")
    if ns.name is not None:
        check_name(ns.name)
    if ns.force and not ns.resume:
        raise ConfigError("run: --force only applies to --resume JOB")
    ctx.settings = runpod_preflight(ns, ctx.settings)  # --gpu, --budget: this run only
    ctx.settings = slurm_settings(ns, ctx.settings)  # --cluster, --nodes, ...: this run only

    async def go() -> int:
        service = ctx.service()
        try:
            notes: list[str] = []
            if ns.resume:
                job = await service.resume(ns.resume, force=ns.force, on_note=notes.append)
            else:
                await asyncio.to_thread(_warn_about_disk_space, Path(ns.config))
                job = await service.launch(Path(ns.config), provider=ns.provider, name=ns.name)
            progress = sys.stderr if ns.json else sys.stdout
            verb = "resumed" if ns.resume else "launched"
            print(f"{job.id}: {verb} ({job.state.value}); job folder {job.job_dir}", file=progress)
            if ns.resume:  # where it continues, as the job's history records it
                queued = [t for t in service.store.transitions(job.id) if t.new is JobState.QUEUED]
                if queued:
                    print(f"{job.id}: {queued[-1].reason}", file=progress)
            for note in notes:  # no provenance recorded, or the changes a --force went over
                print(f"{job.id}: {note}", file=progress)
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
                print_json(job_json(job))
            return code
        finally:
            await service.close()

    result: int = _arun(go)
    return result


def cmd_jobs(ctx: Context) -> int:
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
        print_json([job_json(j) for j in jobs])
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
            fmt_steps(j),
            fmt_float(j.last_loss),
            fmt_time(j.created_at),
        ]
        for j in jobs
    ]
    print(table(rows, ["ID", "NAME", "TARGET", "STATE", "STEP", "LOSS", "CREATED"]))
    return 0


def cmd_show(ctx: Context) -> int:
    """`show JOB [--json]`: one job in full: state, progress, final loss, output path."""

    async def go() -> tuple[Job, list[Any], int, Any]:
        service = ctx.service()
        try:
            job = (await service.refresh(ctx.ns.job))[0]
            point = None
            if job.state in (JobState.CANCELLED, JobState.FAILED):
                # A report: the cheap check, never a read of every checkpoint byte (tens of GB).
                point = await asyncio.to_thread(resume_point, job.job_dir, thorough=False)
            transitions = service.store.transitions(job.id)
            return job, transitions, service.store.metric_count(job.id), point
        finally:
            await service.close()

    job, transitions, count, point = _arun(go)
    record, unreadable = _provenance(job)
    if ctx.ns.json:
        data = job_json(job)
        data["transitions"] = [t.model_dump(mode="json") for t in transitions]
        data["metric_points"] = count
        data["resume_point"] = None
        if point is not None:
            data["resume_point"] = {
                "step": point.step,
                "checkpoint": None if point.path is None else str(point.path),
                "skipped": [
                    {"step": s.step, "checkpoint": str(s.path), "problem": s.problem}
                    for s in point.skipped
                ],
            }
        # The newest attempt (what the checkpoints come from); every attempt beside it.
        latest = record.latest if record else None
        data["provenance"] = latest.to_json_dict() if latest else None
        data["provenance_attempts"] = record.to_json_dict()["attempts"] if record else []
        if unreadable:
            data["provenance_error"] = unreadable
        print_json(data)
        return 0
    loss_label = "final loss" if job.state is JobState.COMPLETED else "last loss"
    rows = [
        ("job", job.id),
        ("name", job.name),
        ("target", job.provider),
        ("state", job.state.value + (f" ({job.state_reason})" if job.state_reason else "")),
        ("step", fmt_steps(job)),
        (loss_label, fmt_float(job.last_loss)),
        ("best eval loss", fmt_float(job.best_eval_loss)),
        ("output", str(job.output_dir) if job.output_dir else "-"),
        ("last checkpoint", job.last_checkpoint or "-"),
        *([("resumable from", point.describe())] if point is not None else []),
        ("exit code", "-" if job.exit_code is None else str(job.exit_code)),
        ("model", job.config.model.name_or_path),
        ("dataset", job.config.dataset.path),
        ("method", job.config.method),
        ("created", fmt_time(job.created_at)),
        ("started", fmt_time(job.started_at)),
        ("finished", fmt_time(job.finished_at)),
        ("job folder", str(job.job_dir)),
        ("metric points", str(count)),
    ]
    if not job.is_final and job.eta_seconds is not None:
        rows.insert(5, ("ETA", fmt_duration(job.eta_seconds)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}} {value}")
    latest = record.latest if record else None
    if latest is None:
        print(f"provenance: {unreadable or 'not recorded'}")
    else:
        assert record is not None
        print(
            f"provenance: attempt {latest.attempt} of {len(record.attempts)}, {latest.recorded_at}"
        )
        for line in latest.to_lines():
            print(f"  {line}")
    print("history:")
    for t in transitions:
        old = t.old.value if t.old else "-"
        reason = f"  {t.reason}" if t.reason else ""
        print(f"  {fmt_time(t.time)}  {old} -> {t.new.value}{reason}")
    return 0


def _provenance(job: Job) -> tuple[ProvenanceRecord | None, str | None]:
    """The job's provenance record, or None and why not (never fails: `show` must show)."""
    try:
        return read_provenance(job.job_dir), None
    except ValueError as exc:
        return None, f"unreadable: {exc}"


def cmd_logs(ctx: Context) -> int:
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
            offset = 0
            while True:
                chunk = await service.logs(job.id, offset)
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


def cmd_cancel(ctx: Context) -> int:
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


def cmd_metrics(ctx: Context) -> int:
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
        print_json([{"step": step, **values} for step, values in sorted(steps.items())])
        return 0
    if not steps:
        print(f"{job.id}: no metrics logged yet ({job.state.value})")
        return 0
    present = {name for values in steps.values() for name in values}
    series = [n for n in SERIES if n in present] + sorted(present - set(SERIES))
    series = [n for n in series if n not in ("eta_seconds",)]
    rows = [
        [str(step)] + [fmt_metric(values.get(name)) for name in series]
        for step, values in sorted(steps.items())
    ]
    print(table(rows, ["STEP", *[s.upper() for s in series]]))
    return 0


def cmd_validate(ctx: Context) -> int:
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
        if report.invalid_records:  # accepted only with dataset.skip_invalid_records
            lines = ", ".join(str(p.line) for p in report.problems[:10])
            count = report.invalid_records
            print(
                f"  data     {count} invalid record{'s' if count != 1 else ''} will be skipped "
                f"({report.location} {lines})"
            )
    return 0


def cmd_check_data(ctx: Context) -> int:
    """`check-data FILE [options] [--json]`: the trainer runtime's dataset check; exit 0 when
    the data is usable, 2 when not."""
    ns = ctx.ns
    field_map: dict[str, str | None] = {}
    for item in ns.field:
        key, sep, column = item.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise ConfigError(f"check-data: --field {item!r} must look like FIELD=COLUMN")
        field_map[key.strip()] = column.strip()
    report = ctx.runtime.check_data(
        ns.file,
        fmt=ns.format,
        split=ns.split,
        field_map=field_map,
        model=ns.model,
        max_length=ns.max_length,
        all_tokens=ns.all_tokens,
        sample=ns.sample,
        timeout_s=_CHECK_DATA_TIMEOUT_S,
    )
    if ns.json:
        print_json(report.to_json_dict())
    else:
        print(report.to_text())
    return 0 if report.usable else 2


# Counting tokens of every record of a big file with a real tokenizer takes minutes; a person
# at the terminal can press Ctrl+C sooner.
_CHECK_DATA_TIMEOUT_S = 3600.0


def _read_secret_value(name: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{name} (input hidden): ")
    return sys.stdin.readline().strip()


def cmd_keys(ctx: Context) -> int:
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


def cmd_doctor(ctx: Context) -> int:
    """`doctor [--json]`: the app's folders and keychain, then the trainer runtime's own
    report; exit 0 when the runtime can train, 1 when not. With `--json` the runtime's report
    is stdout's only content (the app's lines go to stderr)."""
    from desktop.core.secrets import SecretStore

    head = sys.stderr if ctx.ns.json else sys.stdout
    print(f"data folder:   {data_home()}", file=head)
    print(f"offline mode:  {'on' if ctx.offline else 'off'}", file=head)
    print(f"keychain:      {SecretStore().backend_description()}", file=head)
    print(f"trainer:       {ctx.runtime.python}", file=head, flush=True)
    report = ctx.runtime.doctor()
    if ctx.ns.json:
        print_json(report.to_json_dict())
    else:
        print(report.to_text())
    if not report.ok:  # exit 1, with the one sentence that names the fix
        raise RuntimeNotReadyError(ctx.runtime.not_ready_sentence(report))
    return 0


def cmd_repair(ctx: Context) -> int:
    """`repair`: rebuild a damaged job database from the job folders (the damaged file is
    moved aside, never deleted); a sound database is left alone."""
    from desktop.cli.repair import rebuild_store

    home = data_home()
    aside, count, skipped = rebuild_store(home)
    if aside is None:
        print(f"{home}: the job database is sound; nothing to repair")
        return 0
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"rebuilt {count} job(s) from {home / 'jobs'}; the damaged file is kept as {aside}")
    return 0
