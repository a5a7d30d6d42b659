"""A hostile event stream and job folder under a real trainer: nothing lost, nothing misstated.

Each test runs the real trainer on the demo through the local provider and ingests every poll
into a real store, as the job service does. The trainer is paused (SIGSTOP) while the stream
or the folder is damaged, so what the test does lands mid-run, with no timing luck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from desktop.core.ingest import ingest
from desktop.core.store import JobStore
from desktop.models import Job, JobState
from desktop.providers.local import LocalProvider
from trainer.config import load_config
from trainer.protocol import EVENTS_FILE

pytestmark = pytest.mark.slow


# Every run is long enough that what a test does after its first stored point (pause, damage,
# cancel) lands mid-run, whatever the load: with 12 steps a busy machine saw the trainer finish
# before the pause (a forged status then met a completed job) or a cancel land on the last step.
STEPS = 100


def _make_job(job_dir: Path, job_id: str, *, max_steps: int) -> Job:
    config_path = job_dir / "config.json"
    data = json.loads(config_path.read_text(encoding="utf-8"))
    data["training"]["max_steps"] = max_steps
    data["training"]["save_steps"] = 1000
    data["training"]["logging_steps"] = 1
    config_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return Job(id=job_id, name=job_id, config=load_config(config_path), job_dir=job_dir)


class Run:
    """One real trainer run watched as the job service watches it: poll, then ingest."""

    def __init__(self, home: Path, store: JobStore, job: Job) -> None:
        self.provider = LocalProvider(home, offline=True)
        self.store = store
        self.job = job
        store.add_job(job)

    @property
    def pid(self) -> int:
        assert self.job.handle is not None and self.job.handle.pid is not None
        return self.job.handle.pid

    async def launch(self) -> None:
        await self.provider.launch(self.job)

    async def poll(self) -> Job:
        update = await self.provider.poll(self.job)
        self.job = ingest(self.store, self.job, update).job
        return self.job

    async def poll_until(self, done: Callable[[Job], bool], timeout: float = 240.0) -> Job:
        deadline = time.monotonic() + timeout
        while not done(await self.poll()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out in {self.job.state} ({self.job.state_reason})")
            await asyncio.sleep(0.2)
        return self.job

    async def first_point(self) -> None:
        await self.poll_until(lambda job: self.store.metric_count(job.id) > 0)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The trainer stopped (SIGSTOP) for the duration; what happens meanwhile is mid-run."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def stored_steps(self) -> list[int]:
        return sorted({p.step for p in self.store.metrics(self.job.id, names=["loss"])})

    def log_text(self) -> str:
        return (Path(self.job.job_dir) / "train.log").read_text(encoding="utf-8")


def _metric_steps_in(path: Path) -> list[int]:
    """The loss steps the trainer wrote (parsed here, not by the reader under test)."""
    steps = set()
    for raw in path.read_bytes().splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("kind") == "metric" and "loss" in record:
            steps.add(record["step"])
    return sorted(steps)


@pytest.fixture
def run_env(tmp_path: Path, demo_dir: Path) -> Iterator[tuple[Path, JobStore, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    store = JobStore(tmp_path / "db.sqlite3")
    try:
        yield home, store, demo_dir
    finally:
        store.close()
        # This stream was damaged on purpose: keep it out of the session's events check.
        events = demo_dir / EVENTS_FILE
        if events.exists():
            events.rename(demo_dir / "events.hostile.jsonl")


@pytest.mark.expect_log(r"seq went back")
def test_a_huge_seq_line_mid_run_loses_no_later_point(
    run_env: tuple[Path, JobStore, Path],
) -> None:
    home, store, job_dir = run_env
    run = Run(home, store, _make_job(job_dir, "j-huge-seq", max_steps=STEPS))

    async def scenario() -> None:
        await run.launch()
        await run.first_point()
        with run.paused():
            await run.poll()  # everything written so far is stored
            with open(job_dir / EVENTS_FILE, "a", encoding="utf-8") as fh:
                fh.write(
                    json.dumps(
                        {
                            "seq": 1_000_000_000,
                            "time": time.time(),
                            "kind": "log",
                            "message": "forged",
                        }
                    )
                    + "\n"
                )
            await run.poll()
        await run.poll_until(lambda job: job.is_final)

    asyncio.run(scenario())
    assert run.job.state is JobState.COMPLETED, run.job.state_reason
    assert run.job.step == STEPS
    every_step = list(range(1, STEPS + 1))
    assert run.stored_steps() == _metric_steps_in(job_dir / EVENTS_FILE) == every_step
    # Said once, where the user reads the job's log.
    assert run.log_text().count("seq went back") == 1


def _truncate_to_half_its_lines(path: Path) -> None:
    """Cut the file in place at a line boundary near its middle (the writer keeps appending)."""
    lines = path.read_bytes().splitlines(keepends=True)
    keep = sum(len(line) for line in lines[: len(lines) // 2])
    os.truncate(path, keep)


@pytest.mark.expect_log(r"events.jsonl shrank to \d+ bytes")
def test_events_truncated_mid_run_are_read_again_and_counted_once(
    run_env: tuple[Path, JobStore, Path],
) -> None:
    home, store, job_dir = run_env
    run = Run(home, store, _make_job(job_dir, "j-truncated", max_steps=STEPS))

    async def scenario() -> None:
        await run.launch()
        await run.first_point()
        with run.paused():
            await run.poll()  # everything written so far is stored
            _truncate_to_half_its_lines(job_dir / EVENTS_FILE)
            await run.poll()
        await run.poll_until(lambda job: job.is_final)

    asyncio.run(scenario())
    assert run.job.state is JobState.COMPLETED, run.job.state_reason
    # Every step once: the lines cut away were stored before, the rest is read again.
    points = run.store.metrics(run.job.id, names=["loss"])
    assert [p.step for p in points] == list(range(1, STEPS + 1))
    assert "events.jsonl shrank" in run.log_text()


@pytest.mark.expect_log(r"events.jsonl (shrank to \d+ bytes|was replaced)")
def test_a_resume_after_events_jsonl_is_gone_stores_every_later_point(
    run_env: tuple[Path, JobStore, Path],
) -> None:
    home, store, job_dir = run_env
    job = _make_job(job_dir, "j-resume-gone", max_steps=STEPS)
    run = Run(home, store, job)

    async def scenario() -> None:
        await run.launch()
        await run.poll_until(lambda job: (job.step or 0) >= 3)
        await run.provider.cancel(run.job)
        await run.poll_until(lambda job: job.is_final)
        assert run.job.state is JobState.CANCELLED, run.job.state_reason
        assert run.job.events_last_seq > 0
        (job_dir / EVENTS_FILE).unlink()
        # What `JobService.resume` stores before it hands the job to the provider.
        run.job = store.transition(
            run.job,
            JobState.QUEUED,
            "resume",
            resume=True,
            handle=None,
            exit_code=None,
            finished_at=None,
            eta_seconds=None,
        )
        last_seq = run.job.events_last_seq
        await run.launch()
        await run.poll_until(lambda job: job.is_final)
        # The resumed trainer's stream numbers its events above the deleted one's.
        first = json.loads((job_dir / EVENTS_FILE).read_bytes().splitlines()[0])
        assert first["seq"] > last_seq

    asyncio.run(scenario())
    assert run.job.state is JobState.COMPLETED, run.job.state_reason
    # The resumed attempt's steps are stored too, each step once.
    points = store.metrics(run.job.id, names=["loss"])
    assert [p.step for p in points] == list(range(1, STEPS + 1))


def test_a_forged_status_json_is_not_believed_while_the_trainer_lives(
    run_env: tuple[Path, JobStore, Path],
) -> None:
    home, store, job_dir = run_env
    run = Run(home, store, _make_job(job_dir, "j-forged", max_steps=STEPS))

    async def scenario() -> None:
        await run.launch()
        await run.first_point()
        with run.paused():
            forged = {"state": "failed", "exit_code": 1, "message": "forged"}
            (job_dir / "status.json").write_text(json.dumps(forged), encoding="utf-8")
            for _ in range(3):
                job = await run.poll()
                assert not job.is_final, f"{job.state}: {job.state_reason}"
        await run.poll_until(lambda job: job.is_final)

    asyncio.run(scenario())
    assert run.job.state is JobState.COMPLETED, run.job.state_reason
    assert "forged" not in [t.reason for t in store.transitions(run.job.id)]
    assert run.stored_steps() == list(range(1, STEPS + 1))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_live_jobs_folder_deleted_fails_the_job_and_stops_its_trainer(
    run_env: tuple[Path, JobStore, Path],
) -> None:
    home, store, job_dir = run_env
    run = Run(home, store, _make_job(job_dir, "j-deleted", max_steps=STEPS))

    async def scenario() -> None:
        await run.launch()
        await run.first_point()
        pid = run.pid
        os.kill(pid, signal.SIGSTOP)  # the folder goes while the trainer is mid-run
        try:
            shutil.rmtree(job_dir)
            job = await run.poll()
            assert job.state is JobState.FAILED, f"{job.state}: {job.state_reason}"
            deadline = time.monotonic() + 30
            while not _gone(pid):
                assert time.monotonic() < deadline, "the trainer still runs"
                await asyncio.sleep(0.1)
            assert (await run.poll()).state is JobState.FAILED
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    asyncio.run(scenario())
    assert run.job.state_reason == f"its folder {job_dir.resolve()} was deleted"
    assert JobState.COMPLETED not in [t.new for t in store.transitions(run.job.id)]
