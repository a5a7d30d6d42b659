"""Hostile case: a damaged page in the job database (issue 8, case 9).

A real store file is written and closed, then garbage is written over pages in its middle.
`finetune-desk metrics JOB` must refuse in one sentence that names the file and the way out,
never print a partial table with exit 0.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_cli import cli
from view_helpers import make_job

from desktop.core.errors import StoreError
from desktop.core.store import DB_FILENAME, JobStore
from desktop.models import JobState, MetricPoint
from trainer.protocol import read_all_events

JOB_ID = "20260101-000000-dddd"
STEPS = 601


def _write_store(home: Path) -> Path:
    job_dir = home / "jobs" / JOB_ID
    job_dir.mkdir(parents=True)
    points = [
        MetricPoint(job_id=JOB_ID, step=step, name=name, value=1.0 / step, time=1.0e9 + step)
        for step in range(1, STEPS + 1)
        for name in ("loss", "learning_rate", "grad_norm", "tokens_seen")
    ]
    db = home / DB_FILENAME
    with JobStore(db) as store:
        store.add_job(make_job(JOB_ID, state=JobState.COMPLETED, job_dir=job_dir))
        store.record_progress(store.get_job(JOB_ID), points)
    return db


def _damage_middle_pages(db: Path) -> None:
    """Garbage over two pages in the middle of the closed file (the metrics table's)."""
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    size = db.stat().st_size
    assert size > 20 * page, "the store is too small to damage a middle page"
    start = (size // page // 2) * page
    garbage = bytes((i * 73 + 41) % 256 for i in range(2 * page))
    with open(db, "r+b") as fh:
        fh.seek(start)
        fh.write(garbage)


def test_metrics_refuses_a_damaged_database_in_one_sentence(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = _write_store(home)
    _damage_middle_pages(db)
    done = cli(home, "metrics", JOB_ID)
    assert done.returncode in (1, 2), done.stdout[-500:] + done.stderr
    assert "STEP" not in done.stdout, done.stdout[-500:]
    assert "Traceback" not in done.stderr, done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert str(db) in message and "damaged" in message and "move it aside" in message, message


def test_the_store_checks_itself_when_it_opens(tmp_path: Path) -> None:
    db = _write_store(tmp_path / "home")
    _damage_middle_pages(db)
    with pytest.raises(StoreError, match="damaged") as caught:
        JobStore(db)
    assert str(db) in str(caught.value)


def test_repair_rebuilds_the_store_from_the_job_folders(
    tmp_path: Path, demo_template: Path, run_trainer: Callable[..., Any]
) -> None:
    home = tmp_path / "home"
    db = _write_store(home)  # a job whose folder holds no config: not a job folder
    job_dir = home / "jobs" / "20260101-000001-eeee"
    shutil.copytree(demo_template, job_dir)
    done = run_trainer(job_dir)
    assert done.returncode == 0, done.stderr
    _damage_middle_pages(db)

    repaired = cli(home, "repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "rebuilt 1 job(s)" in repaired.stdout
    assert list(home.glob(f"{DB_FILENAME}.damaged-*")), "the damaged file is kept"
    shown = cli(home, "show", "20260101-000001-eeee", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["state"] == "completed"
    stored = json.loads(cli(home, "metrics", "20260101-000001-eeee", "--json").stdout)
    logged = {e.step for e in read_all_events(job_dir / "events.jsonl") if e.kind == "metric"}
    assert {row["step"] for row in stored} == logged
    again = cli(home, "repair")
    assert again.returncode == 0 and "nothing to repair" in again.stdout
