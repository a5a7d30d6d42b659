"""Watching jobs: one tracked polling task per active job, and what one poll stores (Qt-free).

The job service (`desktop.core.service`) owns one `JobWatcher` and delegates to it. Each poll
asks the job's provider what it saw, has `ingest` store it in a worker thread (under the job's
ingest lock: another process ingesting the same job only reads the store), tells the listeners
what was stored, in the order it was stored, and hands them the new lines of the job's console
output. A watcher retries what fails (a locked database, a job dir on a disk that went away),
slower and saying so once, and stops at once when the job is deleted; while the disk is full it
gives up after `disk_full_give_up_s` and records why in `abandoned`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from desktop.core.errors import FtdeskError, JobNotFoundError, ProviderError, is_disk_full
from desktop.core.ingest import (
    Ingested,
    ingest_in_worker,
    mark_unreachable,
    split_log_lines,
    take_ingest_lock,
)
from desktop.core.job_events import JobEvents
from desktop.core.redaction import redact
from desktop.core.store import JobStore
from desktop.core.tasks import TaskRunner
from desktop.models import Job, JobUpdate
from desktop.providers.base import Provider

__all__ = ["JobWatcher"]

log = logging.getLogger(__name__)


class JobWatcher:
    """The polling tasks of one job service, and the log lines they have handed on so far.

    Args:
        store: the job store polls write to.
        events: the listeners told what each poll stored.
        runner: the task runner the polling tasks run in (its failure handler hears bugs).
        provider: the provider instance for a provider name (the service's `provider`).
        poll_interval_s: the poll interval in force, read every round so that settings applied
            meanwhile change the pace of running watchers.
        report: called with a sentence for what the person should know (a retry, a give-up).
        disk_full_give_up_s: how long a watcher retries while the disk is full before it stops
            (see `JobService`).
    """

    def __init__(
        self,
        store: JobStore,
        events: JobEvents,
        runner: TaskRunner,
        *,
        provider: Callable[[str], Provider],
        poll_interval_s: Callable[[], float],
        report: Callable[[str], None],
        disk_full_give_up_s: float,
    ) -> None:
        self._store = store
        self._events = events
        self._runner = runner
        self._provider = provider
        self._poll_interval_s = poll_interval_s
        self._report = report
        self._disk_full_give_up_s = disk_full_give_up_s
        self._log_offsets: dict[str, int] = {}
        self._log_carry: dict[str, str] = {}
        self.abandoned: dict[str, str] = {}
        """Jobs whose watcher gave up on a full disk: job id -> the sentence that said so."""

    def watch(self, job: Job) -> None:
        """Start polling the job until it ends, unless it has ended or is watched already."""
        name = _watch_name(job.id)
        if job.is_final or self._runner.is_running(name):
            return
        self._runner.start(name, self._watch_loop(job.id))

    def is_watching(self, job_id: str) -> bool:
        """Whether a polling task is running for the job."""
        return self._runner.is_running(_watch_name(job_id))

    def stop(self, job_id: str) -> None:
        """Stop polling the job (nothing happens when it is not watched)."""
        self._runner.cancel(_watch_name(job_id))

    async def wait(self, job_id: str) -> None:
        """Return when the job's polling task has ended (at once when there is none)."""
        await self._runner.wait(_watch_name(job_id))

    async def _watch_loop(self, job_id: str) -> None:
        delay = self._poll_interval_s()
        failing = False
        full_since: float | None = None
        while True:
            # Read each round: settings applied meanwhile change the pace of running watchers.
            interval = self._poll_interval_s()
            try:
                job = await self.poll_once(job_id)
            except JobNotFoundError:
                return  # deleted meanwhile (by this app or another)
            except (FtdeskError, OSError) as exc:
                # A locked database, a job dir on a disk that went away: keep trying, slower,
                # and say so once. Anything else is a bug and goes to the runner's handler.
                if not failing:
                    verb = "save" if is_disk_full(exc) else "read"
                    self._report(f"job {job_id}: cannot {verb} its progress ({exc}); retrying")
                failing = True
                if not is_disk_full(exc):
                    full_since = None
                elif full_since is None:
                    full_since = time.monotonic()
                elif time.monotonic() - full_since >= self._disk_full_give_up_s:
                    # A full disk rarely frees itself: stop, so a follower can end and say why.
                    gave_up = (
                        f"job {job_id}: stopped watching it after "
                        f"{self._disk_full_give_up_s:g} s of failed saves: {exc}"
                    )
                    self.abandoned[job_id] = gave_up
                    self._report(gave_up)
                    return
                delay = min(delay * 2, 30.0)
                await asyncio.sleep(delay)
                continue
            if failing:
                log.info("job %s: reading progress works again", job_id)
            failing, delay, full_since = False, interval, None  # a later full disk starts anew
            if job.is_final:
                await self._emit_logs(job, final=True)
                return
            await asyncio.sleep(interval)

    async def poll_once(self, job_id: str) -> Job:
        """Poll the job's provider once and store what it saw; returns the new snapshot.

        When another process is ingesting this job right now, this one only reads the store.
        The parsing and the store writes run in a worker thread.
        """
        job = await self._get(job_id)
        if job.is_final:
            return job
        # Taken here, not in a worker (a non-blocking flock: no wait): a cancelled worker call
        # would take the lock with nobody left to release it.
        mine, lock = take_ingest_lock(job.job_dir)
        try:
            job = await self._get(job_id)  # what another process may have stored meanwhile
            if not mine or job.is_final:
                self._events.changed(job)
                return job
            backend = self._provider(job.provider)
            try:
                update: JobUpdate = await backend.poll(job)
            except ProviderError as exc:
                reason = f"{job.provider} provider unreachable: {exc}"
                job = await asyncio.to_thread(mark_unreachable, self._store, job, reason)
                self._events.changed(job)
                return job
            done = await ingest_in_worker(self._store, job, update)
            self._publish(done)
            job = done.job
        finally:
            if lock is not None:
                lock.release()
        await self._emit_logs(job)
        return job

    async def _get(self, job_id: str) -> Job:
        return await asyncio.to_thread(self._store.get_job, job_id)

    def _publish(self, done: Ingested) -> None:
        """Tell the listeners what one ingest stored, in the order it was stored."""
        for step in done.steps:
            self._events.changed(step)
        if done.columns:
            self._events.emit("metrics_added", done.job.id, done.columns)
        self._events.changed(done.job)

    async def _emit_logs(self, job: Job, final: bool = False) -> None:
        if not self._events.listening:
            return
        since = self._log_offsets.get(job.id, 0)
        try:
            chunk = await self._provider(job.provider).logs(job, since)
        except (FtdeskError, OSError) as exc:
            log.debug("no logs for job %s: %s", job.id, exc)
            return
        if chunk.next_offset == since and not final:
            return
        self._log_offsets[job.id] = chunk.next_offset
        text = self._log_carry.pop(job.id, "") + chunk.text
        lines, self._log_carry[job.id] = split_log_lines(text, final=final)
        if lines:
            self._events.emit("log_added", job.id, [redact(line) for line in lines])


def _watch_name(job_id: str) -> str:
    return f"watch job {job_id}"
