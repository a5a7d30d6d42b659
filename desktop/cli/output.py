"""What the `finetune-desk` commands print: tables, durations, times and live progress."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from desktop.models import Job, JobState, SeriesColumns

EXIT_INTERRUPTED = 130
# 128 + SIGPIPE: what a shell reports for a tool whose reader went away (`... | head`).
EXIT_BROKEN_PIPE = 141
FOLLOW_EXIT = {JobState.COMPLETED: 0, JobState.FAILED: 1, JobState.CANCELLED: EXIT_INTERRUPTED}
SERIES = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "tokens_seen")


def fmt_float(value: float | None, spec: str = ".4f") -> str:
    """`value` formatted with `spec`, or "-" when there is none."""
    return "-" if value is None else format(value, spec)


def fmt_duration(seconds: float | None) -> str:
    """`H:MM:SS`, or "-" when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def fmt_time(stamp: float | None) -> str:
    """A Unix time as local `YYYY-MM-DD HH:MM:SS`, or "-"."""
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def fmt_steps(job: Job) -> str:
    """`step/total` (or `step` when the total is unknown, "-" before the first step)."""
    if job.step is None:
        return "-"
    return f"{job.step}/{job.total_steps}" if job.total_steps else str(job.step)


def job_json(job: Job) -> dict[str, Any]:
    """The job as a JSON-ready dict."""
    data: dict[str, Any] = job.model_dump(mode="json")
    return data


def print_json(data: Any) -> None:
    """`data` as indented JSON on stdout."""
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def table(rows: list[list[str]], header: list[str]) -> str:
    """`rows` under `header` in left-aligned columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


class ProgressPrinter:
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
        parts = [f"step {fmt_steps(job)}", f"loss {fmt_float(job.last_loss)}"]
        if self._lr is not None:
            parts.append(f"lr {self._lr:.2e}")
        if job.best_eval_loss is not None:
            parts.append(f"best eval {job.best_eval_loss:.4f}")
        parts.append(f"ETA {fmt_duration(job.eta_seconds)}")
        self._say("  ".join(parts))


def fmt_metric(value: float | None) -> str:
    """A metric with 6 significant digits, or nothing when the step did not log it."""
    return "" if value is None else f"{value:.6g}"
