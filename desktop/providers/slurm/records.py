"""`slurm.json`: what a Slurm job keeps in its folder, so a restarted app reattaches from it.

The cluster's profile as submitted (a profile edited later does not change a running job), the
remote folder, the Slurm job id, how far the mirror of the remote `events.jsonl` and `train.log`
has read (bytes), how often Slurm requeued it, and the final word once it ended.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from desktop.models import ClusterProfile
from trainer.protocol import write_json_atomic

__all__ = ["SLURM_FILE", "SlurmRecord", "load_slurm_record", "save_slurm_record"]

SLURM_FILE = "slurm.json"


class SlurmRecord(BaseModel):
    """The job's Slurm submission (see the module docstring)."""

    model_config = ConfigDict(extra="ignore")

    cluster: str
    profile: ClusterProfile
    remote_dir: str
    slurm_job_id: str | None = None
    time_limit: str = ""
    submissions: list[str] = []
    events_offset: int = 0
    log_offset: int = 0
    restarts: int = 0
    slurm_state: str = ""
    queue_reason: str = ""
    nodes: str = ""
    cancel_requested: bool = False
    artifacts_pulled: bool = False
    final_state: str | None = None
    final_reason: str = ""
    exit_code: int | None = None


def load_slurm_record(job_dir: Path) -> SlurmRecord | None:
    """The job's `slurm.json`, None before a submission."""
    path = job_dir / SLURM_FILE
    if not path.is_file():
        return None
    return SlurmRecord.model_validate_json(path.read_text(encoding="utf-8"))


def save_slurm_record(job_dir: Path, record: SlurmRecord) -> None:
    """Write `slurm.json` atomically."""
    write_json_atomic(job_dir / SLURM_FILE, json.loads(record.model_dump_json()))
