"""Job ids and job directories: one function makes a job's folder, and no two jobs share one.

An id is `YYYYMMDD-HHMMSS-xxxx` (local time, 4 random hex digits): short, and sorted by time.
Uniqueness does not rest on the random part: `create_job_dir` takes the folder with an atomic
`mkdir`, and an id whose folder exists (another job, another app) is drawn again.
"""

from __future__ import annotations

import asyncio
import secrets as _random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from desktop.core.file_lock import FileLock, LockBusy
from trainer.checkpoint_check import ResumePoint, latest_loadable_checkpoint

__all__ = [
    "JOB_LOCK_FILE",
    "MAX_ID_DRAWS",
    "create_job_dir",
    "hold_job_lock",
    "job_lock",
    "new_job_id",
    "resume_point",
]

# Held by whoever resumes or cancels the job (any process), so those never interleave.
JOB_LOCK_FILE = ".job.lock"

# Draws before giving up: with 65,536 ids per second a real clash repeats a handful of times at
# most; only a broken id source (or a folder that refuses every mkdir) ever reaches this.
MAX_ID_DRAWS = 1000


def new_job_id(now: float | None = None) -> str:
    """A short id that sorts by time: `YYYYMMDD-HHMMSS-xxxx` (local time, 4 random hex)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"{stamp}-{_random.token_hex(2)}"


def create_job_dir(root: Path, id_source: Callable[[], str] = new_job_id) -> tuple[str, Path]:
    """Make a new, empty job folder under `root`; returns its id and path.

    Args:
        root: the jobs folder (created when missing).
        id_source: draws an id (default `new_job_id`); an id whose folder exists is drawn again.

    Raises:
        FileExistsError: `MAX_ID_DRAWS` ids in a row were taken (a broken id source).
    """
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(MAX_ID_DRAWS):
        job_id = id_source()
        job_dir = root / job_id
        try:
            job_dir.mkdir()  # atomic: of two makers of one name, exactly one succeeds
        except FileExistsError:
            continue
        return job_id, job_dir
    raise FileExistsError(f"{root}: {MAX_ID_DRAWS} job ids in a row were already taken")


def resume_point(job_dir: Path, *, thorough: bool = True) -> ResumePoint:
    """Where `trainer run --resume` would continue: the newest checkpoint that loads, and each
    newer one it would skip, with why (unpacks as step, path, skipped).

    The trainer's own rule (`trainer.checkpoint_check.latest_loadable_checkpoint`), so the app
    never promises or records a resume point the trainer would pass over (a save interrupted
    mid-way, or a checkpoint whose files are damaged). It reads the checked files: call it in a
    worker thread. `thorough=False` is for a report (`show`): it checks torch files' zip
    directories and sizes without reading them whole, so a flipped byte inside one is found
    only by the resume itself.
    """
    return latest_loadable_checkpoint(job_dir, thorough=thorough)


def job_lock(job_dir: Path) -> FileLock:
    """The job's own lock (`<job-dir>/.job.lock`), not yet taken.

    A resume and a cancel hold it while they change the job, so two `run --resume` in two
    processes never both hand the job to its provider, and a cancel never runs halfway
    through a resume (it would stop the old run, or a queue entry, instead of the new trainer).
    """
    return FileLock(Path(job_dir) / JOB_LOCK_FILE)


@asynccontextmanager
async def hold_job_lock(job_dir: Path, wait_s: float) -> AsyncIterator[bool]:
    """Hold the job's lock for the block (yields True), or yield False when another process
    kept it for `wait_s` seconds (0: one try).

    Non-blocking attempts on the loop's thread: a blocking flock in a worker thread that was
    cancelled would take the lock with nobody left to release it.
    """
    lock = job_lock(job_dir)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            lock.acquire(blocking=False)
            break
        except LockBusy:
            if loop.time() >= deadline:
                yield False
                return
            await asyncio.sleep(0.1)
    try:
        yield True
    finally:
        lock.release()
