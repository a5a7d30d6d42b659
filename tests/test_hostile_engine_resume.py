"""Hostile case: three `run --resume JOB` at once, then `cancel JOB` (issue 8, case 1).

Real CLI processes, real trainer on the demo, real store. One resume wins, the others say
"already resuming"; exactly one trainer runs; the cancel stops that trainer, which exits
cancelled without writing `output/`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from test_cli import ROOT, cli, cli_env, job_id_from, max_metric_step, wait_for, write_config

from desktop.cli import main
from trainer.protocol import read_all_events, read_status

pytestmark = pytest.mark.slow


def _trainers_of(job_dir: Path) -> list[psutil.Process]:
    """Live trainer processes whose command line names this job folder."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if "trainer" in cmd and "run" in cmd and str(job_dir) in cmd:
            found.append(proc)
    return found


def _resumed_starts(events: Path) -> int:
    return sum(
        1
        for e in read_all_events(events)
        if e.kind == "status" and getattr(e, "resumed_from_step", None) is not None
    )


def test_three_concurrent_resumes_start_one_trainer_and_cancel_stops_it(
    tmp_path: Path,
    demo_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    try:
        _resume_three_then_cancel(home, tmp_path, demo_template, monkeypatch, capsys)
    finally:
        # Whatever failed, leave no trainer or scheduler of this test running.
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(home) in part for part in proc.info["cmdline"] or []):
                with contextlib.suppress(psutil.Error):
                    proc.kill()


def _resume_three_then_cancel(
    home: Path,
    tmp_path: Path,
    demo_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path / "cfg", demo_template, max_steps=100000, save_steps=100000)
    started = cli(home, "run", str(config))
    assert started.returncode == 0, started.stderr
    job_id = job_id_from(started.stdout)
    job_dir = (home / "jobs" / job_id).resolve()
    events = job_dir / "events.jsonl"
    wait_for(lambda: max_metric_step(events) >= 1, 180, "training steps")
    monkeypatch.setenv("FTDESK_HOME", str(home))
    assert main(["cancel", job_id]) == 0
    capsys.readouterr()
    stopped_at = max_metric_step(events)

    # Three resumes at once, as `for i in 1 2 3; do finetune-desk run --resume J & done`.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "desktop.cli", "run", "--resume", job_id],
            env=cli_env(home),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    accepted = [o for o in outcomes if o[0] == 0]
    refused = [o for o in outcomes if o[0] != 0]
    assert len(accepted) == 1, outcomes
    assert len(refused) == 2, outcomes
    for code, _out, err in refused:
        assert code == 2 and "already resuming" in err, (code, err)

    # The winner's trainer trains past the old step; exactly one trainer runs for the job.
    wait_for(lambda: max_metric_step(events) > stopped_at, 240, "the resumed run's steps")
    assert _resumed_starts(events) == 1
    assert len(_trainers_of(job_dir)) == 1
    assert not list((home / "queue" / "entries").glob("*.json"))

    cancelled = cli(home, "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert f"{job_id}: cancelled" in cancelled.stdout
    # The cancel reached the trainer that really ran: it is gone, said so, wrote no output.
    wait_for(lambda: not _trainers_of(job_dir), 120, "the trainer to exit")
    status = read_status(job_dir)
    assert status is not None and status.state == "cancelled"
    assert not (job_dir / "output").exists()
    shown = cli(home, "show", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["state"] == "cancelled"
    resumes = [t for t in data["transitions"] if t["old"] == "cancelled" and t["new"] == "queued"]
    assert len(resumes) == 1, data["transitions"]
