"""The local provider with real trainer processes on the demo: identity, kill -9, the queue,
cancel with a checkpoint, and a trainer (and queue) that outlive the process that launched them.

Only the process-identity test uses a stand-in process (a sleeping Python): it is about pid
handling, and the provider code under test is the real one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from desktop.core.errors import ProviderError, RuntimeNotReadyError
from desktop.models import Job, JobState, JobUpdate, ProviderHandle
from desktop.providers.base import Provider, get_provider_factory
from desktop.providers.local import EXITED_WITHOUT_STATUS, LocalProvider
from desktop.providers.local.process import (
    FileLock,
    LockBusy,
    ProcessIdentity,
    is_alive,
    probe_identity,
)
from desktop.providers.local.queue import OFFLINE_ENV, QueueEntry, build_trainer_env, plan_starts
from trainer.config import load_config
from trainer.protocol import EVENTS_FILE, MetricEvent, read_all_events, read_status

REPO = Path(__file__).resolve().parents[1]


# -- helpers ---------------------------------------------------------------------------------


def make_job(job_dir: Path, job_id: str, *, max_steps: int, save_steps: int = 1000) -> Job:
    """A job over a demo copy, trained for `max_steps` steps."""
    config_path = job_dir / "config.json"
    data = json.loads(config_path.read_text(encoding="utf-8"))
    data["training"]["max_steps"] = max_steps
    data["training"]["save_steps"] = save_steps
    config_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return Job(id=job_id, name=job_id, config=load_config(config_path), job_dir=job_dir)


def copy_demo(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


def apply(job: Job, update: JobUpdate) -> Job:
    """What the JobService does with an update (the part these tests need)."""
    changes: dict[str, object] = {}
    if update.state is not None:
        changes["state"] = update.state
        changes["state_reason"] = update.reason
    if update.exit_code is not None:
        changes["exit_code"] = update.exit_code
    if update.events_offset is not None:
        changes["events_offset"] = update.events_offset
    if update.events_last_seq is not None:
        changes["events_last_seq"] = update.events_last_seq
    if update.handle is not None:
        changes["handle"] = update.handle
    return job.model_copy(update=changes)


async def poll_until(
    provider: LocalProvider,
    job: Job,
    done: Callable[[Job, JobUpdate], bool],
    timeout: float = 120.0,
    events: list[object] | None = None,
) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        update = await provider.poll(job)
        job = apply(job, update)
        if events is not None:
            events.extend(update.events)
        if done(job, update):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{job.id}: timed out in state {job.state} ({job.state_reason})")
        await asyncio.sleep(0.2)


def until_final(job: Job, _update: JobUpdate) -> bool:
    return job.state.is_final


def scheduler_gone(home: Path, timeout: float = 15.0) -> bool:
    """Whether the detached scheduler has exited (it releases its lock when it does)."""
    deadline = time.monotonic() + timeout
    lock = FileLock(home / "queue" / "scheduler.lock")
    while time.monotonic() < deadline:
        try:
            lock.acquire(blocking=False)
        except LockBusy:
            time.sleep(0.2)
            continue
        lock.release()
        return True
    return False


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


# -- no trainer needed -----------------------------------------------------------------------


def _entry(job_id: str, gpus: int, order: int) -> QueueEntry:
    return QueueEntry(
        job_id=job_id,
        job_dir=f"/jobs/{job_id}",
        gpus_requested=gpus,
        python="python",
        enqueued_at=order,
        order=order,
    )


def test_plan_starts_is_fifo_per_kind_of_slot() -> None:
    entries = [
        _entry("big", 2, 1),
        _entry("small", 1, 2),
        _entry("cpu1", 0, 3),
        _entry("cpu2", 0, 4),
    ]
    # One GPU free: the 2-GPU job waits and the 1-GPU job behind it may not overtake it;
    # the first CPU job takes the CPU slot, the second waits.
    plans = plan_starts(entries, free_gpus=[3], cpu_free=True)
    assert [(p.entry.job_id, p.gpus) for p in plans] == [("cpu1", ())]
    plans = plan_starts(entries, free_gpus=[0, 1, 2], cpu_free=False)
    assert [(p.entry.job_id, p.gpus) for p in plans] == [("big", (0, 1)), ("small", (2,))]


def test_trainer_env_maps_slots_through_the_inherited_visible_devices() -> None:
    base = {"CUDA_VISIBLE_DEVICES": "2,3", "PATH": "/bin"}
    env = build_trainer_env(base, OFFLINE_ENV, [1], {"HF_TOKEN": "t"})
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_TOKEN"] == "t" and env["PATH"] == "/bin"
    assert build_trainer_env({"PATH": "/bin"}, {}, [0, 1], {})["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert build_trainer_env(base, {}, [], {})["CUDA_VISIBLE_DEVICES"] == ""


def test_provider_is_registered_and_satisfies_the_protocol(home: Path) -> None:
    from desktop.core.runtime import TrainerRuntime
    from desktop.models import Settings
    from desktop.providers.base import ProviderContext

    settings = Settings(gpu_slots=1, cancel_grace_s=7.0)
    runtime = TrainerRuntime("/opt/py/bin/python3", offline=True)
    provider = get_provider_factory("local")(ProviderContext(settings, home, runtime))
    assert isinstance(provider, Provider)
    assert provider.name == "local"
    assert isinstance(provider, LocalProvider)
    assert provider.python == "/opt/py/bin/python3" and provider.offline
    assert provider.slots.gpus == (0,) and provider.cancel_grace_s == 7.0
    # Told new settings, it launches with them; nothing else about it changes.
    provider.apply_context(ProviderContext(Settings(), home, TrainerRuntime()))
    assert provider.python == sys.executable and not provider.offline
    assert provider.slots.gpus is None and provider.home == home


def test_missing_runtime_is_refused_with_the_reason(home: Path, demo_dir: Path) -> None:
    provider = LocalProvider(home, python=str(home / "no-such-python"))
    job = make_job(demo_dir, "j-missing", max_steps=1)
    with pytest.raises(RuntimeNotReadyError, match="no-such-python"):
        asyncio.run(provider.launch(job))
    assert not (demo_dir / EVENTS_FILE).exists()


def test_a_dataset_url_is_refused_here_naming_the_field(home: Path, demo_dir: Path) -> None:
    from desktop.core.errors import ConfigError

    provider = LocalProvider(home)
    job = make_job(demo_dir, "j-url", max_steps=1)
    url = "https://data.example/train.jsonl#sha256=" + "0" * 64
    dataset = job.config.dataset.model_copy(update={"path": url})
    job = job.model_copy(update={"config": job.config.model_copy(update={"dataset": dataset})})
    with pytest.raises(ConfigError, match=r"dataset\.path: a dataset URL is fetched only by"):
        asyncio.run(provider.launch(job))
    assert not (demo_dir / "launch.json").exists()


def test_more_gpus_than_the_machine_has_is_refused(home: Path, demo_dir: Path) -> None:
    provider = LocalProvider(home)
    job = make_job(demo_dir, "j-gpus", max_steps=1).model_copy(update={"gpus_requested": 64})
    with pytest.raises(ProviderError, match="asks for 64 GPU"):
        asyncio.run(provider.launch(job))
    assert not (demo_dir / "launch.json").exists()


@pytest.mark.slow
def test_the_scheduler_runs_once_and_exits_on_an_empty_queue(home: Path) -> None:
    argv = [sys.executable, "-m", "desktop.providers.local.scheduler", "--home", str(home)]
    held = FileLock(home / "queue" / "scheduler.lock")
    held.acquire()
    try:
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=home)
    finally:
        held.release()
    assert second.returncode == 0 and "another scheduler is running" in second.stderr
    alone = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=home)
    assert alone.returncode == 0 and "queue empty, nothing running" in alone.stderr


def test_offline_env_is_one_complete_definition() -> None:
    from desktop.providers import local as local_package
    from desktop.providers import offline
    from desktop.providers.local import queue as queue_module

    assert local_package.OFFLINE_ENV is offline.OFFLINE_ENV is queue_module.OFFLINE_ENV
    assert offline.OFFLINE_ENV == {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "WANDB_MODE": "offline",
        "DO_NOT_TRACK": "1",
    }


def stand_in(*args: str) -> subprocess.Popen[bytes]:
    """A sleeping Python with `args` on its command line (`--job-dir DIR`, as a trainer has),
    leading its own process group like a trainer."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", *args],
        start_new_session=sys.platform != "win32",
    )


def running(job: Job, pid: int, create_time: float, extra: dict[str, str] | None = None) -> Job:
    """`job` as the app remembers it: training, with a handle to (pid, start)."""
    handle = ProviderHandle(
        provider="local", pid=pid, pid_start_time=create_time, extra=extra or {}
    )
    return job.model_copy(update={"state": JobState.TRAINING, "handle": handle})


def wait_for_cmdline(proc: subprocess.Popen[bytes], needle: str) -> None:
    """Until the child has exec'd (its command line is the stand-in's, not the fork's)."""
    deadline = time.monotonic() + 10
    while needle not in " ".join(psutil.Process(proc.pid).cmdline()):
        assert time.monotonic() < deadline, "the stand-in never started"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_reused_pid_is_not_taken_for_the_job(home: Path, demo_dir: Path) -> None:
    """Same pid number, different start time: the job is gone, the stranger is left alone."""
    job_dir = str(demo_dir.resolve())
    stranger = stand_in("--job-dir", job_dir)
    try:
        wait_for_cmdline(stranger, job_dir)
        started = psutil.Process(stranger.pid).create_time()
        provider = LocalProvider(home)
        job = make_job(demo_dir, "j-reuse", max_steps=1)

        # Control: with the right start time the process is the job, still running.
        update = asyncio.run(provider.poll(running(job, stranger.pid, started)))
        assert update.state is None and update.reason == ""

        # The recorded job started earlier under the same pid number: it is not this process.
        recorded = running(job, stranger.pid, started - 1000.0)
        update = asyncio.run(provider.poll(recorded))
        assert update.state is JobState.FAILED
        assert update.reason.startswith(EXITED_WITHOUT_STATUS)
        asyncio.run(provider.cancel(recorded))
        assert stranger.poll() is None, "cancel signalled a process that is not the job"
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.slow
def test_a_stepped_clock_does_not_make_a_live_trainer_look_gone(home: Path, demo_dir: Path) -> None:
    """psutil's create_time moves with the wall clock (its boot time is recomputed from it):
    a live trainer recorded 1.5 s off is still the job, and cancel reaches it."""
    job_dir = str(demo_dir.resolve())
    trainer = stand_in("--job-dir", job_dir)
    try:
        wait_for_cmdline(trainer, job_dir)
        started = psutil.Process(trainer.pid).create_time()
        provider = LocalProvider(home, cancel_grace_s=10.0)
        job = running(make_job(demo_dir, "j-clock", max_steps=1), trainer.pid, started - 1.5)
        # A handle from before start ticks were recorded: the tolerant time + command line.
        update = asyncio.run(provider.poll(job))
        assert update.state is None and update.reason == ""
        assert trainer.poll() is None

        if sys.platform.startswith("linux"):
            # With the start tick and boot id recorded, even an hour's step does not matter.
            identity = probe_identity(trainer.pid)
            assert identity is not None and identity.extra()
            stepped = running(job, trainer.pid, started + 3600.0, identity.extra())
            update = asyncio.run(provider.poll(stepped))
            assert update.state is None and update.reason == ""

        asyncio.run(provider.cancel(job))
        code = trainer.wait(timeout=10)  # cancel returns once the trainer is gone
        if sys.platform != "win32":
            assert code == -signal.SIGTERM, "cancel did not signal the live trainer"
        final = asyncio.run(provider.poll(job))
        assert final.state is JobState.CANCELLED
    finally:
        if trainer.poll() is None:
            trainer.kill()
        trainer.wait()


@pytest.mark.slow
def test_a_pid_held_by_an_unrelated_process_is_not_taken(home: Path, demo_dir: Path) -> None:
    """The recorded pid now runs something whose command line does not name the job dir: not
    the job, even with a start time inside the tolerance (or, on Linux, the exact start tick)."""
    other_dir = str((demo_dir.parent / "another-job").resolve())
    stranger = stand_in("--job-dir", other_dir)
    try:
        wait_for_cmdline(stranger, other_dir)
        started = psutil.Process(stranger.pid).create_time()
        provider = LocalProvider(home, cancel_grace_s=5.0)
        job = make_job(demo_dir, "j-stranger", max_steps=1)
        identity = probe_identity(stranger.pid)
        assert identity is not None
        for recorded in (
            running(job, stranger.pid, started + 0.5),
            running(job, stranger.pid, started, identity.extra()),
        ):
            update = asyncio.run(provider.poll(recorded))
            assert update.state is JobState.FAILED
            assert update.reason.startswith(EXITED_WITHOUT_STATUS)
            asyncio.run(provider.cancel(recorded))
            assert stranger.poll() is None, "cancel signalled a process that is not the job"
        # The same process is alive for its own job dir: only the command line told them apart.
        assert is_alive(stranger.pid, started, job_dir=other_dir)
        assert not is_alive(stranger.pid, started, job_dir=demo_dir)
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start ticks are Linux's")
def test_the_start_tick_and_boot_id_decide_over_the_wall_clock() -> None:
    proc = stand_in()
    try:
        identity = probe_identity(proc.pid)
        assert identity is not None and identity.start_ticks is not None and identity.boot_id
        pid, created = identity.pid, identity.create_time
        ticks, boot = identity.start_ticks, identity.boot_id
        assert is_alive(pid, created, start_ticks=ticks, boot_id=boot)
        assert is_alive(pid, created - 7200.0, start_ticks=ticks, boot_id=boot)
        # One tick apart is another process, whatever the wall clock says.
        assert not is_alive(pid, created, start_ticks=ticks - 1, boot_id=boot)
        # A tick from another boot: that boot's processes are all gone.
        assert not is_alive(pid, created, start_ticks=ticks, boot_id="another-boot")
        # Round trip through a handle's extra.
        again = ProcessIdentity.from_extra(pid, created, identity.extra())
        assert again == identity
        # An old handle (no extra): the tolerant wall-clock check.
        old = ProcessIdentity.from_extra(pid, created, {"launcher": "app"})
        assert old.start_ticks is None
        assert is_alive(pid, created + 1.9) and not is_alive(pid, created + 30.0)
    finally:
        proc.kill()
        proc.wait()


# -- real trainer processes ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and sessions are POSIX")
def test_kill9_of_the_trainer_is_failed_within_one_poll(home: Path, demo_dir: Path) -> None:
    secret = "sentinel-secret-7f3a9c"
    provider = LocalProvider(home, offline=True, env_provider=lambda job: {"WANDB_API_KEY": secret})
    job = make_job(demo_dir, "j-kill9", max_steps=100000)

    async def scenario() -> Job:
        nonlocal job
        job = job.model_copy(update={"handle": await provider.launch(job)})
        assert job.handle is not None and job.handle.pid is not None
        job = await poll_until(
            provider, job, lambda j, u: any(isinstance(e, MetricEvent) for e in u.events)
        )
        assert job.state is JobState.TRAINING
        assert job.handle is not None and job.handle.pid is not None
        trainer = psutil.Process(job.handle.pid)
        env = trainer.environ()
        assert env["CUDA_VISIBLE_DEVICES"] == ""
        assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
        assert env["WANDB_API_KEY"] == secret
        assert os.getsid(trainer.pid) == trainer.pid  # its own session
        os.kill(trainer.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while trainer.is_running() and trainer.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        update = await provider.poll(job)  # one poll
        return apply(job, update)

    job = asyncio.run(scenario())
    assert job.state is JobState.FAILED
    assert job.state_reason == f"{EXITED_WITHOUT_STATUS} (killed by SIGKILL)"
    assert job.exit_code == -signal.SIGKILL
    assert read_status(demo_dir) is None
    # The secret went into the trainer's environment only, never into a file.
    for path in [*demo_dir.rglob("*"), *home.rglob("*")]:
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_cancel_a_running_job_leaves_a_checkpoint(home: Path, demo_dir: Path) -> None:
    provider = LocalProvider(home, cancel_grace_s=60.0)
    job = make_job(demo_dir, "j-cancel", max_steps=100000)

    async def scenario() -> Job:
        nonlocal job
        job = job.model_copy(update={"handle": await provider.launch(job)})
        job = await poll_until(
            provider, job, lambda j, u: any(isinstance(e, MetricEvent) for e in u.events)
        )
        await provider.cancel(job)
        final = await poll_until(provider, job, until_final, timeout=30)
        await provider.cancel(final)  # cancelling a finished job is a no-op
        return final

    job = asyncio.run(scenario())
    assert job.state is JobState.CANCELLED, job.state_reason
    assert job.exit_code == 0
    status = read_status(demo_dir)
    assert status is not None and status.state == "cancelled"
    checkpoints = [p for p in (demo_dir / "checkpoints").iterdir() if p.is_dir()]
    assert checkpoints, "no checkpoint after cancel"


_LAUNCHER = """
import asyncio, json, sys, time
from pathlib import Path
from desktop.models import Job
from desktop.providers.local import LocalProvider

home = Path(sys.argv[1])
provider = LocalProvider(home)
handles = []
for path in sys.argv[2:]:
    job = Job.model_validate_json(Path(path).read_text())
    handles.append(asyncio.run(provider.launch(job)).model_dump(mode="json"))
print(json.dumps(handles), flush=True)
time.sleep(300)
"""


@pytest.mark.slow
def test_queue_outlives_its_launcher_runs_in_order_and_a_cancelled_job_never_starts(
    home: Path, tmp_path: Path, demo_template: Path
) -> None:
    """An app launches four jobs on the one CPU slot and dies (kill -9). The first trainer
    finishes anyway; the detached scheduler starts the others one after another, in order;
    the one cancelled while queued (by the restarted app) never starts."""
    jobs = [
        make_job(copy_demo(demo_template, tmp_path / f"q{i}"), f"q{i}", max_steps=2)
        for i in range(4)
    ]
    paths = []
    for job in jobs:
        path = tmp_path / f"{job.id}.job.json"
        path.write_text(job.model_dump_json())
        paths.append(str(path))
    launcher = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(home), *paths], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert launcher.stdout is not None
        handles = [ProviderHandle(**h) for h in json.loads(launcher.stdout.readline())]
    finally:
        launcher.kill()
        launcher.wait()
    # Only the first fits the one CPU slot; it runs, its launcher is gone.
    assert handles[0].pid is not None and all(h.pid is None for h in handles[1:])
    assert psutil.pid_exists(handles[0].pid)

    provider = LocalProvider(home)  # the app, restarted
    assert [provider.queue_position(j.id) for j in jobs] == [None, 0, 1, 2]
    jobs = [j.model_copy(update={"handle": h}) for j, h in zip(jobs, handles, strict=True)]
    cancelled = jobs[2]

    async def scenario() -> list[Job]:
        await provider.cancel(cancelled)
        await provider.cancel(cancelled)  # idempotent
        return list(await asyncio.gather(*(poll_until(provider, j, until_final) for j in jobs)))

    finished = asyncio.run(scenario())
    assert [j.state for j in finished] == [
        JobState.COMPLETED,
        JobState.COMPLETED,
        JobState.CANCELLED,
        JobState.COMPLETED,
    ], [j.state_reason for j in finished]
    for name in (EVENTS_FILE, "train.log", "launch.json", "status.json"):
        assert not (cancelled.job_dir / name).exists(), f"the cancelled job has {name}"
    ran = [j for j in finished if j.id != cancelled.id]
    spans = []
    for job in ran:
        launch = json.loads((job.job_dir / "launch.json").read_text())
        status = read_status(job.job_dir)
        assert status is not None and status.exit_code == 0 and job.exit_code == 0
        assert (job.job_dir / "output").is_dir()
        events = read_all_events(job.job_dir / EVENTS_FILE)
        assert events and events[0].time >= launch["started_at"]
        spans.append((launch["started_at"], status.finished_at, events[-1].time))
        # Queued jobs got their process handle from a poll.
        assert job.handle is not None and job.handle.pid == launch["pid"]
    assert [json.loads((j.job_dir / "launch.json").read_text())["launcher"] for j in ran] == [
        "app",
        "scheduler",
        "scheduler",
    ]
    for (_, end, last_event), (start, _, _) in itertools.pairwise(spans):
        assert end <= start and last_event <= start, "jobs on one slot overlapped"
    # The log reads in pieces and resumes where it stopped.
    first = asyncio.run(provider.logs(ran[1], 0))
    assert "starting:" in first.text and "trainer run --job-dir" in first.text
    rest = asyncio.run(provider.logs(ran[1], first.next_offset))
    assert rest.offset == first.next_offset
    whole = (ran[1].job_dir / "train.log").read_bytes().decode("utf-8", errors="replace")
    assert first.text + rest.text == whole
    assert scheduler_gone(home), "the scheduler did not exit with an empty queue"
