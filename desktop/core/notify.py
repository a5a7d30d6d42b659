"""Desktop notifications when a job completes, fails or is cancelled.

`JobEndNotifier` is a `JobListener`: it remembers each job's state and, when a job it saw
active reaches a final state, sends one notification with the final loss, the duration and the
cost. Jobs loaded already finished (at start) never notify. Sending goes through the system
tray icon when the platform has one, else `notify-send`, else nothing (a debug log line).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Mapping

from desktop.models import Job, JobState, SeriesColumns

__all__ = ["JobEndNotifier", "Sender", "job_end_message", "make_sender"]

log = logging.getLogger(__name__)

#: (title, body) -> None
Sender = Callable[[str, str], None]


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def job_end_message(job: Job) -> tuple[str, str]:
    """The notification for a job that has ended: a title and one line of facts."""
    verb = {
        JobState.COMPLETED: "completed",
        JobState.FAILED: "failed",
        JobState.CANCELLED: "was cancelled",
    }.get(job.state, job.state.value)
    title = f"{job.name} {verb}"
    parts: list[str] = []
    if job.last_loss is not None:
        parts.append(f"final loss {job.last_loss:.4f}")
    if job.best_eval_loss is not None:
        parts.append(f"best eval loss {job.best_eval_loss:.4f}")
    start = job.started_at or job.created_at
    if job.finished_at is not None:
        parts.append(f"took {_duration(job.finished_at - start)}")
    if job.step is not None and job.total_steps:
        parts.append(f"step {job.step}/{job.total_steps}")
    if job.cost_usd is not None:
        parts.append(f"cost ${job.cost_usd:.2f}")
    body = ", ".join(parts) or job.state_reason
    if job.state is JobState.FAILED and job.state_reason:
        body = f"{body}. {job.state_reason}" if parts else job.state_reason
    return title, body


def _notify_send(title: str, body: str) -> None:
    try:
        subprocess.Popen(
            ["notify-send", "--app-name=Finetune Desk", title, body],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        log.debug("notify-send failed: %s", exc)


def make_sender(tray_message: Sender | None) -> Sender:
    """The best way to notify here: the tray icon's message, else notify-send, else a log line.

    Args:
        tray_message: shows a message from the system tray icon, when the platform has a tray
            that supports messages (the window passes one); None otherwise.
    """
    if tray_message is not None:
        return tray_message
    if shutil.which("notify-send"):
        return _notify_send

    def log_only(title: str, body: str) -> None:
        log.debug("no notification service; would notify: %s: %s", title, body)

    return log_only


class JobEndNotifier:
    """A `JobListener` that notifies once per job when it ends while being watched.

    Args:
        send: delivers a (title, body) notification.
    """

    def __init__(self, send: Sender) -> None:
        self._send = send
        self._states: dict[str, JobState] = {}
        self.sent: list[tuple[str, str]] = []
        """Every notification sent, in order (the window's log of them)."""

    def job_added(self, job: Job) -> None:
        """Remember the state a job starts from."""
        self._states[job.id] = job.state

    def job_changed(self, job: Job) -> None:
        """Notify when a job that was not final becomes final."""
        before = self._states.get(job.id)
        self._states[job.id] = job.state
        if before is None or before.is_final or not job.state.is_final:
            return
        title, body = job_end_message(job)
        self.sent.append((title, body))
        try:
            self._send(title, body)
        except Exception:
            log.exception("sending the notification for job %s failed", job.id)

    def job_removed(self, job_id: str) -> None:
        """Forget the job."""
        self._states.pop(job_id, None)

    def metrics_added(self, job_id: str, columns: Mapping[str, SeriesColumns]) -> None:
        """Not used."""

    def log_added(self, job_id: str, lines: list[str]) -> None:
        """Not used."""
