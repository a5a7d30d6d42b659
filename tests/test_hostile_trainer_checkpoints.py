"""Hostile checkpoints: a damaged newest checkpoint must not block a resume.

`--resume` walks back to the newest checkpoint that loads and says, in train.log and in a log
event, which one it skipped and why. Only when none loads does it fail, naming each one
("checkpoint N"), never blaming "the model".
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from trainer.protocol import (
    EXIT_BAD_INPUT,
    LogEvent,
    MetricEvent,
    StatusEvent,
    read_all_events,
    read_status,
)

pytestmark = pytest.mark.slow

RunTrainer = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def stopped_job(tmp_path: Path, trained_lora_job: Path) -> Path:
    """The trained demo as it stood before its output was written: checkpoints 20, 30, 40."""
    job = tmp_path / "job"
    shutil.copytree(trained_lora_job, job)
    shutil.rmtree(job / "output")
    (job / "status.json").unlink()
    steps = sorted(int(p.name.split("-")[1]) for p in (job / "checkpoints").glob("checkpoint-*"))
    assert steps == [20, 30, 40], steps
    return job


def damage_checkpoint(checkpoint: Path) -> None:
    """Tear the adapter weights as a crash mid-write or a bad disk would."""
    weights = checkpoint / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"\x00garbage" + data[: len(data) // 3])


def _log(job: Path) -> str:
    return (job / "train.log").read_text(encoding="utf-8")


def test_resume_walks_back_past_a_damaged_newest_checkpoint(
    stopped_job: Path, run_trainer: RunTrainer
) -> None:
    job = stopped_job
    damage_checkpoint(job / "checkpoints" / "checkpoint-40")
    before = len(read_all_events(job / "events.jsonl"))
    result = run_trainer(job, "--resume")
    log = _log(job)
    assert result.returncode == 0, log[-3000:]
    status = read_status(job)
    assert status is not None and status.state == "completed", status
    assert (job / "output").is_dir()
    # Said in the log and as an event: which checkpoint was skipped, and why.
    assert "skipped checkpoint 40" in log and "adapter_model.safetensors" in log, log[-3000:]
    events = read_all_events(job / "events.jsonl")[before:]
    skipped = [e for e in events if isinstance(e, LogEvent) and "checkpoint 40" in e.message]
    assert skipped and skipped[0].level == "warning", events[:5]
    assert "adapter_model.safetensors" in skipped[0].message
    resumed = [e for e in events if isinstance(e, StatusEvent) and "resum" in e.message]
    assert resumed and any("30" in e.message for e in resumed), resumed
    # Training went on from step 30: steps 31..40 were trained again.
    steps = sorted({e.step for e in events if isinstance(e, MetricEvent)})
    assert steps[0] == 31 and steps[-1] == 40, steps


def test_resume_fails_naming_each_checkpoint_when_none_loads(
    stopped_job: Path, run_trainer: RunTrainer
) -> None:
    job = stopped_job
    for step in (20, 30, 40):
        damage_checkpoint(job / "checkpoints" / f"checkpoint-{step}")
    result = run_trainer(job, "--resume")
    log = _log(job)
    assert result.returncode == EXIT_BAD_INPUT, log[-3000:]
    status = read_status(job)
    assert status is not None and status.state == "failed", status
    for step in (20, 30, 40):
        assert f"checkpoint {step}" in status.message, status.message
    assert "the model" not in status.message and "download" not in status.message
    assert not (job / "output").exists()


def test_a_damage_only_loading_finds_names_the_checkpoint_and_its_step(
    stopped_job: Path, run_trainer: RunTrainer
) -> None:
    """A torch file whose zip is intact but whose pickle is not passes the file checks and
    fails inside the Trainer: the sentence still names the checkpoint, not the model, and the
    final status keeps the step the run stood at."""
    job = stopped_job
    optimizer = job / "checkpoints" / "checkpoint-40" / "optimizer.pt"
    optimizer.unlink()
    with zipfile.ZipFile(optimizer, "w") as archive:
        archive.writestr("optimizer/data.pkl", b"not a pickle")
        archive.writestr("optimizer/version", b"3\n")
    result = run_trainer(job, "--resume")
    log = _log(job)
    assert result.returncode != 0, log[-3000:]
    status = read_status(job)
    assert status is not None and status.state == "failed", status
    assert "checkpoint 40" in status.message, status.message
    assert "the model" not in status.message and "download" not in status.message
    assert status.last_step == 40, status
