"""The job store: WAL, round trips, prefix lookup, transitions, migrations, and crash safety."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from desktop.core.errors import JobNotFoundError
from desktop.core.store import (
    DB_FILENAME,
    SCHEMA_VERSION,
    JobStore,
    StoreError,
    migrate,
    points_from_events,
    schema_version,
)
from desktop.models import Job, JobState, MetricPoint, ProviderHandle
from trainer.config import TrainingConfig
from trainer.protocol import EventReader, EventWriter, MetricEvent

REPO = Path(__file__).resolve().parent.parent


def make_job(job_id: str, tmp: Path, **fields: object) -> Job:
    config = TrainingConfig.model_validate(
        {"model": {"name_or_path": "org/tiny"}, "dataset": {"path": str(tmp / "train.jsonl")}}
    )
    return Job(id=job_id, name=f"run {job_id}", config=config, job_dir=tmp / job_id, **fields)


def points(
    job_id: str, steps: range, names: tuple[str, ...] = ("loss", "learning_rate")
) -> list[MetricPoint]:
    return [
        MetricPoint(job_id=job_id, step=s, name=n, value=s + i / 10, time=1000.0 + s)
        for s in steps
        for i, n in enumerate(names)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(tmp_path / DB_FILENAME)
    yield s
    s.close()


def test_default_path_honours_ftdesk_home_and_wal_is_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTDESK_HOME", str(tmp_path / "home"))
    with JobStore() as s:
        assert s.path == (tmp_path / "home" / DB_FILENAME).resolve()
        s.add_job(make_job("j1", tmp_path))
    conn = sqlite3.connect(tmp_path / "home" / DB_FILENAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert schema_version(conn) == SCHEMA_VERSION
    conn.close()


def test_round_trip_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    job = make_job(
        "a1b2c3",
        tmp_path,
        handle=ProviderHandle(provider="local", pid=1234, pid_start_time=17.5, gpus=(0, 1)),
        cost_usd=Decimal("1.23"),
        budget_usd=Decimal("10"),
    )
    with JobStore(path) as s:
        s.add_job(job)
        running = s.transition(job, JobState.STARTING, "launched", started_at=100.0)
        pts = points(job.id, range(1, 51))
        s.record_progress(
            running.model_copy(update={"events_offset": 4096, "events_last_seq": 77, "step": 50}),
            pts,
            transition=(JobState.TRAINING, "first step"),
        )
    with JobStore(path) as s:
        got = s.get_job(job.id)
        assert got.state is JobState.TRAINING
        assert got.state_reason == "first step"
        assert (got.events_offset, got.events_last_seq, got.step) == (4096, 77, 50)
        assert got.started_at == 100.0
        assert got.handle == job.handle
        assert got.cost_usd == Decimal("1.23")
        assert got.config == job.config
        assert [(t.old, t.new, t.reason) for t in s.transitions(job.id)] == [
            (None, JobState.QUEUED, "created"),
            (JobState.QUEUED, JobState.STARTING, "launched"),
            (JobState.STARTING, JobState.TRAINING, "first step"),
        ]
        assert s.metrics(job.id) == sorted(pts, key=lambda p: (p.step, p.name))
        assert s.metric_count(job.id) == 100
        assert s.integrity_check() == "ok"


def test_list_jobs_oldest_first_and_by_state(store: JobStore, tmp_path: Path) -> None:
    for i, job_id in enumerate(["c", "a", "b"]):
        store.add_job(make_job(job_id, tmp_path, created_at=1000.0 + i))
    store.transition(store.get_job("a"), JobState.CANCELLED, "user asked")
    assert [j.id for j in store.list_jobs()] == ["c", "a", "b"]
    assert [j.id for j in store.list_jobs([JobState.QUEUED])] == ["c", "b"]
    assert [j.id for j in store.list_jobs(states=[JobState.CANCELLED])] == ["a"]
    assert store.list_jobs(states=[]) == []


def test_prefix_lookup_and_clear_messages(store: JobStore, tmp_path: Path) -> None:
    for job_id in ("20260101-ab12", "20260101-ab34", "20260102-cd56"):
        store.add_job(make_job(job_id, tmp_path))
    assert store.get_job("20260102").id == "20260102-cd56"
    assert store.get_job("20260101-ab3").id == "20260101-ab34"
    assert store.get_job("20260101-ab12").id == "20260101-ab12"
    with pytest.raises(JobNotFoundError) as err:
        store.get_job("abc")
    assert str(err.value) == "no job 'abc'; `finetune-desk jobs` lists them"
    with pytest.raises(JobNotFoundError, match=r"'20260101-ab' matches several jobs.*ab12.*ab34"):
        store.get_job("20260101-ab")
    with pytest.raises(JobNotFoundError, match="no job id given"):
        store.get_job("  ")


def test_invalid_transition_is_refused_and_nothing_changes(store: JobStore, tmp_path: Path) -> None:
    job = make_job("done", tmp_path)
    store.add_job(job)
    done = store.transition(job, JobState.STARTING, "go")
    done = store.transition(done, JobState.COMPLETED, "finished", exit_code=0)
    assert done.exit_code == 0
    with pytest.raises(ValueError, match="'completed' to 'training'"):
        store.transition(done, JobState.TRAINING, "again")
    with pytest.raises(ValueError, match="'completed' to 'failed'"):
        store.record_progress(done, points(done.id, range(3)), (JobState.FAILED, "late"))
    assert store.get_job("done").state is JobState.COMPLETED
    assert len(store.transitions("done")) == 3
    assert store.metric_count("done") == 0
    with pytest.raises(ValueError, match="unknown Job fields"):
        store.transition(
            done.model_copy(update={"state": JobState.FAILED}), JobState.QUEUED, "x", nope=1
        )
    with pytest.raises(ValueError, match="exit_code"):
        store.transition(
            done.model_copy(update={"state": JobState.FAILED}),
            JobState.QUEUED,
            "x",
            exit_code="one",
        )


def test_ids_and_missing_jobs_are_checked(store: JobStore, tmp_path: Path) -> None:
    job = make_job("j", tmp_path)
    store.add_job(job)
    with pytest.raises(ValueError, match="exists already"):
        store.add_job(job)
    with pytest.raises(JobNotFoundError):
        store.save_job(make_job("ghost", tmp_path))
    with pytest.raises(ValueError, match="of job\\(s\\) \\['other'\\]"):
        store.record_progress(job, points("other", range(2)))
    assert store.metric_count("other") == 0


def test_a_step_logged_again_keeps_the_newest_value(store: JobStore, tmp_path: Path) -> None:
    job = make_job("r", tmp_path)
    store.add_job(job)
    store.record_progress(job, points("r", range(0, 400)))
    # A resumed run logs steps 300..449 again with other values; one batch also repeats a step.
    again = [
        MetricPoint(job_id="r", step=s, name="loss", value=-s, time=5.0) for s in range(300, 450)
    ]
    again.append(MetricPoint(job_id="r", step=449, name="loss", value=-1.5, time=6.0))
    store.record_progress(job, again)
    assert store.metric_count("r") == 400 * 2 + 50
    loss = {p.step: p.value for p in store.metrics("r", names=["loss"])}
    assert loss[299] == 299.0 and loss[300] == -300 and loss[449] == -1.5
    assert len(loss) == 450


def test_record_progress_is_one_transaction(store: JobStore, tmp_path: Path) -> None:
    job = make_job("atom", tmp_path)
    store.add_job(job)
    first = store.record_progress(
        job.model_copy(update={"events_offset": 10}), points("atom", range(5))
    )
    # The disk "fails" while the snapshot is written: the points of that batch must not stay.
    side = sqlite3.connect(store.path)
    side.execute(
        "CREATE TRIGGER fail_save BEFORE UPDATE ON jobs"
        " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    side.commit()
    with pytest.raises(StoreError, match="disk I/O error"):
        store.record_progress(
            first.model_copy(update={"events_offset": 20}),
            points("atom", range(5, 500)),
            transition=(JobState.STARTING, "go"),
        )
    side.execute("DROP TRIGGER fail_save")
    side.commit()
    side.close()
    assert store.metric_count("atom") == 10
    after = store.get_job("atom")
    assert (after.events_offset, after.state) == (10, JobState.QUEUED)
    assert len(store.transitions("atom")) == 1
    # And a deleted job takes no points either.
    store.delete_job("atom")
    with pytest.raises(JobNotFoundError):
        store.record_progress(after, points("atom", range(10)))
    assert store.metric_count("atom") == 0


def test_metrics_filters_nan_and_delete(store: JobStore, tmp_path: Path) -> None:
    job = make_job("m", tmp_path)
    store.add_job(job)
    pts = points("m", range(10), ("loss", "grad_norm", "eval_loss"))
    pts.append(MetricPoint(job_id="m", step=10, name="loss", value=float("nan"), time=2.0))
    store.record_progress(job, pts)
    assert {p.name for p in store.metrics("m", names=["loss"])} == {"loss"}
    late = store.metrics("m", since_step=8)
    assert [(p.step, p.name) for p in late] == [
        (8, "eval_loss"), (8, "grad_norm"), (8, "loss"),
        (9, "eval_loss"), (9, "grad_norm"), (9, "loss"),
        (10, "loss"),
    ]  # fmt: skip
    assert math.isnan(late[-1].value)
    assert store.metrics("m", names=[]) == []
    store.delete_job("m")
    assert store.metric_count("m") == 0 and store.transitions("m") == []
    assert store.list_jobs() == []
    with pytest.raises(JobNotFoundError, match="no job 'm'"):
        store.delete_job("m")


def test_export_metrics_csv_is_wide(store: JobStore, tmp_path: Path) -> None:
    job = make_job("csv", tmp_path)
    store.add_job(job)
    pts = points("csv", range(1, 4), ("loss", "learning_rate", "samples_per_second"))
    pts.append(MetricPoint(job_id="csv", step=2, name="eval_loss", value=0.75, time=1002.5))
    store.record_progress(job, pts)
    out = io.StringIO()
    assert store.export_metrics_csv("csv", out) == 3
    assert out.getvalue().splitlines() == [
        "step,time,loss,eval_loss,learning_rate,samples_per_second",
        "1,1001.0,1.0,,1.1,1.2",
        "2,1002.5,2.0,0.75,2.1,2.2",
        "3,1003.0,3.0,,3.1,3.2",
    ]
    empty = io.StringIO()
    assert store.export_metrics_csv("nothing", empty) == 0
    assert empty.getvalue() == "step,time\n"


def test_points_from_events_match_validated_points(tmp_path: Path) -> None:
    writer = EventWriter(tmp_path / "events.jsonl")
    writer.emit("status", state="training")
    writer.emit("metric", step=1, loss=2.5, learning_rate=1e-4, tokens_seen=512, epoch=0.1)
    writer.emit("log", message="hello")
    writer.emit("metric", step=2, eval_loss=2.25)
    writer.close()
    events = EventReader(tmp_path / "events.jsonl").read_new()
    got = points_from_events("x", events)
    want = [
        MetricPoint(job_id="x", step=e.step, name=n, value=v, time=e.time)
        for e in events
        if isinstance(e, MetricEvent)
        for n, v in e.values().items()
    ]
    assert got == want
    assert [(p.name, p.value) for p in got] == [
        ("epoch", 0.1), ("loss", 2.5), ("learning_rate", 1e-4), ("tokens_seen", 512.0),
        ("eval_loss", 2.25),
    ]  # fmt: skip
    assert all(type(p.value) is float for p in got)
    assert json.loads(got[0].model_dump_json())["name"] == "epoch"


def test_fast_and_regular_point_construction_agree() -> None:
    from desktop.core.metric_points import _assemble_points, _construct_points

    fields = [
        {"job_id": "j", "step": s, "name": n, "value": s / 3, "time": 7.0 + s}
        for s in range(5)
        for n in ("loss", "grad_norm")
    ]
    fast, regular = _assemble_points(fields), _construct_points(fields)
    validated = [MetricPoint(**f) for f in fields]
    assert fast == regular == validated
    assert [p.model_dump_json() for p in fast] == [p.model_dump_json() for p in validated]
    assert fast[3].model_copy(update={"value": 1.0}).value == 1.0
    assert fast[3].value == 1 / 3
    with pytest.raises(ValidationError):
        fast[0].value = 2.0  # type: ignore[misc]  # still frozen


def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    job = make_job("old1", tmp_path, provider="runpod", state=JobState.FAILED)
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == 1
    # Rows as the first release wrote them: no provider / name columns yet.
    conn.execute(
        "INSERT INTO jobs (id, snapshot, state, created_at) VALUES (?, ?, ?, ?)",
        (job.id, job.model_dump_json(), job.state.value, job.created_at),
    )
    conn.execute(
        "INSERT INTO transitions (job_id, old, new, time, reason)"
        " VALUES (?, NULL, 'failed', 1, 'x')",
        (job.id,),
    )
    conn.execute("INSERT INTO metrics VALUES (?, 3, 'loss', 1.5, 2.0)", (job.id,))
    conn.close()

    with JobStore(path) as s:
        assert s.get_job("old").provider == "runpod"
        assert [j.id for j in s.list_jobs([JobState.FAILED])] == ["old1"]
        assert s.metrics("old1") == [
            MetricPoint(job_id="old1", step=3, name="loss", value=1.5, time=2.0)
        ]
        assert s.transitions("old1")[0].reason == "x"
        assert s.integrity_check() == "ok"
    conn = sqlite3.connect(path)
    assert schema_version(conn) == SCHEMA_VERSION
    assert conn.execute("SELECT provider, name FROM jobs").fetchall() == [("runpod", "run old1")]
    conn.close()


def test_newer_or_foreign_files_are_refused_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    JobStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99, newer than this app"):
        JobStore(path)
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is no database at all\n" * 200)
    with pytest.raises(StoreError, match="not a Finetune Desk job database"):
        JobStore(junk)


def test_closed_store_says_so(tmp_path: Path) -> None:
    s = JobStore(tmp_path / DB_FILENAME)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.list_jobs()


def test_threads_share_one_store(store: JobStore, tmp_path: Path) -> None:
    for i in range(4):
        store.add_job(make_job(f"t{i}", tmp_path))
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            job = store.get_job(f"t{i}")
            for b in range(20):
                job = store.record_progress(
                    job.model_copy(update={"events_offset": b + 1}),
                    points(job.id, range(b * 25, (b + 1) * 25)),
                )
                store.list_jobs()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [store.metric_count(f"t{i}") for i in range(4)] == [1000] * 4
    assert [store.get_job(f"t{i}").events_offset for i in range(4)] == [20] * 4


def test_writes_in_worker_threads_while_the_loop_thread_reads(tmp_path: Path) -> None:
    """The service's pattern: a store opened on the loop's thread, its writes handed to
    worker threads (`asyncio.to_thread`), reads on the loop between them."""
    import asyncio

    async def go() -> tuple[list[int], Job]:
        with JobStore(tmp_path / DB_FILENAME) as s:
            job = make_job("w1", tmp_path)
            await asyncio.to_thread(s.add_job, job)
            seen = []
            for b in range(5):
                update = job.model_copy(update={"events_offset": b + 1})
                job = await asyncio.to_thread(
                    s.record_progress, update, points(job.id, range(b * 10, (b + 1) * 10))
                )
                seen.append(s.metric_count(job.id))
            job = await asyncio.to_thread(s.transition, job, JobState.STARTING, "launched")
            return seen, s.get_job("w1")

    seen, stored = asyncio.run(go())
    assert seen == [20, 40, 60, 80, 100]  # two series per step
    assert stored.state is JobState.STARTING and stored.events_offset == 5


# --- processes ---------------------------------------------------------------------------

CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO)}

INGEST_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from desktop.core.store import JobStore, points_from_events
    from trainer.protocol import EventReader

    db, job_id = Path(sys.argv[1]), sys.argv[2]
    store = JobStore(db)
    job = store.get_job(job_id)
    reader = EventReader(job.job_dir / "events.jsonl", job.events_offset, job.events_last_seq)
    while True:
        events = reader.read_new(max_bytes=6000)  # ~25 events, ~150 points a transaction
        if not events:
            break
        job = store.record_progress(
            job.model_copy(
                update={"events_offset": reader.offset, "events_last_seq": reader.last_seq}
            ),
            points_from_events(job.id, events),
        )
    print("done", flush=True)
    """
)


def write_metric_events(path: Path, n: int) -> int:
    writer = EventWriter(path)
    total = 0
    for step in range(n):
        values = {
            "loss": 2.0 - step / n,
            "learning_rate": 1e-4,
            "grad_norm": 0.5,
            "epoch": step / 100,
            "tokens_seen": step * 256,
            "samples_per_second": 9.5,
        }
        writer.emit("metric", step=step, **values)
        total += len(values)
    writer.close()
    return total


def points_before(path: Path, offset: int) -> tuple[int, int]:
    """(points, last seq) of the events in the first `offset` bytes of an events file."""
    events = EventReader(path).read_new(max_bytes=offset)
    return len(points_from_events("x", events)), events[-1].seq if events else -1


@pytest.mark.slow
def test_kill_9_during_a_burst_of_100k_metric_inserts(tmp_path: Path) -> None:
    db = tmp_path / DB_FILENAME
    job = make_job("burst", tmp_path, state=JobState.TRAINING)
    job.job_dir.mkdir()
    events_path = job.job_dir / "events.jsonl"
    total = write_metric_events(events_path, 17_000)  # 102k points
    with JobStore(db) as s:
        s.add_job(job)
    script = tmp_path / "ingest_child.py"
    script.write_text(INGEST_CHILD)

    watcher = JobStore(db)
    child = subprocess.Popen(
        [sys.executable, str(script), str(db), job.id],
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline and child.poll() is None:
        seen = watcher.metric_count(job.id)  # a reader in another process, mid-burst
        if seen >= 15_000:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    child.wait(timeout=30)
    out, err = child.communicate()
    watcher.close()
    assert child.returncode == -signal.SIGKILL, (
        f"the child was not killed mid-burst (rc {child.returncode}, saw {seen} points): "
        f"{out!r} {err[-2000:]!r}"
    )

    with JobStore(db) as s:
        assert s.integrity_check() == "ok"
        stored = s.get_job(job.id)  # readable, and its offset matches its points
        count = s.metric_count(job.id)
        assert 15_000 <= count < total
        assert (count, stored.events_last_seq) == points_before(events_path, stored.events_offset)
        # Reattach: a reader restarted from the stored offset loses nothing, doubles nothing.
        reader = EventReader(events_path, stored.events_offset, stored.events_last_seq)
        while events := reader.read_new(max_bytes=100_000):
            stored = s.record_progress(
                stored.model_copy(
                    update={"events_offset": reader.offset, "events_last_seq": reader.last_seq}
                ),
                points_from_events(job.id, events),
            )
        assert s.metric_count(job.id) == total
        assert stored.events_offset == events_path.stat().st_size


WRITER_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from desktop.models import JobState, MetricPoint
    from desktop.core.store import JobStore

    db, job_id, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    store = JobStore(db)
    job = store.get_job(job_id)
    Path(str(go) + "." + job_id).touch()  # imported and ready
    while not go.exists():
        time.sleep(0.001)
    for b in range(300):
        pts = [MetricPoint(job_id=job_id, step=b * 50 + i, name="loss", value=1.0, time=0.0)
               for i in range(50)]
        state = (JobState.SAVING if job.state is JobState.TRAINING else JobState.TRAINING)
        job = store.record_progress(
            job.model_copy(update={"events_offset": b + 1}), pts,
            transition=(state, "checkpoint") if b % 10 == 0 else None,
        )
        store.list_jobs()
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_two_processes_write_at_once_without_locked_errors(tmp_path: Path) -> None:
    db = tmp_path / DB_FILENAME
    with JobStore(db) as s:
        for job_id in ("p1", "p2"):
            s.add_job(make_job(job_id, tmp_path, state=JobState.TRAINING))
    script = tmp_path / "writer_child.py"
    script.write_text(WRITER_CHILD)
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), job_id, str(go)],
            env=CHILD_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job_id in ("p1", "p2")
    ]
    deadline = time.monotonic() + 120
    while not all(Path(f"{go}.{job_id}").exists() for job_id in ("p1", "p2")):
        assert time.monotonic() < deadline, "the writer processes never got ready"
        assert all(c.poll() is None for c in children), "a writer process died while starting"
        time.sleep(0.01)
    go.touch()  # both start writing at the same moment
    results = [c.communicate(timeout=120) for c in children]
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert "locked" not in err
        assert out.strip() == "done"
    with JobStore(db) as s:
        assert s.integrity_check() == "ok"
        for job_id in ("p1", "p2"):
            assert s.metric_count(job_id) == 15_000
            assert s.get_job(job_id).events_offset == 300
            assert len(s.transitions(job_id)) == 1 + 30
