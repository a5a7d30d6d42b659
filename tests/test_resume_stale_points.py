"""A resume that stops short of where the failed attempt had logged leaves no stale points.

The failed attempt logged steps past its newest checkpoint; the resumed attempt starts again at
that checkpoint and dies before it reaches the old last step. The stored history (`metrics
--json`, JobStore) must end at the new attempt's last step, as the live chart does: the old
attempt's points after the checkpoint were superseded when the resumed attempt started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_cli import cli, job_id_from, metric_values, stored_values, wait_for, write_config

from desktop.core.metric_points import points_across_resumes
from desktop.core.store import JobStore
from trainer.protocol import (
    MetricEvent,
    StatusEvent,
    latest_complete_checkpoint,
    read_all_events,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP and SIGKILL are POSIX"),
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


def _metric_steps(events: Path) -> list[int]:
    return [e.step for e in read_all_events(events) if e.kind == "metric"]


def _checkpoint_step(job_dir: Path) -> int:
    found = latest_complete_checkpoint(job_dir)
    return -1 if found is None else int(found.name.rsplit("-", 1)[1])


def _pid(job_dir: Path) -> int:
    return int(json.loads((job_dir / "launch.json").read_text(encoding="utf-8"))["pid"])


def _kill_well_past_a_checkpoint(pid: int, job_dir: Path, gap: int) -> tuple[int, int]:
    """SIGKILL the trainer once it has logged at least `gap` steps past its newest complete
    checkpoint (stopped first, so what it wrote is known when it dies).

    Returns:
        (its last logged step, the checkpoint's step).
    """
    events = job_dir / "events.jsonl"
    while True:
        wait_for(lambda: _checkpoint_step(job_dir) > 0, 300, "a checkpoint")
        os.kill(pid, signal.SIGSTOP)
        last, checkpoint = max(_metric_steps(events)), _checkpoint_step(job_dir)
        if last - checkpoint >= gap:
            os.kill(pid, signal.SIGKILL)
            return last, checkpoint
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda last=last: max(_metric_steps(events)) > last, 300, "another step")


def _resumed_at(events: Path) -> int | None:
    """The index of the resumed attempt's status event among the file's events, if written."""
    for i, event in enumerate(read_all_events(events)):
        if isinstance(event, StatusEvent) and event.resumed_from_step is not None:
            return i
    return None


def test_a_resume_that_dies_short_of_the_old_last_step_leaves_no_old_points(
    home: Path, tmp_path: Path, demo_template: Path
) -> None:
    config = write_config(
        tmp_path / "cfg", demo_template, max_steps=100000, save_steps=10, logging_steps=1
    )
    started = cli(home, "run", str(config))
    assert started.returncode == 0, started.stderr
    job_id = job_id_from(started.stdout)
    job_dir = (home / "jobs" / job_id).resolve()
    events = job_dir / "events.jsonl"

    # Attempt 1 logs 6..9 steps past its checkpoint and dies.
    killed_at, checkpoint = _kill_well_past_a_checkpoint(_pid(job_dir), job_dir, gap=6)
    stored, _ = stored_values(home, job_id)  # ingests attempt 1, and sees it failed
    assert max(s for s, _, _ in stored) == killed_at

    # Attempt 2 resumes at the checkpoint and is stopped as soon as it says so: well short of
    # the old last step (it had at least 6 steps to go).
    resumed = cli(home, "run", "--resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    pid = _pid(job_dir)
    deadline = time.monotonic() + 300
    while (at := _resumed_at(events)) is None:
        assert time.monotonic() < deadline, "the resumed attempt never said it resumed"
        time.sleep(0.005)
    os.kill(pid, signal.SIGSTOP)
    after = read_all_events(events)[at:]
    assert after[0].resumed_from_step == checkpoint  # type: ignore[union-attr]
    new_steps = [e.step for e in after if e.kind == "metric"]  # type: ignore[union-attr]
    new_last = max(new_steps, default=checkpoint)
    assert new_last < killed_at, (new_last, killed_at)  # the premise: it stopped short
    os.kill(pid, signal.SIGKILL)

    stored, count = stored_values(home, job_id)
    steps = sorted({s for s, _, _ in stored})
    assert steps == list(range(1, new_last + 1)), (steps, new_last, killed_at)
    # Each step holds the newest attempt's values: those of the resumed attempt past the checkpoint.
    newest: dict[tuple[int, str], float] = {}
    for event in read_all_events(events):
        if event.kind == "metric" and (event.step <= new_last):  # type: ignore[union-attr]
            newest.update(
                {(event.step, n): float(v) for n, v in event.values().items()}  # type: ignore[union-attr]
            )
    assert {(s, n): v for s, n, v in stored} == newest
    assert count == len(newest)
    with JobStore(home / "ftdesk.sqlite3") as store:
        points = store.metrics(job_id)
        assert max(p.step for p in points) == new_last
        assert store.metric_count(job_id) == count
    assert len(metric_values(events)) > count  # the events file keeps the old attempt's tail
    # A store rebuilt from the folder (`repair`) reads the whole file the same way.
    rebuilt, cut = points_across_resumes(job_id, read_all_events(events))
    assert cut == checkpoint
    assert {(p.step, p.name): p.value for p in rebuilt} == newest


def _metric(seq: int, step: int, loss: float) -> MetricEvent:
    return MetricEvent(seq=seq, time=float(seq), step=step, loss=loss)


def _resumed(seq: int, step: int) -> StatusEvent:
    return StatusEvent(seq=seq, time=float(seq), state="training", resumed_from_step=step)


def test_points_across_resumes_keep_only_the_history_that_happened() -> None:
    """Three attempts in one stream (as a rebuild or a long-unread poll sees them): 1-8, then
    a resume from 4 that reached 6, then a resume from 5 that reached 7. What stands: 1-4 of
    the first, 5 of the second, 6-7 of the third; stored points are cut after step 4."""
    events: list[Any] = [_metric(i, i, 1.0) for i in range(1, 9)]
    events += [_resumed(9, 4), _metric(10, 5, 2.0), _metric(11, 6, 2.0)]
    events += [_resumed(12, 5), _metric(13, 6, 3.0), _metric(14, 7, 3.0)]
    points, cut = points_across_resumes("j", events)
    assert cut == 4
    assert [(p.step, p.value) for p in points if p.name == "loss"] == [
        (1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 2.0), (6, 3.0), (7, 3.0)
    ]  # fmt: skip
    plain, none = points_across_resumes("j", events[:8])
    assert none is None and len(plain) == 8
