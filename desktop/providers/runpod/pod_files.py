"""What a RunPod job keeps in its folder, and what it sends to the pod.

`pod.json` is the job's pod: its id and unique name, the GPU it got, its hourly cost, the limits
it was launched with, how much of the pod's events and log the folder already mirrors, and the
final word once the pod is gone. It holds the job's own bearer token (scoped to this one pod's
agent, worthless once the pod is deleted) and never the user's RunPod key. Written atomically
and readable only by the user, so a restarted app reattaches from it.
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from desktop.core.errors import ConfigError
from desktop.models import Job
from desktop.providers.runpod.pod_data import dataset_fetches
from trainer.config import TrainingConfig
from trainer.protocol import write_json_atomic

__all__ = [
    "POD_FILE",
    "PodRecord",
    "load_record",
    "pod_config",
    "save_record",
]

POD_FILE = "pod.json"
# What the pod's agent accepts as a model file's upload name (`trainer.agent._MODEL_NAME`).
_MODEL_FILE = re.compile(r"model(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){1,8}")


class PodRecord(BaseModel):
    """The job's pod, as `pod.json` stores it (see the module docstring)."""

    model_config = ConfigDict(extra="ignore")

    pod_id: str
    name: str
    token: str
    gpu_id: str
    cost_per_hour: Decimal
    budget_usd: Decimal
    max_runtime_s: int
    created_at: str
    events_seq: int = -1
    log_offset: int = 0
    deleted: bool = False
    final_state: str | None = None
    final_reason: str = ""
    exit_code: int | None = None
    uptime_s: int | None = None
    restarts: int = 0
    runpod_log_cursors: dict[str, str] = {}  # RunPod's log stream, read up to (pod_logs)


def load_record(job_dir: Path) -> PodRecord | None:
    """The job's `pod.json`, or None before a pod was created."""
    path = job_dir / POD_FILE
    if not path.is_file():
        return None
    return PodRecord.model_validate_json(path.read_text(encoding="utf-8"))


def save_record(job_dir: Path, record: PodRecord) -> None:
    """Write `pod.json` atomically, readable only by its owner (it holds the job token)."""
    write_json_atomic(job_dir / POD_FILE, json.loads(record.model_dump_json()))
    os.chmod(job_dir / POD_FILE, 0o600)


def pod_config(job: Job, gpu_count: int = 1) -> tuple[TrainingConfig, dict[str, Path]]:
    """The config the pod trains with and the local files to upload for it.

    A dataset that is a local file travels as `data/<name>` (relative paths resolve against
    the job folder, where the pod's `config.json` lives); a Hub id or a folder is left as is.
    The pod's GPUs are the job's: `hardware.num_gpus` becomes `gpu_count`, so more than one
    runs the trainer's multi-process launcher (`trainer.launch`, rank 0 alone writes events).
    A config pinned to the CPU (`hardware.device: cpu`, as the emulator's GPU-less pods train)
    runs one gloo process per GPU instead (`cpu_processes`).
    A dataset URL (pinned by its sha256) is fetched by the pod itself (`dataset_fetches`): the
    pod's config names the file it becomes, `data/<name>`.
    A model that is a local folder travels file by file as `model/<path>` (the pod has no
    other way to see it) and the pod's config names `model`; a Hub id is fetched by the pod.

    Raises:
        ConfigError: a model file whose name the pod's agent refuses, naming it.
    """
    cfg = job.config
    hardware = {"num_gpus": gpu_count}
    if cfg.hardware.device == "cpu":
        hardware["cpu_processes"] = gpu_count
    cfg = cfg.model_copy(update={"hardware": cfg.hardware.model_copy(update=hardware)})
    fetched = {f.field: f.name for f in dataset_fetches(cfg)}
    if fetched:
        cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update=fetched)})
    uploads: dict[str, Path] = {}
    model = Path(cfg.model.name_or_path)
    if not model.is_absolute():
        model = job.job_dir / model
    if model.is_dir():
        for path in sorted(model.rglob("*")):
            relative = path.relative_to(model)
            if not path.is_file() or relative.parts[0] in (".git", ".cache"):
                continue
            name = f"model/{relative.as_posix()}"
            if not _MODEL_FILE.fullmatch(name):
                raise ConfigError(
                    f"model file {path}: its name cannot travel to a pod (letters, digits, "
                    "'.', '_', '-' only, at most 8 folders deep); rename it or use a Hub id"
                )
            uploads[name] = path
        cfg = cfg.model_copy(
            update={"model": cfg.model.model_copy(update={"name_or_path": "model"})}
        )
    data = Path(cfg.dataset.path)
    if not data.is_absolute():
        data = job.job_dir / data
    if data.is_file():
        name = f"data/{data.name}"
        uploads[name] = data
        cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"path": name})})
    return cfg, uploads
