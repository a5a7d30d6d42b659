"""Who hears about jobs: the job service's listeners, told once per change (Qt-free).

`JobEvents` holds the listeners (`desktop.models.JobListener`: the window's state, a CLI
follower) and the last snapshot each job was announced with, so a poll that stored nothing new
tells nobody. The service and its watcher (`desktop.core.watch`) share one.
"""

from __future__ import annotations

import logging
from typing import Any

from desktop.core.tasks import BugHandler
from desktop.models import Job, JobListener

__all__ = ["JobEvents"]

log = logging.getLogger(__name__)


class JobEvents:
    """The listeners of one job service, called on the event loop's thread, in order.

    Args:
        on_bug: called with a summary and the exception when a listener raises (a bug).
    """

    def __init__(self, on_bug: BugHandler) -> None:
        self._on_bug = on_bug
        self._listeners: list[JobListener] = []
        self._seen: dict[str, Job] = {}

    def add_listener(self, listener: JobListener) -> None:
        """Tell `listener` about every job added, changed or removed from now on."""
        self._listeners.append(listener)

    def remove_listener(self, listener: JobListener) -> None:
        """Stop telling `listener`."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def listening(self) -> bool:
        """Whether anybody listens (reading logs for nobody is wasted work)."""
        return bool(self._listeners)

    def emit(self, method: str, *args: Any) -> None:
        """Tell every listener; one that raises is a bug for `on_bug`, and the rest still hear."""
        for listener in list(self._listeners):
            try:
                getattr(listener, method)(*args)
            except Exception as exc:
                # A bug, not an expected failure: the bug path shows and logs its traceback.
                try:
                    self._on_bug(f"a job listener failed in {method}: {exc}", exc)
                except Exception:
                    log.exception("the bug handler itself failed")

    def added(self, job: Job) -> None:
        """Announce a job that is new to the listeners (launched, or loaded at start)."""
        self._seen[job.id] = job
        self.emit("job_added", job)

    def changed(self, job: Job) -> None:
        """Announce `job` if it differs from the snapshot last announced."""
        if self._seen.get(job.id) != job:
            self._seen[job.id] = job
            self.emit("job_changed", job)

    def removed(self, job_id: str) -> None:
        """Announce that the job is forgotten."""
        self._seen.pop(job_id, None)
        self.emit("job_removed", job_id)
