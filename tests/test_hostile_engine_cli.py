"""Hostile cases of the CLI's edges (issue 8, case 12): an empty job id, a closed pipe, a name
that would break the terminal, a read-only database.

Real CLI (in-process `main` or its own process), real store files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import ROOT, cli, cli_env, write_config
from view_helpers import make_job

from desktop.cli import main
from desktop.core.store import DB_FILENAME, JobStore
from desktop.models import JobState, MetricPoint


def _store_completed_job(home: Path, job_id: str, steps: int) -> None:
    """A completed job with `steps` logged steps, in the real store under `home`."""
    job_dir = home / "jobs" / job_id
    job_dir.mkdir(parents=True)
    job = make_job(job_id, state=JobState.COMPLETED, job_dir=job_dir)
    points = [
        MetricPoint(job_id=job_id, step=step, name=name, value=1.0 / step, time=1.0e9 + step)
        for step in range(1, steps + 1)
        for name in ("loss", "learning_rate", "grad_norm")
    ]
    with JobStore(home / DB_FILENAME) as store:
        store.add_job(job)
        store.record_progress(store.get_job(job_id), points)


@pytest.mark.parametrize("command", ["show", "metrics"])
def test_an_empty_job_id_is_refused(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    _store_completed_job(home, "20260101-000000-aaaa", steps=3)
    monkeypatch.setenv("FTDESK_HOME", str(home))
    assert main([command, ""]) == 2
    said = capsys.readouterr()
    assert "give a job id" in said.err
    assert "20260101-000000-aaaa" not in said.out


def test_metrics_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _store_completed_job(home, "20260101-000000-bbbb", steps=5000)  # far over a pipe's buffer
    script = (
        f"'{sys.executable}' -m desktop.cli metrics 20260101-000000-bbbb | head -n 2; "
        'echo "cli exit ${PIPESTATUS[0]}" >&2'
    )
    done = subprocess.run(
        ["bash", "-c", script],
        env=cli_env(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.splitlines()[0].startswith("STEP")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] in ("cli exit 0", "cli exit 141"), done.stderr


@pytest.mark.parametrize(
    "name",
    ["two\nlines", "clear \x1b[2J screen", "bell\x07", "x" * 121],
    ids=["newline", "ansi", "control", "too-long"],
)
def test_a_name_that_is_not_one_printable_line_is_refused(
    name: str,
    tmp_path: Path,
    demo_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("FTDESK_HOME", str(home))
    config = write_config(tmp_path / "cfg", demo_template)
    assert main(["run", str(config), "--name", name]) == 2
    err = capsys.readouterr().err
    assert "--name" in err and "120" in err
    assert "\x1b" not in err and "\x07" not in err
    assert not (home / "jobs").exists() or not list((home / "jobs").iterdir())


@pytest.mark.slow
def test_run_with_a_read_only_database_leaves_no_job_folder(
    tmp_path: Path, demo_template: Path
) -> None:
    home = tmp_path / "home"
    _store_completed_job(home, "20260101-000000-cccc", steps=1)
    db = home / DB_FILENAME
    config = write_config(tmp_path / "cfg", demo_template)
    # A read-only bind mount of the database file in a private mount namespace: read-only
    # even for root, and nothing outside this one command sees it.
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("no user namespaces here (unshare -rm) to mount the database read-only")
    script = (
        f"mount --bind '{db}' '{db}' && mount -o remount,bind,ro '{db}' && "
        f"exec '{sys.executable}' -m desktop.cli run '{config}'"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        env=cli_env(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert str(db) in done.stderr, done.stderr
    assert sorted(os.listdir(home / "jobs")) == ["20260101-000000-cccc"]
    # The store still answers, and knows only the one job.
    listed = cli(home, "jobs")
    assert listed.returncode == 0, listed.stderr
    assert "20260101-000000-cccc" in listed.stdout
