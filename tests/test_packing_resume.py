"""Resume with packing on (`dataset.packing`: TRL's best-fit packing, padding-free) retraces
the uninterrupted run step by step. (Padding-free batches are the default, so
tests/test_resume.py covers them.)

The interrupted run is the uninterrupted one's folder taken back to its checkpoint at step 6
(later checkpoint, output, status and events removed), then `--resume`d: the same state a
cancel at step 6 leaves, without depending on when a signal lands.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from trainer.protocol import MetricEvent, read_all_events, read_status

pytestmark = pytest.mark.slow

RunTrainer = Callable[..., subprocess.CompletedProcess[str]]


def _losses(job: Path) -> dict[int, float]:
    return {
        e.step: e.loss
        for e in read_all_events(job / "events.jsonl")
        if isinstance(e, MetricEvent) and e.loss is not None
    }


@pytest.fixture(scope="module")
def packed_runs(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path, run_trainer: RunTrainer
) -> tuple[Path, Path]:
    """(uninterrupted, resumed-from-step-6) runs of the demo with packing on, 12 steps."""
    base = tmp_path_factory.mktemp("packed")
    whole = base / "whole"
    shutil.copytree(demo_template, whole)
    config = json.loads((whole / "config.json").read_text(encoding="utf-8"))
    config["dataset"]["packing"] = True
    config["training"].update(max_steps=12, save_steps=6, save_total_limit=3)
    (whole / "config.json").write_text(json.dumps(config), encoding="utf-8")
    result = run_trainer(whole)
    assert result.returncode == 0, (whole / "train.log").read_text(encoding="utf-8")[-3000:]

    resumed = base / "resumed"
    shutil.copytree(whole, resumed)
    shutil.rmtree(resumed / "output")
    shutil.rmtree(resumed / "checkpoints" / "checkpoint-12")
    for name in ("status.json", "events.jsonl", "train.log"):
        (resumed / name).unlink()
    result = run_trainer(resumed, "--resume")
    assert result.returncode == 0, (resumed / "train.log").read_text(encoding="utf-8")[-3000:]
    return whole, resumed


def test_packing_is_on_in_both_runs(packed_runs: tuple[Path, Path]) -> None:
    for job in packed_runs:
        log = (job / "train.log").read_text(encoding="utf-8")
        assert "batches: packed to dataset.max_length 64, positions restarting per record" in log


def test_resume_with_packing_retraces_the_uninterrupted_run(
    packed_runs: tuple[Path, Path],
) -> None:
    whole, resumed = packed_runs
    reference, ours = _losses(whole), _losses(resumed)
    assert sorted(reference) == list(range(1, 13))
    assert sorted(ours) == list(range(7, 13))  # trained from the checkpoint at step 6 on
    for step in range(7, 13):
        assert ours[step] == pytest.approx(reference[step], abs=1e-5), step
    status = read_status(resumed)
    assert status is not None and status.state == "completed" and status.last_step == 12
    summary = json.loads((resumed / "output" / "training_summary.json").read_text())
    assert summary["resumed_from_step"] == 6
