"""The detached queue scheduler: `python -m desktop.providers.local.scheduler --home H`.

It starts queued local jobs when their slots free up, so a queue keeps moving after the app or
the CLI that filled it has exited. The provider spawns it (in its own session, output to
`<home>/queue/scheduler.log`) whenever a job has to wait.

- One instance: it holds `<home>/queue/scheduler.lock` for its whole life; a second one exits.
- Every `--interval` seconds, under the queue lock: drop claims whose process is gone, plan the
  starts (FIFO per kind of slot, see `plan_starts`), start them.
- It reaps the trainers it started and records their exit code in `<job-dir>/exit.json`.
- It exits when the queue is empty and no trainer it started is still running. The decision is
  taken and the scheduler lock released while the queue lock is held, so a job enqueued at that
  moment always finds a scheduler (the old one, or a new one that can take the lock).

Secrets: the scheduler never sees the app's in-memory secrets. For each environment variable
name a queued entry lists (e.g. `HF_TOKEN`) it looks the value up itself: the keychain through
`desktop.core.secrets.SecretStore().trainer_env([name.lower()])` when that module is importable,
else `FTDESK_<NAME>` from its own environment. A secret it cannot find is left out and a line in the
job's train.log says so.

Qt-free and torch-free; it runs with the app's Python, not the trainer runtime.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from desktop.providers.local.process import LockBusy, describe_exit
from desktop.providers.local.queue import (
    JobQueue,
    LaunchRecord,
    QueueEntry,
    StartPlan,
    fail_unstartable,
    plan_starts,
    start_entry,
    write_exit,
)

__all__ = ["Scheduler", "main", "resolve_secret_env"]

log = logging.getLogger("desktop.providers.local.scheduler")


def resolve_secret_env(names: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Values for the secret environment variables `names`; returns (found, missing names).

    Looks in the keychain (`desktop.core.secrets`, imported lazily: the providers layer must not
    depend on it) and then in `FTDESK_<NAME>` of this process's environment.
    """
    found: dict[str, str] = {}
    store = None
    with contextlib.suppress(Exception):
        secrets_module = importlib.import_module("desktop.core.secrets")
        store = secrets_module.SecretStore()
    for name in names:
        value: str | None = None
        if store is not None:
            try:
                env = store.trainer_env([name.lower()])
                got = env.get(name) if isinstance(env, Mapping) else None
                value = str(got) if got else None
            except Exception as exc:  # keychain locked, missing, timed out: try the env
                log.warning("keychain lookup for %s failed: %s", name, type(exc).__name__)
        if value is None:
            value = os.environ.get(f"FTDESK_{name.upper()}") or None
        if value is not None:
            found[name] = value
    missing = [n for n in names if n not in found]
    return found, missing


class Scheduler:
    """Starts queued jobs as slots free up; see the module docstring."""

    def __init__(self, home: Path, interval: float = 0.5) -> None:
        self.queue = JobQueue(home)
        self.interval = interval
        self._lock = self.queue.scheduler_lock()
        self._children: dict[str, tuple[subprocess.Popen[bytes], LaunchRecord, Path]] = {}

    def _reap(self) -> None:
        for job_id, (popen, record, job_dir) in list(self._children.items()):
            code = popen.poll()
            if code is None:
                continue
            del self._children[job_id]
            write_exit(job_dir, record.identity(), code)
            log.info("job %s: trainer ended (%s)", job_id, describe_exit(code))

    def _start(self, plan: StartPlan) -> None:
        entry = plan.entry
        job_dir = Path(entry.job_dir)
        secrets, missing = resolve_secret_env(entry.secret_env_names)
        try:
            if missing:
                with open(job_dir / "train.log", "a", encoding="utf-8") as fh:
                    fh.write(
                        "[finetune-desk] the queue scheduler found no value for "
                        f"{', '.join(missing)} (keychain or FTDESK_<NAME>); started without\n"
                    )
            popen, record = start_entry(self.queue, plan, launcher="scheduler", secrets=secrets)
        except OSError as exc:
            self.queue.remove(entry.job_id)
            fail_unstartable(job_dir, f"could not start the trainer ({entry.python}): {exc}")
            log.error("job %s: could not start: %s", entry.job_id, exc)
            return
        self._children[entry.job_id] = (popen, record, job_dir)
        log.info("job %s: started pid %d (GPUs %s)", entry.job_id, popen.pid, plan.gpus)

    def step(self) -> bool:
        """One round: reap, start what fits. Returns False (lock released) when done.

        Call it only while holding the scheduler lock (`run` does).
        """
        self._reap()
        with self.queue.lock():
            entries = self.queue.entries()
            table = self.queue.slot_table()
            waiting: list[QueueEntry] = []
            for entry in entries:
                if entry.gpus_requested > len(table.gpus):
                    self.queue.remove(entry.job_id)
                    fail_unstartable(
                        Path(entry.job_dir),
                        f"the job asks for {entry.gpus_requested} GPU(s) but this machine has "
                        f"{len(table.gpus)}; lower hardware.num_gpus",
                    )
                else:
                    waiting.append(entry)
            free_gpus, cpu_free = self.queue.free_resources()
            for plan in plan_starts(waiting, free_gpus, cpu_free):
                self._start(plan)
            if not self.queue.entries() and not self._children:
                # Released while the queue lock is held: whoever enqueues next sees it free.
                self._lock.release()
                return False
        return True

    def run(self) -> int:
        """Run until the queue is empty and every started trainer has ended; exit code."""
        try:
            self._lock.acquire(blocking=False)
        except LockBusy:
            log.info("another scheduler is running; exiting")
            return 0
        log.info("scheduler started (pid %d)", os.getpid())
        try:
            while self.step():
                time.sleep(self.interval)
        finally:
            self._lock.release()
        log.info("queue empty, nothing running: scheduler exits")
        return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m desktop.providers.local.scheduler --home H [--interval S]`."""
    parser = argparse.ArgumentParser(
        prog="python -m desktop.providers.local.scheduler",
        description="Start queued local training jobs as their slots free up.",
    )
    parser.add_argument("--home", type=Path, required=True, help="the app's data folder")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between rounds")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s scheduler[{os.getpid()}] %(levelname)s %(message)s",
    )
    return Scheduler(args.home, interval=args.interval).run()


if __name__ == "__main__":
    sys.exit(main())
