"""Which process of a (possibly distributed) run this is.

Only the main process writes events, `status.json` and the output; every rank check in the
trainer goes through `is_main_process`, so the launcher (torchrun / accelerate launch) only has
to set the usual environment variables.
"""

from __future__ import annotations

import os

__all__ = ["is_main_process", "launched_worker", "process_rank", "world_size"]


def process_rank() -> int:
    """The global rank: RANK, else LOCAL_RANK, else 0 (a single process)."""
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                continue
    return 0


def world_size() -> int:
    """Processes in this run (WORLD_SIZE, else 1)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """True in the process that writes events, status and output (rank 0)."""
    return process_rank() == 0


def launched_worker() -> bool:
    """True in a process a distributed launcher started (torchrun sets RANK / LOCAL_RANK)."""
    return any(os.environ.get(name, "").strip() for name in ("RANK", "LOCAL_RANK"))
