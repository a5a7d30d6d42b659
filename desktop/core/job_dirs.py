"""Job ids and job directories: one function makes a job's folder, and no two jobs share one.

An id is `YYYYMMDD-HHMMSS-xxxx` (local time, 4 random hex digits): short, and sorted by time.
Uniqueness does not rest on the random part: `create_job_dir` takes the folder with an atomic
`mkdir`, and an id whose folder exists (another job, another app) is drawn again.
"""

from __future__ import annotations

import secrets as _random
import time
from collections.abc import Callable
from pathlib import Path

from trainer.protocol import latest_complete_checkpoint

__all__ = ["MAX_ID_DRAWS", "create_job_dir", "last_checkpoint", "new_job_id"]

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


def last_checkpoint(job_dir: Path) -> str | None:
    """The checkpoint `trainer run --resume` continues from: the newest complete one on disk.

    The trainer's own rule (`trainer.protocol.latest_complete_checkpoint`), so the app never
    promises a resume the trainer would refuse (a save interrupted mid-way is not one).
    """
    found = latest_complete_checkpoint(job_dir)
    return str(found) if found is not None else None
