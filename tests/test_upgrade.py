"""A data folder written by an earlier version is read, and its cancelled job resumed.

`tests/fixtures/upgrade/<version>/` holds a small FTDESK_HOME made by that version's own
`finetune-desk` and trainer (see its README.md and `make_fixture.py`): the job database and two
job folders, one cancelled mid-run with a checkpoint, one completed. Each test copies it to a
temporary folder (the committed files are never touched) and runs today's CLI on the copy.
A store from a newer version than the code knows is refused in one sentence.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_cli import cli, metric_values, show_json, stored_values

from desktop.core.store import DB_FILENAME, SCHEMA_VERSION
from trainer.protocol import MetricEvent, read_all_events

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upgrade"
VERSIONS = sorted(p.name for p in FIXTURES.iterdir() if (p / "fixture.json").is_file())


def relocate(root: Path, old_root: str) -> None:
    """Move the copy's stored paths from where the fixture was made to `root`.

    The app stores absolute paths (the job folder, the config's model and data). JSON files
    and the store's snapshots are rewritten; `events.jsonl` is left byte for byte, since the
    store's read offsets point into it (its artifact paths are the record of where they were
    written).
    """
    new_root = str(root)
    for path in root.rglob("*.json"):
        text = path.read_text(encoding="utf-8")
        if old_root in text:
            path.write_text(text.replace(old_root, new_root), encoding="utf-8")
    conn = sqlite3.connect(root / "home" / DB_FILENAME)
    with conn:
        conn.execute("UPDATE jobs SET snapshot = replace(snapshot, ?, ?)", (old_root, new_root))
    conn.close()


def copy_fixture(version: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A relocated copy of the fixture: (its home, its manifest)."""
    root = tmp_path / "fixture"
    shutil.copytree(FIXTURES / version, root)
    manifest: dict[str, Any] = json.loads((root / "fixture.json").read_text(encoding="utf-8"))
    relocate(root, manifest["root"])
    return root / "home", manifest


def test_there_is_a_fixture() -> None:
    assert VERSIONS, f"no upgrade fixture under {FIXTURES}"


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_jobs_show_and_metrics_read_an_older_store(version: str, tmp_path: Path) -> None:
    home, manifest = copy_fixture(version, tmp_path)
    ids = manifest["jobs"]
    listed = cli(home, "jobs")
    assert listed.returncode == 0, listed.stderr
    for name, state in (("cancelled", "cancelled"), ("completed", "completed")):
        row = next(line for line in listed.stdout.splitlines() if ids[name] in line)
        assert f" {state} " in f" {row} ", listed.stdout

        shown = show_json(home, ids[name])
        assert shown["state"] == state
        events_path = home / "jobs" / ids[name] / "events.jsonl"
        assert shown["events_offset"] == events_path.stat().st_size
        logged = metric_values(events_path)
        stored, count = stored_values(home, ids[name])
        assert logged and stored == logged
        assert count == len(logged)

    done = show_json(home, ids["completed"])
    assert done["step"] == manifest["max_steps"]["completed"]
    assert done["output_dir"] and (Path(done["output_dir"]) / "adapter_config.json").is_file()
    stopped = show_json(home, ids["cancelled"])
    assert 0 < stopped["step"] < manifest["max_steps"]["cancelled"]
    assert stopped["last_checkpoint"] and Path(stopped["last_checkpoint"]).is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_the_older_cancelled_job_resumes_from_its_checkpoint(version: str, tmp_path: Path) -> None:
    home, manifest = copy_fixture(version, tmp_path)
    job_id = manifest["jobs"]["cancelled"]
    total = manifest["max_steps"]["cancelled"]
    events_path = home / "jobs" / job_id / "events.jsonl"
    checkpoint = Path(show_json(home, job_id)["last_checkpoint"])
    saved_at = int(checkpoint.name.split("-")[1])

    resumed = cli(home, "run", "--resume", job_id, "--follow")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from step {saved_at}" in resumed.stdout

    data = show_json(home, job_id)
    assert data["state"] == "completed" and data["step"] == total
    events = read_all_events(events_path)
    starts = [i for i, e in enumerate(events) if getattr(e, "resumed_from_step", None)]
    assert [getattr(events[i], "resumed_from_step", None) for i in starts] == [saved_at]
    # The resumed run continues after the checkpoint's step: it loaded it, not step 0.
    after = [e.step for e in events[starts[0] :] if isinstance(e, MetricEvent)]
    assert after and after[0] == saved_at + 1, after[:3]
    steps = {step for step, _, _ in metric_values(events_path)}
    assert steps == set(range(1, total + 1))
    stored, _ = stored_values(home, job_id)
    assert {step for step, _, _ in stored} == steps


@pytest.mark.parametrize("version", VERSIONS)
def test_a_store_from_a_newer_version_is_refused_in_one_sentence(
    version: str, tmp_path: Path
) -> None:
    home, _ = copy_fixture(version, tmp_path)
    db = home / DB_FILENAME
    newer = SCHEMA_VERSION + 1
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
    conn.close()
    before = db.read_bytes()

    done = cli(home, "jobs")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert str(db) in message, message
    assert f"version {newer}" in message and f"({SCHEMA_VERSION})" in message, message
    assert "update Finetune Desk" in message, message
    assert db.read_bytes() == before
