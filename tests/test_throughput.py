"""Trained tokens per second, the end-of-run summary line, and throwaway runs without
checkpoints: one real run of the trainer on the throughput benchmark's data at a tiny size."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.throughput_data import make_bench_job
from trainer.protocol import MetricEvent, read_all_events, read_status

pytestmark = pytest.mark.slow

RunTrainer = Callable[..., subprocess.CompletedProcess[str]]


def _answer_tokens(job: Path) -> int:
    """The answer tokens of every record (the chat template's assistant mask), as TRL builds
    the labels: what one epoch trains."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(job / "model")
    total = 0
    for line in (job / "train.jsonl").read_text(encoding="utf-8").splitlines():
        encoded = tokenizer.apply_chat_template(
            json.loads(line)["messages"],
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        total += sum(encoded["assistant_masks"][1:])  # position 0 is never a target
    return total


@pytest.fixture(scope="module")
def throwaway_job(tmp_path_factory: pytest.TempPathFactory, run_trainer: RunTrainer) -> Path:
    """One epoch (32 records, batch 8: 4 steps) with checkpointing off."""
    job = tmp_path_factory.mktemp("throughput") / "job"
    make_bench_job(job, records=32, layers=2, hidden=32, high=160)
    config = json.loads((job / "config.json").read_text(encoding="utf-8"))
    del config["training"]["max_steps"]
    config["training"].update(num_epochs=1, save_total_limit=0, save_steps=2)
    (job / "config.json").write_text(json.dumps(config), encoding="utf-8")
    result = run_trainer(job)
    assert result.returncode == 0, (job / "train.log").read_text(encoding="utf-8")[-3000:]
    return job


def test_trained_tokens_per_second_is_a_metric_and_counts_every_answer_token(
    throwaway_job: Path,
) -> None:
    metrics = [
        e
        for e in read_all_events(throwaway_job / "events.jsonl")
        if isinstance(e, MetricEvent) and e.loss is not None
    ]
    assert [m.step for m in metrics] == [1, 2, 3, 4]
    rates = [m.train_tokens_per_second for m in metrics]
    assert all(r is not None and r > 0 for r in rates), rates
    assert all("train_tokens_per_second" in m.values() for m in metrics)
    assert all(m.peak_gpu_memory_mb is None for m in metrics)  # the CPU: no GPU figure

    summary = json.loads((throwaway_job / "output" / "training_summary.json").read_text())
    throughput = summary["throughput"]
    # Padding-free batches, answers only: exactly the answer tokens of one epoch.
    assert throughput["trained_tokens"] == _answer_tokens(throwaway_job)
    assert throughput["steps"] == 4 and throughput["wall_seconds"] > 0
    assert throughput["trained_tokens_per_second"] > 0
    assert throughput["peak_memory_mb"] > 0 and throughput["peak_memory_of"] == "RAM"


def test_the_console_says_the_batching_and_ends_with_a_summary_line(throwaway_job: Path) -> None:
    log = (throwaway_job / "train.log").read_text(encoding="utf-8")
    assert "batches: padding-free (records concatenated without padding" in log
    summary = [line for line in log.splitlines() if line.startswith("summary: ")]
    assert len(summary) == 1, log[-2000:]
    line = summary[0]
    assert line.startswith("summary: 4 steps in ")
    for part in ("steps/s", "trained tokens/s", "peak memory", "MiB (RAM)"):
        assert part in line, line


def test_a_run_without_checkpoints_writes_none_and_refuses_resume(
    throwaway_job: Path, run_trainer: RunTrainer
) -> None:
    checkpoints = throwaway_job / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.glob("checkpoint-*"))
    # Resume needs a job without output; the refusal comes before anything is written.
    (throwaway_job / "output").rename(throwaway_job / "kept-output")
    before = (throwaway_job / "events.jsonl").read_bytes()
    try:
        result = run_trainer(throwaway_job, "--resume")
    finally:
        (throwaway_job / "kept-output").rename(throwaway_job / "output")
    assert result.returncode == 2
    log = (throwaway_job / "train.log").read_text(encoding="utf-8")
    assert (
        "this job keeps no checkpoints (training.save_total_limit is 0), so it cannot be "
        "resumed; start it again in a new job folder." in log
    )
    assert (throwaway_job / "events.jsonl").read_bytes() == before
    status = read_status(throwaway_job)
    assert status is not None and status.state == "completed"
