"""SIGTERM mid-run, then `--resume`: the same result as a run that was never interrupted."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from trainer.protocol import (
    ArtifactEvent,
    EventReader,
    MetricEvent,
    StatusEvent,
    read_all_events,
    read_status,
)

pytestmark = pytest.mark.slow

RunTrainer = Callable[..., subprocess.CompletedProcess[str]]


def _start(job: Path) -> subprocess.Popen[bytes]:
    log = open(job / "train.log", "ab")  # noqa: SIM115 - closed when the process is reaped
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "run", "--job-dir", str(job)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def interrupted_job(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path, run_trainer: RunTrainer
) -> tuple[Path, int, subprocess.CompletedProcess[str]]:
    """The demo, SIGTERMed once step 9 is reported, then resumed to the end."""
    job = tmp_path_factory.mktemp("interrupted") / "job"
    shutil.copytree(demo_template, job)
    proc = _start(job)
    reader = EventReader(job / "events.jsonl")
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [e.step for e in reader.read_new() if isinstance(e, MetricEvent)]
            if steps and max(steps) >= 9:
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.01)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, (job / "train.log").read_text(encoding="utf-8")[-3000:]
    status = read_status(job)
    assert status is not None and status.state == "cancelled", status
    assert status.last_checkpoint is not None
    saved_step = int(Path(status.last_checkpoint).name.split("-")[1])
    resumed = run_trainer(job, "--resume")
    return job, saved_step, resumed


def test_cancel_saves_a_checkpoint_and_ends_cancelled(
    interrupted_job: tuple[Path, int, subprocess.CompletedProcess[str]],
) -> None:
    job, saved_step, _ = interrupted_job
    assert 9 <= saved_step < 40, "the cancel landed mid-run"
    events = read_all_events(job / "events.jsonl")
    cancelled = [e for e in events if isinstance(e, StatusEvent) and e.state == "cancelled"]
    assert len(cancelled) == 1 and f"step {saved_step}" in cancelled[0].message
    checkpoints = [
        e.step for e in events if isinstance(e, ArtifactEvent) and e.artifact == "checkpoint"
    ]
    assert saved_step in checkpoints  # (rotated away since: save_total_limit is 3)


def test_resume_reaches_the_same_end_as_an_uninterrupted_run(
    interrupted_job: tuple[Path, int, subprocess.CompletedProcess[str]],
    trained_lora_job: Path,
) -> None:
    job, saved_step, resumed = interrupted_job
    assert resumed.returncode == 0, (job / "train.log").read_text(encoding="utf-8")[-3000:]
    status = read_status(job)
    reference = read_status(trained_lora_job)
    assert status is not None and reference is not None
    assert status.state == "completed" and status.exit_code == 0
    assert status.last_step == reference.last_step == 40
    assert status.final_loss is not None and reference.final_loss is not None
    assert abs(status.final_loss - reference.final_loss) < 1e-3

    # Step by step, the resumed half retraces the uninterrupted run.
    def losses(path: Path) -> dict[int, float]:
        out: dict[int, float] = {}
        for e in read_all_events(path / "events.jsonl"):
            if isinstance(e, MetricEvent) and e.loss is not None:
                out[e.step] = e.loss  # the resumed run's value wins for a repeated step
        return out

    ours, theirs = losses(job), losses(trained_lora_job)
    assert sorted(ours) == list(range(1, 41))
    for step in range(saved_step + 1, 41):
        assert ours[step] == pytest.approx(theirs[step], abs=1e-3), step

    summary = json.loads((job / "output" / "training_summary.json").read_text())
    assert summary["resumed_from_step"] == saved_step


def test_events_say_resumed_and_seq_increases_across_both_runs(
    interrupted_job: tuple[Path, int, subprocess.CompletedProcess[str]],
) -> None:
    job, saved_step, _ = interrupted_job
    raw = (job / "events.jsonl").read_text(encoding="utf-8").splitlines()
    events = read_all_events(job / "events.jsonl")
    assert len(events) == len(raw), "every line parses"
    seqs = [e.seq for e in events]
    assert all(b > a for a, b in itertools.pairwise(seqs))
    resumed = [e for e in events if isinstance(e, StatusEvent) and e.resumed_from_step is not None]
    assert len(resumed) == 1
    assert resumed[0].resumed_from_step == saved_step
    assert resumed[0].message == f"resumed from step {saved_step}"
    states = [e.state for e in events if isinstance(e, StatusEvent)]
    assert states.count("starting") == 2 and states[-1] == "completed"


def test_run_without_resume_on_checkpoints_refuses(
    demo_dir: Path,
    interrupted_job: tuple[Path, int, subprocess.CompletedProcess[str]],
    run_trainer: RunTrainer,
) -> None:
    """A cancelled job run again without --resume: refused, and its events and final word (with
    the hint to resume) stay byte for byte as they were."""
    job, saved_step, _ = interrupted_job
    shutil.copytree(job / "checkpoints", demo_dir / "checkpoints")
    from trainer.protocol import EventWriter, StatusFile, write_status

    writer = EventWriter(demo_dir / "events.jsonl")
    writer.emit("status", state="starting", message="starting")
    writer.emit("status", state="cancelled", message="cancelled; run with --resume to continue")
    writer.close()
    write_status(
        demo_dir,
        StatusFile(state="cancelled", exit_code=0, message="run with --resume to continue"),
    )
    before = {name: (demo_dir / name).read_bytes() for name in ("events.jsonl", "status.json")}
    result = run_trainer(demo_dir)
    assert result.returncode == 2
    for name, data in before.items():
        assert (demo_dir / name).read_bytes() == data, name
    said = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert "--resume" in said and ("step 40" in said or f"step {saved_step}" in said)
    assert not (demo_dir / "output").exists()
