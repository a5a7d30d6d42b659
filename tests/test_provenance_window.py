"""The window's Resume when what the job trained on changed: the status bar names the change
and a "Resume anyway" confirmation resumes it with force (issue 8, provenance).

pytest-qt, offscreen, a real JobService and local provider, the real trainer.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from PySide6.QtWidgets import QMessageBox

from desktop.core.store import JobStore
from desktop.models import Job, JobState, Settings
from trainer.config import load_config
from trainer.protocol import read_all_events

pytest_plugins = ["app_fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.qt_log_level_fail("CRITICAL")]


def _cancelled_copy(trained: Path, home: Path) -> Job:
    """The trained demo job copied into `home` and stored as cancelled at its last checkpoint
    (its provenance.json recorded by the trainer), its output and final word removed."""
    job_dir = home / "jobs" / "20261202-120000-beef"
    shutil.copytree(trained, job_dir)
    shutil.rmtree(job_dir / "output")
    (job_dir / "status.json").unlink()
    assert (job_dir / "provenance.json").is_file()
    config = load_config(job_dir / "config.json")
    job = Job(
        id=job_dir.name,
        name="demo",
        state=JobState.CANCELLED,
        config=config,
        job_dir=job_dir,
        step=40,
        total_steps=40,
        # As if the app had read the first run's events: the resumed run's come after them.
        events_offset=(job_dir / "events.jsonl").stat().st_size,
        events_last_seq=read_all_events(job_dir / "events.jsonl")[-1].seq,
    )
    store = JobStore()
    store.add_job(job, "cancelled")
    store.close()
    return job


@pytest.mark.expect_log("the dataset changed since this job started")
def test_resume_names_the_changed_dataset_and_resume_anyway_forces_it(
    qtbot: Any,
    qloop: Any,
    demo_home: Path,
    trained_lora_job: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from desktop.views.app import build_window

    job = _cancelled_copy(trained_lora_job, demo_home)
    data = Path(job.config.dataset.path)
    content = data.read_bytes()
    at = content.index(b'"content": "') + len(b'"content": "')
    data.write_bytes(content[:at] + b"Z" + content[at + 1 :])

    asked: list[str] = []

    def answer(box: QMessageBox) -> int:
        asked.append(f"{box.text()} {box.informativeText()}")
        anyway = next(b for b in box.buttons() if b.text() == "Resume anyway")
        anyway.click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", answer)
    window = build_window(
        settings=Settings(poll_interval_s=0.25, cancel_grace_s=5), check_runtime=False
    )
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        await until(lambda: window.state.job(job.id) is not None, 30)
        window.job_actions.resume_job(job.id)
        await until(lambda: asked, 120)
        await until(
            lambda: (j := window.state.job(job.id)) is not None and j.state is JobState.COMPLETED,
            240,
        )
        window.close()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
    assert len(asked) == 1
    assert "the dataset changed since this job started: sha256" in asked[0], asked
    store = JobStore()
    try:
        reasons = [t.reason for t in store.transitions(job.id) if t.new is JobState.QUEUED]
    finally:
        store.close()
    assert len(reasons) == 1 and "forced over: the dataset changed" in reasons[0], reasons


def test_resuming_a_job_without_provenance_says_so_in_the_status_bar(
    qtbot: Any, qloop: Any, demo_home: Path, trained_lora_job: Path
) -> None:
    """The note that a job has no provenance.json (made by an older version) must reach the
    person: it is part of the "resumed" message, not a message that one replaces in the same
    tick."""
    from desktop.views.app import build_window

    job = _cancelled_copy(trained_lora_job, demo_home)
    (job.job_dir / "provenance.json").unlink()
    window = build_window(
        settings=Settings(poll_interval_s=0.25, cancel_grace_s=5), check_runtime=False
    )
    qtbot.addWidget(window)
    shown: list[str] = []
    window.statusBar().messageChanged.connect(shown.append)

    async def body() -> None:
        await window.start()
        await until(lambda: window.state.job(job.id) is not None, 30)
        window.job_actions.resume_job(job.id)
        await until(lambda: [m for m in shown if f"job {job.id} resumed" in m], 120)
        await until(
            lambda: (j := window.state.job(job.id)) is not None and j.state is JobState.COMPLETED,
            240,
        )
        window.close()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
    [resumed] = [m for m in shown if f"job {job.id} resumed" in m]
    assert "no provenance recorded" in resumed, shown
