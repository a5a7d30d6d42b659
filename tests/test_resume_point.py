"""Where a resume starts: one rule for the app and the trainer (issue 8, case 6's loose ends).

A real job is cancelled with two checkpoints and its newest one is damaged. `show`, `run
--resume` (its output and the job's history) and the trainer itself must all name the same
checkpoint, the newest one that loads, and say which one was skipped and why. And a resume
from a checkpoint that already stands at max_steps trains nothing past it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_cli import cli, job_id_from, max_metric_step, wait_for, write_config
from test_hostile_trainer_checkpoints import damage_checkpoint
from view_helpers import make_job

from desktop.cli import main
from desktop.core.job_dirs import resume_point
from desktop.core.store import JobStore
from trainer.checkpoint_check import checkpoint_problem, latest_loadable_checkpoint
from trainer.protocol import (
    ArtifactEvent,
    EventWriter,
    LogEvent,
    MetricEvent,
    ProgressEvent,
    StatusEvent,
    StatusFile,
    find_checkpoints,
    read_all_events,
    read_status,
    write_status,
)

pytestmark = pytest.mark.slow


def _checkpoint_steps(job_dir: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in find_checkpoints(job_dir)]


def _saved(events: Path, step: int) -> bool:
    if not events.exists():
        return False
    return any(
        isinstance(e, ArtifactEvent) and e.artifact == "checkpoint" and e.step >= step
        for e in read_all_events(events)
    )


def _resumed_from(events: Path) -> list[int]:
    return [
        e.resumed_from_step
        for e in read_all_events(events)
        if isinstance(e, StatusEvent) and e.resumed_from_step is not None
    ]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """The app's data folder; every process that names it is gone after the test."""
    folder = tmp_path / "home"
    yield folder
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(folder) in part for part in proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def test_a_damaged_newest_checkpoint_is_skipped_alike_by_show_resume_and_the_trainer(
    home: Path,
    tmp_path: Path,
    demo_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A run that cannot end by itself during the test: only the cancels stop it.
    config = write_config(tmp_path / "cfg", demo_template, max_steps=100000, save_steps=10)
    started = cli(home, "run", str(config))
    assert started.returncode == 0, started.stderr
    job_id = job_id_from(started.stdout)
    job_dir = (home / "jobs" / job_id).resolve()
    events = job_dir / "events.jsonl"
    wait_for(lambda: _saved(events, 10), 240, "checkpoint 10")
    # A step past 10 logged: the cancel lands later still, so its save is a second checkpoint
    # (a cancel landing at step 10 itself would leave only one).
    wait_for(lambda: max_metric_step(events) > 10, 240, "a step past checkpoint 10")
    monkeypatch.setenv("FTDESK_HOME", str(home))
    assert main(["cancel", job_id]) == 0  # the cancel saves one more checkpoint, past step 10
    capsys.readouterr()
    steps = _checkpoint_steps(job_dir)
    assert len(steps) >= 2, steps
    newest, loadable = steps[-1], steps[-2]
    loadable_dir = job_dir / "checkpoints" / f"checkpoint-{loadable}"
    damage_checkpoint(job_dir / "checkpoints" / f"checkpoint-{newest}")

    # `show` says where a resume would start, and what it passes over.
    shown = cli(home, "show", job_id)
    assert shown.returncode == 0, shown.stderr
    [line] = [x for x in shown.stdout.splitlines() if x.startswith("resumable from:")]
    assert line.split()[2] == f"{loadable_dir};", line
    assert f"skipped checkpoint {newest}" in line and "adapter_model.safetensors" in line, line
    data = json.loads(cli(home, "show", job_id, "--json").stdout)
    point = data["resume_point"]
    assert point["step"] == loadable and point["checkpoint"] == str(loadable_dir)
    [skipped] = point["skipped"]
    assert skipped["step"] == newest and "adapter_model.safetensors" in skipped["problem"]

    # `run --resume` says the same, and the job's history keeps it.
    resumed = cli(home, "run", "--resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resume from {loadable_dir}" in resumed.stdout, resumed.stdout
    assert f"skipped checkpoint {newest}" in resumed.stdout, resumed.stdout
    history = json.loads(cli(home, "show", job_id, "--json").stdout)["transitions"]
    [resume] = [t for t in history if t["old"] == "cancelled" and t["new"] == "queued"]
    assert resume["reason"].startswith(f"resume from {loadable_dir}; skipped"), resume
    assert f"skipped checkpoint {newest}" in resume["reason"], resume
    assert "adapter_model.safetensors" in resume["reason"], resume

    # The trainer agrees: it started from the same checkpoint and said what it skipped.
    wait_for(lambda: _resumed_from(events) != [], 240, "the resumed trainer to start")
    assert _resumed_from(events) == [loadable]
    assert main(["cancel", job_id]) == 0
    capsys.readouterr()
    after = read_all_events(events)
    start = next(i for i, e in enumerate(after) if getattr(e, "resumed_from_step", None))
    warned = [
        e for e in after if isinstance(e, LogEvent) and f"skipped checkpoint {newest}" in e.message
    ]
    assert warned and warned[0].level == "warning", after[-20:]
    trained = [e.step for e in after[start:] if isinstance(e, MetricEvent)]
    assert trained and trained[0] == loadable + 1, trained[:5]


def test_a_resume_from_a_checkpoint_at_max_steps_finishes_without_training(
    demo_dir: Path, run_trainer: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """A cancel that lands on the last step leaves the job cancelled, its newest checkpoint
    at max_steps and no output/. Its resume must write the output from that checkpoint and
    train nothing: no step past max_steps may reach the events, and so the store.

    The folder is the one the trainer's cancel path leaves at the last step (the checkpoint it
    saves there, no output/, a cancelled final word), made from a real run of 12 steps: a
    SIGTERM cannot be timed to land on a given step without luck.
    """
    job = demo_dir
    config = json.loads((job / "config.json").read_text(encoding="utf-8"))
    config["training"].update(max_steps=12, save_steps=6)
    (job / "config.json").write_text(json.dumps(config), encoding="utf-8")
    first = run_trainer(job)
    assert first.returncode == 0, (job / "train.log").read_text(encoding="utf-8")[-3000:]
    assert _checkpoint_steps(job)[-1] == 12
    shutil.rmtree(job / "output")
    writer = EventWriter(job / "events.jsonl")
    writer.emit("status", state="cancelled", message="cancelled at step 12; checkpoint saved")
    writer.close()
    last = str(job / "checkpoints" / "checkpoint-12")
    write_status(
        job,
        StatusFile(state="cancelled", exit_code=0, last_step=12, last_checkpoint=last),
    )
    before = len(read_all_events(job / "events.jsonl"))

    resumed = run_trainer(job, "--resume")
    log = (job / "train.log").read_text(encoding="utf-8")
    assert resumed.returncode == 0, log[-3000:]
    events = read_all_events(job / "events.jsonl")
    steps = [e.step for e in events if isinstance(e, MetricEvent | ProgressEvent)]
    assert steps and max(steps) == 12, steps[-5:]
    new = events[before:]
    assert not [e for e in new if isinstance(e, MetricEvent)], new
    assert _resumed_from(job / "events.jsonl") == [12]
    assert _checkpoint_steps(job)[-1] == 12, "no checkpoint past max_steps"
    status = read_status(job)
    assert status is not None and status.state == "completed", status
    assert status.last_step == 12 and status.final_loss is not None, status
    # The output is the checkpoint's weights, loaded and written as they were.
    weights = "adapter_model.safetensors"
    output = (job / "output" / weights).read_bytes()
    assert output == (job / "checkpoints" / "checkpoint-12" / weights).read_bytes()
    summary = json.loads((job / "output" / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 12 and summary["resumed_from_step"] == 12


def _checkpoint_with_an_optimizer(job_dir: Path, step: int) -> Path:
    """A complete checkpoint whose optimizer.pt is a zip laid out the way torch.save writes it
    (members stored uncompressed), with one large member of known bytes."""
    folder = job_dir / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}), "utf-8")
    with zipfile.ZipFile(folder / "optimizer.pt", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("optimizer/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("optimizer/data/0", bytes(range(256)) * 256)
        archive.writestr("optimizer/version", b"3\n")
    return folder


def _show_resume_point(
    home: Path, job_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> Any:
    """`finetune-desk show JOB --json`'s resume point for a failed job in `job_dir`."""
    job_id = job_dir.name
    with JobStore(home / "ftdesk.sqlite3") as store:
        store.add_job(make_job(job_id, state="failed", job_dir=job_dir))
    monkeypatch.setenv("FTDESK_HOME", str(home))
    capsys.readouterr()
    assert main(["show", job_id, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["resume_point"]


@pytest.mark.parametrize("cheap_sees_it", [False, True], ids=["flipped-byte", "truncated"])
def test_show_checks_checkpoints_cheaply_and_the_resume_thoroughly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cheap_sees_it: bool,
) -> None:
    """`show` must not read every byte of a checkpoint's optimizer (tens of GB on a full
    fine-tune): it checks the zip's directory and sizes. A flipped byte inside a member's data
    only the resume's thorough check (every member's CRC) finds; a truncated file, both."""
    home = tmp_path / "home"
    job_dir = home / "jobs" / "20260101-000000-abcd"
    older = _checkpoint_with_an_optimizer(job_dir, 10)
    newest = _checkpoint_with_an_optimizer(job_dir, 20)
    optimizer = newest / "optimizer.pt"
    data = bytearray(optimizer.read_bytes())
    if cheap_sees_it:
        del data[len(data) // 2 :]
    else:
        member = data.index(bytes(range(256)))
        data[member + 1000] ^= 0xFF  # inside the member's data, not the directory
    optimizer.write_bytes(bytes(data))

    # show: the cheap check.
    point = _show_resume_point(home, job_dir, monkeypatch, capsys)
    if cheap_sees_it:
        assert point["step"] == 10, point
        [skipped] = point["skipped"]
        assert skipped["step"] == 20 and "optimizer.pt" in skipped["problem"], skipped
    else:
        assert point["step"] == 20 and point["skipped"] == [], point

    assert checkpoint_problem(older) is None and checkpoint_problem(older, thorough=False) is None
    thorough = checkpoint_problem(newest)
    assert thorough is not None and thorough.startswith("optimizer.pt "), thorough
    cheap = checkpoint_problem(newest, thorough=False)
    if cheap_sees_it:
        assert cheap is not None and cheap.startswith("optimizer.pt "), cheap
    else:
        assert cheap is None, cheap
    # The resume itself walks back to checkpoint 10 either way.
    assert resume_point(job_dir).step == 10
    assert latest_loadable_checkpoint(job_dir).step == 10
