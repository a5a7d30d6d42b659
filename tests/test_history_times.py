"""History times are when a change happened, not when it was read (issue 8, case 12).

A real job runs to its end with no watcher: `finetune-desk run` (no `--follow`) launches it
and exits. Only after the trainer is gone, and the clock has moved measurably past its last
word, does `finetune-desk show` poll and store what happened. Each stored transition must
carry the time of the evidence (the trainer's `status` event, `status.json`), not the time of
that late read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
from test_cli import cli, job_id_from, wait_for, write_config

from desktop.cli.output import fmt_time
from trainer.protocol import read_all_events, read_status

LATE_S = 3.0  # how much later than the trainer's last word the first poll surely comes


def _gone(job_dir: Path) -> bool:
    """The trainer wrote its last word and its process has ended."""
    launch = job_dir / "launch.json"
    if read_status(job_dir) is None or not launch.is_file():
        return False
    pid = json.loads(launch.read_text(encoding="utf-8"))["pid"]
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_transitions_stored_late_carry_the_time_they_happened(
    tmp_path: Path, demo_template: Path
) -> None:
    home = tmp_path / "home"
    config = write_config(tmp_path / "cfg", demo_template, max_steps=3, save_steps=1000)
    started = cli(home, "run", str(config))
    assert started.returncode == 0, started.stdout + started.stderr
    job_id = job_id_from(started.stdout)
    job_dir = home / "jobs" / job_id
    wait_for(lambda: _gone(job_dir), 240, "the trainer to finish")
    status = read_status(job_dir)
    assert status is not None and status.state == "completed"
    # Wait on the clock itself (a condition, not a hope): the read below is surely late.
    wait_for(lambda: time.time() > status.finished_at + LATE_S, 30, "the clock to move on")
    read_at = time.time()

    shown = cli(home, "show", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["state"] == "completed"
    history = [(t["old"], t["new"], t["time"]) for t in data["transitions"]]

    happened = {
        e.state: e.time
        for e in read_all_events(job_dir / "events.jsonl")
        if e.kind == "status" and e.state not in ("completed", "failed", "cancelled")
    }
    happened["completed"] = status.finished_at
    checked = 0
    for old, new, at in history:
        if old is None:
            continue  # the job's creation: stored when it happened, at `run`
        assert new in happened, (new, history)
        assert abs(at - happened[new]) <= 1.0, (
            f"{old} -> {new} stored at {at}, happened at {happened[new]} (read at {read_at})"
        )
        assert at < read_at - LATE_S + 1.0, (new, at, read_at)
        checked += 1
    assert [new for _, new, _ in history][-1] == "completed"
    assert checked >= 2, history
    assert data["finished_at"] == pytest.approx(status.finished_at, abs=1.0)
    assert data["started_at"] <= happened["training"] + 1.0

    text = cli(home, "show", job_id)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.split("history:")[1].splitlines()
    done_line = next(line for line in lines if "-> completed" in line)
    assert done_line.strip().startswith(fmt_time(status.finished_at)), text.stdout
