"""Closing the window while billed cloud jobs run asks whether to leave them running."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from PySide6.QtWidgets import QMessageBox

from desktop.core.store import JobStore
from desktop.models import Job, JobState, JobUpdate, LogChunk, ProviderHandle, Settings
from desktop.providers.base import Capability, ProviderContext, register_provider
from trainer.config import load_config

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.qt_log_level_fail("CRITICAL")

CANCELLED: list[str] = []


class BilledProvider:
    """A cloud-like provider at the network's edge: bills, keeps its jobs training, records
    cancels."""

    name = "billed-test"
    capabilities = frozenset({Capability.BILLING, Capability.REATTACH})

    def __init__(self, context: ProviderContext) -> None:
        self.context = context

    def apply_context(self, context: ProviderContext) -> None:
        self.context = context

    async def launch(self, job: Job) -> ProviderHandle:
        return ProviderHandle(provider=self.name, pod_id=f"pod-{job.id}")

    async def poll(self, job: Job) -> JobUpdate:
        return JobUpdate()

    async def cancel(self, job: Job) -> None:
        CANCELLED.append(job.id)

    async def logs(self, job: Job, since: int) -> LogChunk:
        return LogChunk(text="", offset=since, next_offset=since)

    async def fetch_artifacts(self, job: Job, dest: Path) -> None:
        return None

    async def gpu_slots(self) -> tuple[int, ...]:
        return ()

    def queue_position(self, job_id: str) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


register_provider("billed-test", BilledProvider)


def _training_job(home: Path, provider: str, suffix: str) -> Job:
    job_dir = home / "jobs" / f"20261202-120000-{suffix}"
    job_dir.mkdir(parents=True)
    config = load_config(home / "demo" / "config.json")
    job = Job(
        id=job_dir.name,
        name="cloud",
        provider=provider,
        state=JobState.TRAINING,
        config=config,
        job_dir=job_dir,
        budget_usd=Decimal("7.5"),
        handle=ProviderHandle(provider=provider, pod_id=f"pod-{suffix}"),
    )
    store = JobStore()
    store.add_job(job, "training in the cloud")
    store.close()
    return job


def _window() -> Any:
    from desktop.views.app import build_window

    return build_window(
        settings=Settings(poll_interval_s=0.25, cancel_grace_s=5), check_runtime=False
    )


def _close_answering(
    qtbot: Any, qloop: Any, monkeypatch: pytest.MonkeyPatch, answer: str | None, jobs: list[Job]
) -> tuple[Any, list[str]]:
    """Start a window on the stored jobs, close it answering `answer`; the window and what
    was asked."""
    asked: list[str] = []

    def reply(box: QMessageBox) -> int:
        asked.append(f"{box.text()} {box.informativeText()}")
        next(b for b in box.buttons() if b.text() == answer).click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", reply)
    CANCELLED.clear()
    window = _window()
    qtbot.addWidget(window)
    window.show()

    async def body() -> None:
        await window.start()
        await until(lambda: all(window.state.job(j.id) is not None for j in jobs), 30)
        window.close()
        if answer == "Cancel jobs and quit":
            await until(lambda: not window.isVisible(), 30)
        if window.isVisible():
            assert window.close_guard.pending is False
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
    return window, asked


def test_dont_quit_keeps_the_window_open_and_the_jobs_running(
    qtbot: Any, qloop: Any, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _training_job(demo_home, "billed-test", "aa01")
    window, asked = _close_answering(qtbot, qloop, monkeypatch, "Don't quit", [job])
    assert len(asked) == 1
    assert "Leave 1 cloud job(s) running?" in asked[0], asked
    assert "budget $7.5" in asked[0], asked
    assert window.isVisible()
    assert CANCELLED == []


def test_cancel_jobs_and_quit_cancels_each_billed_job_then_closes(
    qtbot: Any, qloop: Any, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [_training_job(demo_home, "billed-test", s) for s in ("bb01", "bb02")]
    window, asked = _close_answering(qtbot, qloop, monkeypatch, "Cancel jobs and quit", jobs)
    assert len(asked) == 1 and "Leave 2 cloud job(s) running?" in asked[0], asked
    assert sorted(CANCELLED) == sorted(j.id for j in jobs)
    assert not window.isVisible()


def test_leave_running_closes_without_cancelling(
    qtbot: Any, qloop: Any, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _training_job(demo_home, "billed-test", "cc01")
    window, asked = _close_answering(qtbot, qloop, monkeypatch, "Leave running", [job])
    assert len(asked) == 1
    assert not window.isVisible()
    assert CANCELLED == []


def test_no_billed_active_job_closes_without_asking(
    qtbot: Any, qloop: Any, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window, asked = _close_answering(qtbot, qloop, monkeypatch, None, [])
    assert asked == []
    assert not window.isVisible()
