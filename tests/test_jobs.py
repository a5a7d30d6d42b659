"""JobService and TaskRunner: checks before launch, ingest that loses and doubles nothing,
transitions only as observed, tracked background tasks.

The provider here is a small file reader at the edge (what the trainer leaves in a job dir);
the store, the service and the event protocol are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from desktop.core.errors import ConfigError, DatasetError, JobStateError, OfflineError
from desktop.core.ingest import plan_transitions
from desktop.core.job_dirs import create_job_dir, new_job_id
from desktop.core.service import JobService
from desktop.core.tasks import TaskRunner
from desktop.models import (
    Job,
    JobState,
    JobUpdate,
    LogChunk,
    MetricPoint,
    ProviderHandle,
    SeriesColumns,
)
from desktop.providers.base import Capability, ProviderContext
from trainer.protocol import EventReader, EventWriter, StatusFile, read_all_events, write_status


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("FTDESK_HOME", str(folder))
    return folder


class DirProvider:
    """Reads a job dir like any provider would; launching only records a handle."""

    name = "dirs"
    capabilities = frozenset({Capability.REATTACH, Capability.OFFLINE})

    def __init__(self) -> None:
        self.launched: list[str] = []
        self.cancelled: list[str] = []

    async def launch(self, job: Job) -> ProviderHandle:
        self.launched.append(job.id)
        # Like every provider: a relaunch is not judged by the last run's final word.
        status = job.job_dir / "status.json"
        if status.exists():
            status.replace(job.job_dir / "status.previous.json")
        return ProviderHandle(provider=self.name, pid=None)

    async def poll(self, job: Job) -> JobUpdate:
        path = job.job_dir / "events.jsonl"
        status = None
        from trainer.protocol import read_status

        status = read_status(job.job_dir)
        reader = EventReader(path, job.events_offset, job.events_last_seq)
        events = reader.read_new(final=status is not None)
        state = JobState(status.state) if status is not None else None
        return JobUpdate(
            events=tuple(events),
            state=state,
            reason=status.message if status else "",
            exit_code=status.exit_code if status else None,
            events_offset=reader.offset,
            events_last_seq=reader.last_seq,
        )

    async def cancel(self, job: Job) -> None:
        self.cancelled.append(job.id)

    async def logs(self, job: Job, since: int) -> LogChunk:
        return LogChunk(text="", offset=since, next_offset=since)

    async def fetch_artifacts(self, job: Job, dest: Path) -> None:
        return None

    def apply_context(self, context: ProviderContext) -> None:
        pass

    async def gpu_slots(self) -> tuple[int, ...]:
        return ()

    def queue_position(self, job_id: str) -> int | None:
        return None

    async def aclose(self) -> None:
        pass


class Recorder:
    """A JobListener that keeps what it was told."""

    def __init__(self) -> None:
        self.changed: list[Job] = []
        self.points: list[MetricPoint] = []
        self.lines: list[str] = []

    def job_added(self, job: Job) -> None:
        pass

    def job_changed(self, job: Job) -> None:
        self.changed.append(job)

    def job_removed(self, job_id: str) -> None:
        pass

    def metrics_added(self, job_id: str, columns: Mapping[str, SeriesColumns]) -> None:
        for name, col in columns.items():
            self.points.extend(
                MetricPoint(job_id=job_id, step=s, name=name, value=v, time=t)
                for s, v, t in zip(col.steps, col.values, col.times, strict=True)
            )

    def log_added(self, job_id: str, lines: list[str]) -> None:
        self.lines.extend(lines)


def _service(provider: DirProvider, **kw: Any) -> JobService:
    from desktop.core.store import JobStore

    return JobService(JobStore(), providers={"dirs": provider}, **kw)


def _stored_job(service: JobService, demo_config: Path) -> Job:
    """A job record as launch would make it, without the (slow) dataset check."""
    from desktop.core.checks import resolve_config
    from desktop.models import data_home

    cfg = resolve_config(demo_config)
    job_id, job_dir = create_job_dir(data_home() / "jobs")
    (job_dir / "config.json").write_text(cfg.to_json(), encoding="utf-8")
    job = Job(id=job_id, name="t", provider="dirs", config=cfg, job_dir=job_dir)
    service.store.add_job(job, "created")
    return service.get(job_id)


def _metric_values(events_path: Path) -> set[tuple[int, str, float]]:
    """(step, series, value) of every metric value in events.jsonl, read as plain JSON."""
    skip = {"seq", "time", "kind", "step", "total_steps"}
    out = set()
    for line in events_path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["kind"] == "metric":
            for key, value in record.items():
                if key not in skip and isinstance(value, int | float):
                    out.add((record["step"], key, float(value)))
    return out


def test_job_ids_are_short_and_sort_by_time() -> None:
    ids = [new_job_id(1_800_000_000.0 + i) for i in range(50)]
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", i) for i in ids)
    assert ids == sorted(ids)
    # Across a day, a month and a year boundary too: the text order is the time order.
    stamps = [1_798_761_599.0, 1_798_761_600.0, 1_800_000_000.0, 1_830_000_000.0]
    across = [new_job_id(t) for t in stamps]
    assert across == sorted(across)


def test_a_repeated_job_id_still_gets_a_folder_of_its_own(tmp_path: Path) -> None:
    """Uniqueness comes from the mkdir, not from luck: an id source that repeats itself (two
    launches in one second drawing the same 4 hex digits) still yields distinct folders."""
    drawn = iter(["20260101-120000-abcd"] * 3 + ["20260101-120000-beef", "20260101-120001-abcd"])
    root = tmp_path / "jobs"
    made = [create_job_dir(root, lambda: next(drawn)) for _ in range(3)]
    assert [job_id for job_id, _ in made] == [
        "20260101-120000-abcd",
        "20260101-120000-beef",
        "20260101-120001-abcd",
    ]
    assert len({path for _, path in made}) == 3
    assert all(path.is_dir() and path.parent == root for _, path in made)
    # A source that only ever repeats a taken id is refused, not looped on forever.
    with pytest.raises(FileExistsError, match="already taken"):
        create_job_dir(root, lambda: "20260101-120000-abcd")


@pytest.mark.expect_log("ignored an observed change")
def test_transitions_follow_only_what_was_observed() -> None:
    q, s, t, sv, c, f = (
        JobState.QUEUED,
        JobState.STARTING,
        JobState.TRAINING,
        JobState.SAVING,
        JobState.COMPLETED,
        JobState.FAILED,
    )
    seen = [(s, "a"), (t, "b"), (sv, "c"), (t, "d"), (c, "e")]
    assert [x for x, _ in plan_transitions(q, seen)] == [s, t, sv, t, c]
    # A run that started and ended between two polls passes through starting.
    assert [x for x, _ in plan_transitions(q, [(c, "done")])] == [s, c]
    # Repeats are no change; nothing leaves a final state except a resume.
    assert plan_transitions(t, [(t, "x")]) == []
    assert plan_transitions(c, [(f, "late")]) == []
    assert plan_transitions(t, [(q, "?")]) == []
    # A requeued attempt (Slurm) starting again under a running job is no step back.
    assert [x for x, _ in plan_transitions(sv, [(s, "attempt 2"), (t, "b")])] == [t]


@pytest.mark.expect_log("background task boom failed")
def test_task_runner_names_cancels_and_reports_failures() -> None:
    failures: list[tuple[str, str]] = []

    async def boom() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("kaputt")

    async def forever() -> None:
        await asyncio.sleep(3600)

    async def go() -> None:
        runner = TaskRunner(lambda name, exc: failures.append((name, str(exc))))
        runner.start("boom", boom())
        runner.start("sleeper", forever())
        with pytest.raises(ValueError, match="sleeper"):
            runner.start("sleeper", forever())
        await runner.wait("boom")
        await asyncio.sleep(0)
        assert runner.names() == ["sleeper"]
        assert runner.cancel("sleeper")
        await runner.cancel_all()
        assert runner.names() == []
        assert not runner.cancel("sleeper")

    asyncio.run(go())
    assert failures == [("boom", "kaputt")]


def test_ingest_across_restarts_loses_nothing_and_doubles_nothing(
    home: Path, demo_template: Path
) -> None:
    provider = DirProvider()

    async def go() -> None:
        service = _service(provider)
        recorder = Recorder()
        service.add_listener(recorder)
        job = _stored_job(service, demo_template / "config.json")
        events = job.job_dir / "events.jsonl"
        writer = EventWriter(events)
        writer.emit("status", state="starting")
        writer.emit("status", state="training")
        for step in range(1, 21):
            writer.emit(
                "metric",
                step=step,
                total_steps=40,
                loss=4.0 - step * 0.05,
                learning_rate=1e-3,
                eval_loss=(3.5 - step * 0.01) if step % 5 == 0 else None,
            )
        # A torn last line (the trainer is mid-write) waits for the next read.
        with open(events, "ab") as fh:
            fh.write(b'{"seq": 99, "time": 1.0, "kind": "metr')
        job = await service.poll_once(job.id)
        assert job.state is JobState.TRAINING
        assert job.step == 20 and job.total_steps == 40
        assert job.last_loss == pytest.approx(3.0)
        assert job.best_eval_loss == pytest.approx(3.3)
        assert job.started_at is not None
        assert len(recorder.points) == service.store.metric_count(job.id)
        await service.close()
        service.store.close()

        # Finish the torn line, write the rest; a new service (the app restarted) picks up.
        with open(events, "ab") as fh:
            fh.write(b'ic", "step": 21, "loss": 2.9}\n')
        writer = EventWriter(events)
        for step in range(22, 41):
            writer.emit("metric", step=step, total_steps=40, loss=4.0 - step * 0.05)
        writer.emit("artifact", artifact="checkpoint", path=str(job.job_dir / "checkpoints/c-40"))
        writer.emit("status", state="saving")
        writer.emit("status", state="completed", message="done")
        write_status(
            job.job_dir,
            StatusFile(
                state="completed",
                exit_code=0,
                last_step=40,
                total_steps=40,
                final_loss=2.0,
                output_dir=str(job.job_dir / "output"),
            ),
        )
        service = _service(provider)
        await service.start()
        job = await service.wait(job.id, timeout=10)
        assert job.state is JobState.COMPLETED
        assert job.exit_code == 0
        assert job.last_loss == pytest.approx(2.0)
        assert job.output_dir == job.job_dir / "output"
        assert job.last_checkpoint == str(job.job_dir / "checkpoints/c-40")
        assert job.finished_at is not None and job.eta_seconds is None
        stored = {(p.step, p.name, p.value) for p in service.store.metrics(job.id)}
        assert stored == _metric_values(events)
        assert service.store.metric_count(job.id) == len(_metric_values(events))
        states = [t.new for t in service.store.transitions(job.id)]
        assert states == [
            JobState.QUEUED,
            JobState.STARTING,
            JobState.TRAINING,
            JobState.SAVING,
            JobState.COMPLETED,
        ]
        assert len(read_all_events(events)) == 45
        await service.close()
        service.store.close()

    asyncio.run(go())


def test_failed_run_takes_the_trainers_reason(home: Path, demo_template: Path) -> None:
    provider = DirProvider()

    async def go() -> None:
        service = _service(provider)
        job = _stored_job(service, demo_template / "config.json")
        writer = EventWriter(job.job_dir / "events.jsonl")
        writer.emit("status", state="starting")
        writer.emit("error", message="CUDA out of memory: lower the batch size")
        writer.emit("status", state="failed")
        write_status(job.job_dir, StatusFile(state="failed", exit_code=1))
        job = await service.poll_once(job.id)
        assert job.state is JobState.FAILED
        assert "lower the batch size" in job.state_reason
        assert job.exit_code == 1
        with pytest.raises(JobStateError, match="no checkpoint"):
            await service.resume(job.id)
        with pytest.raises(JobStateError, match="already ended"):
            await service.cancel(job.id)
        await service.close()

    asyncio.run(go())


def test_resume_queues_a_cancelled_job_again_in_the_same_dir(
    home: Path, demo_template: Path
) -> None:
    provider = DirProvider()

    async def go() -> None:
        service = _service(provider)
        job = _stored_job(service, demo_template / "config.json")
        ckpt = job.job_dir / "checkpoints" / "checkpoint-10"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text('{"global_step": 10}', encoding="utf-8")
        writer = EventWriter(job.job_dir / "events.jsonl")
        writer.emit("status", state="starting")
        writer.emit("metric", step=10, loss=1.0)
        writer.emit("artifact", artifact="checkpoint", path=str(ckpt), step=10)
        writer.emit("status", state="cancelled")
        write_status(job.job_dir, StatusFile(state="cancelled", exit_code=0, last_step=10))
        job = await service.poll_once(job.id)
        assert job.state is JobState.CANCELLED
        resumed = await service.resume(job.id)
        assert resumed.state is JobState.QUEUED and resumed.resume
        assert resumed.job_dir == job.job_dir
        assert service.queue_position(resumed) is None  # "dirs" has no Capability.QUEUE
        assert provider.launched == [job.id]
        polled = await service.poll_once(job.id)
        assert polled.state is JobState.QUEUED
        await service.close()

    asyncio.run(go())


def test_resume_names_the_newest_complete_checkpoint(home: Path, demo_template: Path) -> None:
    """A save interrupted mid-way (no trainer_state.json) is not offered: the trainer would
    refuse it, so the app names the one the trainer resumes from."""
    provider = DirProvider()

    async def go() -> None:
        service = _service(provider)
        job = _stored_job(service, demo_template / "config.json")
        complete = job.job_dir / "checkpoints" / "checkpoint-10"
        complete.mkdir(parents=True)
        (complete / "trainer_state.json").write_text('{"global_step": 10}', encoding="utf-8")
        torn = job.job_dir / "checkpoints" / "checkpoint-20"
        torn.mkdir()
        (torn / "adapter_model.safetensors").write_bytes(b"partial")
        writer = EventWriter(job.job_dir / "events.jsonl")
        writer.emit("status", state="starting")
        writer.emit("artifact", artifact="checkpoint", path=str(torn), step=20)
        writer.emit("status", state="cancelled")
        write_status(job.job_dir, StatusFile(state="cancelled", exit_code=0, last_step=20))
        job = await service.poll_once(job.id)
        assert job.state is JobState.CANCELLED
        resumed = await service.resume(job.id)
        assert resumed.state is JobState.QUEUED
        assert resumed.state_reason == f"resume from {complete}"
        await service.close()

    asyncio.run(go())


def test_resume_refused_when_only_a_torn_checkpoint_exists(home: Path, demo_template: Path) -> None:
    provider = DirProvider()

    async def go() -> None:
        service = _service(provider)
        job = _stored_job(service, demo_template / "config.json")
        (job.job_dir / "checkpoints" / "checkpoint-20").mkdir(parents=True)
        write_status(job.job_dir, StatusFile(state="cancelled", exit_code=0, last_step=20))
        job = await service.poll_once(job.id)
        assert job.state is JobState.CANCELLED
        with pytest.raises(JobStateError, match="no checkpoint"):
            await service.resume(job.id)
        assert service.get(job.id).state is JobState.CANCELLED
        await service.close()

    asyncio.run(go())


def test_secrets_reach_listeners_and_the_store_masked(home: Path, demo_template: Path) -> None:
    from desktop.core.redaction import register_secret

    sentinel = "hf_SENTINELtok3n9f8e7d6c5"
    register_secret(sentinel)

    class LeakyLogs(DirProvider):
        async def logs(self, job: Job, since: int) -> LogChunk:
            text = f"loading with token {sentinel}\nstep 1 loss 2.0\n"
            data = text.encode()[since:]
            return LogChunk(text=data.decode(), offset=since, next_offset=since + len(data))

    provider = LeakyLogs()

    async def go() -> None:
        service = _service(provider)
        recorder = Recorder()
        service.add_listener(recorder)
        job = _stored_job(service, demo_template / "config.json")
        writer = EventWriter(job.job_dir / "events.jsonl")
        writer.emit("status", state="starting", message=f"auth as {sentinel}")
        writer.emit("error", message=f"401 for token {sentinel}: check HF_TOKEN")
        write_status(job.job_dir, StatusFile(state="failed", exit_code=1))
        job = await service.poll_once(job.id)
        assert job.state is JobState.FAILED
        assert job.state_reason == "401 for token ***: check HF_TOKEN"
        assert recorder.lines[:2] == ["loading with token ***", "step 1 loss 2.0"]
        history = service.store.transitions(job.id)
        assert any(t.reason == "auth as ***" for t in history)
        await service.close()

    asyncio.run(go())
    for path in home.rglob("*"):
        if path.is_file() and "jobs" not in path.relative_to(home).parts:
            assert sentinel.encode() not in path.read_bytes(), path


def _write_config(folder: Path, demo: Path, **changes: Any) -> Path:
    data = json.loads((demo / "config.json").read_text(encoding="utf-8"))
    data["model"]["name_or_path"] = str(demo / "model")
    data["dataset"]["path"] = str(demo / "train.jsonl")
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    path = folder / "config.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.slow
def test_launch_refuses_bad_input_before_anything_is_spent(
    home: Path, tmp_path: Path, demo_template: Path
) -> None:
    provider = DirProvider()
    bad_data = tmp_path / "bad.jsonl"
    lines = (demo_template / "train.jsonl").read_text(encoding="utf-8").splitlines()[:5]
    lines[2] = '{"messages": [{"role": "user", "content": "hi"}'
    bad_data.write_text("\n".join(lines) + "\n", encoding="utf-8")

    async def go() -> None:
        service = _service(provider)
        cases: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"training__lerning_rate": 0.1}, ConfigError, "training.lerning_rate"),
            ({"lora__r": 0}, ConfigError, "lora.r"),
            ({"dataset__path": str(tmp_path / "nope.jsonl")}, DatasetError, "nope.jsonl"),
            ({"dataset__path": str(bad_data)}, DatasetError, "line 3"),
        ]
        for changes, error, needle in cases:
            folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
            folder.mkdir()
            with pytest.raises(error, match=re.escape(needle)):
                await service.launch(_write_config(folder, demo_template, **changes), "dirs")
        offline = _service(provider, offline=True)
        folder = tmp_path / "offline"
        folder.mkdir()
        with pytest.raises(OfflineError, match="not-a-real-org/model"):
            await offline.launch(
                _write_config(folder, demo_template, model__name_or_path="not-a-real-org/model"),
                "dirs",
            )
        assert provider.launched == []
        assert service.jobs() == []
        assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())
        await service.close()
        await offline.close()

    asyncio.run(go())


@pytest.mark.slow
def test_launch_writes_the_job_dir_and_hands_it_over(
    home: Path, tmp_path: Path, demo_template: Path
) -> None:
    provider = DirProvider()
    demo = tmp_path / "demo"
    shutil.copytree(demo_template, demo)

    async def go() -> None:
        service = _service(provider)
        job = await service.launch(demo / "config.json", "dirs", name="first")
        assert provider.launched == [job.id]
        assert job.job_dir == home / "jobs" / job.id
        assert job.name == "first" and job.state is JobState.QUEUED
        assert job.handle is not None and job.handle.provider == "dirs"
        written = json.loads((job.job_dir / "config.json").read_text(encoding="utf-8"))
        assert Path(written["model"]["name_or_path"]) == (demo / "model").resolve()
        assert service.is_watching(job.id)
        await service.cancel(job.id)
        assert provider.cancelled == [job.id]
        await service.close()
        assert not service.is_watching(job.id)

    asyncio.run(go())


def test_delete_forgets_a_finished_job_and_its_files_only_when_asked(
    home: Path, demo_template: Path
) -> None:
    import io

    provider = DirProvider()

    async def go() -> None:
        service = _service(provider)
        recorder = Recorder()
        service.add_listener(recorder)
        kept, gone = (_stored_job(service, demo_template / "config.json") for _ in range(2))
        with pytest.raises(JobStateError, match="cancel it"):
            await service.delete(kept.id, delete_files=True)
        for job in (kept, gone):
            writer = EventWriter(job.job_dir / "events.jsonl")
            writer.emit("metric", step=1, loss=2.0, learning_rate=0.1)
            writer.emit("metric", step=2, loss=1.5)
            write_status(job.job_dir, StatusFile(state="completed", exit_code=0))
            await service.poll_once(job.id)
        out = io.StringIO()
        assert service.export_metrics_csv(kept.id, out) == 2
        assert out.getvalue().splitlines()[0].startswith("step,time,loss,learning_rate")
        await service.delete(kept.id, delete_files=False)
        await service.delete(gone.id, delete_files=True)
        assert service.jobs() == []
        assert kept.job_dir.is_dir() and not gone.job_dir.exists()
        assert service.store.metric_count(gone.id) == 0
        await service.close()

    asyncio.run(go())


def test_start_hands_listeners_the_stored_history_first(home: Path, demo_template: Path) -> None:
    provider = DirProvider()

    async def go() -> None:
        service = _service(provider)
        job = _stored_job(service, demo_template / "config.json")
        points = [
            MetricPoint(job_id=job.id, step=step, name="loss", value=1.0 / step, time=float(step))
            for step in range(1, 6)
        ]
        service.store.record_progress(job, points)
        await service.close()

        again = _service(provider)
        recorder = Recorder()
        again.add_listener(recorder)
        await again.start(with_history=True)
        assert [(p.step, p.value) for p in recorder.points] == [(p.step, p.value) for p in points]
        await again.close()

    asyncio.run(go())


def test_a_failing_listener_reaches_the_bug_path_and_the_others_still_hear(
    home: Path, demo_template: Path
) -> None:
    provider = DirProvider()
    bugs: list[tuple[str, BaseException]] = []

    class Broken(Recorder):
        def job_changed(self, job: Job) -> None:
            raise RuntimeError("listener kaputt")

    async def go() -> None:
        service = _service(provider, on_bug=lambda summary, exc: bugs.append((summary, exc)))
        broken, healthy = Broken(), Recorder()
        service.add_listener(broken)
        service.add_listener(healthy)
        job = _stored_job(service, demo_template / "config.json")
        EventWriter(job.job_dir / "events.jsonl").emit("status", state="starting")
        job = await service.poll_once(job.id)
        assert job.state is JobState.STARTING
        assert [j.state for j in healthy.changed] == [JobState.STARTING]
        await service.close()

    asyncio.run(go())
    assert len(bugs) == 1
    summary, exc = bugs[0]
    assert "job_changed" in summary and isinstance(exc, RuntimeError)
    assert str(exc) == "listener kaputt"


def test_ingest_writes_off_the_loop_thread_and_tells_listeners_on_it(
    home: Path, demo_template: Path
) -> None:
    import threading

    from desktop.core.store import JobStore

    writes: list[tuple[str, int]] = []

    class WatchedStore(JobStore):
        """The real store, noting which thread each write ran on."""

        def transition(self, job: Job, new_state: JobState, reason: str, **updates: Any) -> Job:
            writes.append(("transition", threading.get_ident()))
            return super().transition(job, new_state, reason, **updates)

        def record_progress(
            self,
            job: Job,
            points: Any,
            transition: tuple[JobState, str] | None = None,
            **more: Any,
        ) -> Job:
            writes.append(("record_progress", threading.get_ident()))
            return super().record_progress(job, points, transition, **more)

    heard: list[tuple[str, int]] = []

    class ThreadRecorder(Recorder):
        def job_changed(self, job: Job) -> None:
            heard.append((job.state.value, threading.get_ident()))

        def metrics_added(self, job_id: str, columns: Mapping[str, SeriesColumns]) -> None:
            heard.append(("metrics:" + ",".join(sorted(columns)), threading.get_ident()))

    async def go() -> int:
        service = JobService(WatchedStore(), providers={"dirs": DirProvider()})
        service.add_listener(ThreadRecorder())
        job = _stored_job(service, demo_template / "config.json")
        writer = EventWriter(job.job_dir / "events.jsonl")
        writer.emit("status", state="starting")
        writer.emit("status", state="training")
        writer.emit("metric", step=1, loss=2.0, learning_rate=0.1)
        await service.poll_once(job.id)
        await service.close()
        service.store.close()
        return threading.get_ident()

    loop_thread = asyncio.run(go())
    assert [name for name, _ in writes] == ["transition", "record_progress"]
    assert all(thread != loop_thread for _, thread in writes)
    # In store order: the intermediate state, the points as columns, the final snapshot.
    assert [what for what, _ in heard] == ["starting", "metrics:learning_rate,loss", "training"]
    assert all(thread == loop_thread for _, thread in heard)


def test_a_cancelled_poll_keeps_the_ingest_lock_until_its_write_is_done(
    home: Path, demo_template: Path
) -> None:
    import threading

    from desktop.core.ingest import take_ingest_lock
    from desktop.core.store import JobStore

    inside, gate = threading.Event(), threading.Event()

    class SlowStore(JobStore):
        """The real store, whose progress write waits for the test's word."""

        def record_progress(
            self,
            job: Job,
            points: Any,
            transition: tuple[JobState, str] | None = None,
            **more: Any,
        ) -> Job:
            inside.set()
            assert gate.wait(30)
            return super().record_progress(job, points, transition, **more)

    def lock_is_free(job_dir: Path) -> bool:
        mine, lock = take_ingest_lock(job_dir)
        if lock is not None:
            lock.release()
        return mine

    async def go() -> None:
        service = JobService(SlowStore(), providers={"dirs": DirProvider()})
        job = _stored_job(service, demo_template / "config.json")
        EventWriter(job.job_dir / "events.jsonl").emit("metric", step=1, loss=2.0)
        polling = asyncio.ensure_future(service.poll_once(job.id))
        assert await asyncio.to_thread(inside.wait, 30)
        polling.cancel()
        await asyncio.sleep(0)
        assert not lock_is_free(job.job_dir)  # the write is still under way
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await polling
        assert lock_is_free(job.job_dir)
        assert service.store.metric_count(job.id) == 1  # written whole, once
        await service.close()
        service.store.close()

    asyncio.run(go())
