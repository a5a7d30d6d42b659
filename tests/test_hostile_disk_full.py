"""Hostile case: the disk fills during a run (issue 8, case 8), on a real small filesystem.

Each test mounts its own tmpfs (root only) and puts `FTDESK_HOME` (the store and the job
folders) on it; the demo model and data stay outside. Where mounting is impossible the tests
skip with the reason, except under `FTDESK_REQUIRE_TMPFS=1` (CI), where they fail.

The disk is filled by the test itself with ballast files, at moments it controls: the follower
and the trainer are paused (SIGSTOP) while it measures and fills, so which checkpoint meets the
full disk is known, not hoped for.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_cli import ROOT, cli, cli_env, write_config

from trainer.protocol import read_all_events, read_status

pytestmark = pytest.mark.slow

CHECKPOINT_STEPS = 2
# The follower's bound on consecutive failed store writes, short for the test (default 30 s).
GIVE_UP_S = "3"


# ---------------------------------------------------------------------------------------------
# a real small filesystem


def _cannot_mount(why: str) -> None:
    if os.environ.get("FTDESK_REQUIRE_TMPFS") == "1":
        pytest.fail(f"FTDESK_REQUIRE_TMPFS=1 but no tmpfs can be mounted: {why}")
    print(f"skipped: no tmpfs can be mounted here: {why}")
    pytest.skip(f"no tmpfs can be mounted here ({why}); run as root to cover the full disk")


def mount_tmpfs(where: Path, size_mb: int) -> Callable[[], None]:
    """Mount a tmpfs of `size_mb` MiB on `where`; returns the unmount (lazy if busy)."""
    where.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _cannot_mount("mounting needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        _cannot_mount((done.stderr or done.stdout).strip() or f"mount exited {done.returncode}")

    def unmount() -> None:
        quiet = {"capture_output": True, "check": False}
        if subprocess.run(["umount", str(where)], **quiet).returncode != 0:  # type: ignore[call-overload]
            subprocess.run(["umount", "-l", str(where)], **quiet)  # type: ignore[call-overload]

    return unmount


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 24 MiB tmpfs, unmounted at teardown."""
    where = tmp_path / "disk"
    unmount = mount_tmpfs(where, 24)
    try:
        yield where
    finally:
        unmount()


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a ballast file until `leave` bytes (about) are free; returns the file."""
    ballast = disk / f"ballast-{uuid.uuid4().hex[:8]}"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    chunk = b"\0" * 65536
    try:
        while True:
            room = free_bytes(disk) - leave
            if room <= 0:
                break
            try:
                os.write(fd, chunk[: min(len(chunk), room)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if leave == 0 and len(chunk) > 1:
                    chunk = chunk[: len(chunk) // 2]  # take the last pages too
                    continue
                break
    finally:
        os.close(fd)
    return ballast


def process_gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie not yet reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def complete_checkpoints(job_dir: Path) -> list[int]:
    folder = job_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name.split("-")[1])
        for p in folder.glob("checkpoint-*")
        if (p / "trainer_state.json").is_file()
    )


def stored_point_count(home: Path) -> int:
    """Metric points in the store now (read-only: the follower may be writing)."""
    import sqlite3

    db = home / "ftdesk.sqlite3"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM metrics").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not created yet
    finally:
        conn.close()


def running_scheduler_pid(home: Path) -> int | None:
    """The pid of the local queue's scheduler while one runs (it holds `scheduler.lock` for its
    whole life and logs "scheduler started (pid N)"), else None. Probing creates the lock file:
    call it before the disk is filled."""
    import re

    from desktop.providers.local.process import LockBusy
    from desktop.providers.local.queue import JobQueue

    queue = JobQueue(home)
    probe = queue.scheduler_lock()
    try:
        probe.acquire(blocking=False)
    except LockBusy:
        said = queue.scheduler_log.read_text(encoding="utf-8", errors="replace")
        pids = re.findall(r"scheduler started \(pid (\d+)\)", said)
        assert pids, f"a scheduler holds the lock but its log names no pid: {said[-500:]}"
        return int(pids[-1])
    probe.release()
    return None


def metric_steps(events: Path) -> dict[int, float]:
    """step -> loss of every metric event in the file."""
    return {
        e.step: e.loss
        for e in read_all_events(events)
        if e.kind == "metric" and getattr(e, "loss", None) is not None
    }


def stored_losses(points: list[dict[str, object]]) -> dict[int, object]:
    return {int(p["step"]): p["loss"] for p in points if "loss" in p}  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------
# the case


def test_a_disk_that_fills_during_a_run(small_disk: Path, tmp_path: Path, demo_dir: Path) -> None:
    home = small_disk / "home"
    config = write_config(
        tmp_path / "cfg",
        demo_dir,
        max_steps=400,  # never reached: the disk fills long before
        save_steps=CHECKPOINT_STEPS,
        save_total_limit=50,
        logging_steps=1,
    )
    follower = subprocess.Popen(
        [sys.executable, "-m", "desktop.cli", "run", str(config), "--follow"],
        env=cli_env(home, FTDESK_DISK_FULL_GIVE_UP_S=GIVE_UP_S),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    trainer_pid: int | None = None
    try:
        jobs = home / "jobs"
        wait_for("the job folder", lambda: jobs.is_dir() and any(jobs.iterdir()))
        job_dir = next(jobs.iterdir())
        wait_for("the first checkpoint", lambda: bool(complete_checkpoints(job_dir)))
        wait_for("a stored point", lambda: stored_point_count(home) > 0)
        trainer_pid = json.loads((job_dir / "launch.json").read_text())["pid"]
        # Pause every process that writes to the disk (the follower, the trainer and the
        # queue's scheduler if one runs; only the paused follower could start one); measure;
        # leave room for a few steps' events but not for a checkpoint, so it is the trainer's
        # checkpoint, and nothing else's write, that meets the full disk.
        follower.send_signal(signal.SIGSTOP)
        os.killpg(trainer_pid, signal.SIGSTOP)
        scheduler_pid = running_scheduler_pid(home)
        if scheduler_pid is not None:
            os.kill(scheduler_pid, signal.SIGSTOP)
        before = complete_checkpoints(job_dir)[-1]
        fill(small_disk, leave=96 * 1024)
        os.killpg(trainer_pid, signal.SIGCONT)
        wait_for("the trainer to die on the full disk", lambda: process_gone(trainer_pid))
        # The checkpoint that met the full disk is the one after the newest complete one. Read
        # after the trainer died: paused mid-save, it may still have finished the checkpoint it
        # was writing (most of its bytes were on disk) and met the full disk at the next.
        newest = complete_checkpoints(job_dir)[-1]
        assert newest >= before
        expected = newest + CHECKPOINT_STEPS
        # The trainer freed what it could; something else takes it (the disk stays full).
        fill(small_disk)
        if scheduler_pid is not None:
            os.kill(scheduler_pid, signal.SIGCONT)
        follower.send_signal(signal.SIGCONT)

        # (a) the follower gives up within a bounded time, saying why and what to do.
        try:
            out, err = follower.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            follower.kill()
            out, err = follower.communicate()
            pytest.fail(
                "run --follow was still running 120 s after the disk filled (it should give up "
                f"after {GIVE_UP_S} s of failed writes); its stderr ends:\n{err[-1500:]}"
            )
        said = out + err
        assert follower.returncode not in (0, None), said
        assert "disk" in said and "full" in said, said
        assert "free space" in said.lower(), said

        # (b) while the disk is still full, the reads answer (and say what they could not save).
        fill(small_disk)  # whatever the follower's exit released
        job_id = job_dir.name
        listed = cli(home, "jobs", "--json", timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert [j["id"] for j in json.loads(listed.stdout)] == [job_id]
        assert "could not save" in listed.stderr, listed.stderr
        shown = cli(home, "show", job_id, "--json", timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["id"] == job_id
        assert "could not save" in shown.stderr, shown.stderr
        metrics = cli(home, "metrics", job_id, "--json", timeout=120)
        assert metrics.returncode == 0, metrics.stderr
        while_full = stored_losses(json.loads(metrics.stdout))
        assert while_full, "no point reached the store before the disk filled"
        logs = cli(home, "logs", job_id, timeout=120)
        assert logs.returncode == 0, logs.stderr
        assert "checkpoint" in logs.stdout

        # (c) with room again, the next read records the trainer's own last word.
        for ballast in small_disk.glob("ballast-*"):
            ballast.unlink()
        shown = cli(home, "show", job_id, "--json", timeout=120)
        assert shown.returncode == 0, shown.stderr
        job = json.loads(shown.stdout)
        assert job["state"] == "failed", job
        assert f"disk full while saving checkpoint {expected}" in job["state_reason"], job
        assert not (job_dir / "checkpoints" / f"checkpoint-{expected}").exists()
        status = read_status(job_dir)
        assert status is not None and "disk full" in status.message

        # (d) nothing stored before was lost, and every logged step is there now.
        after = stored_losses(json.loads(cli(home, "metrics", job_id, "--json").stdout))
        assert {s: after.get(s) for s in while_full} == while_full
        assert set(after) == set(metric_steps(job_dir / "events.jsonl"))
    finally:
        if trainer_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(trainer_pid, signal.SIGCONT)
                os.killpg(trainer_pid, signal.SIGKILL)
        if follower.poll() is None:
            follower.send_signal(signal.SIGCONT)
            follower.kill()
            follower.communicate()


def test_the_trainer_says_which_checkpoint_met_the_full_disk(
    small_disk: Path, demo_dir: Path, run_trainer: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    job = small_disk / "job"
    job.mkdir()
    config = json.loads((demo_dir / "config.json").read_text(encoding="utf-8"))
    config["model"]["name_or_path"] = str(demo_dir / "model")
    config["dataset"]["path"] = str(demo_dir / "train.jsonl")
    config["training"].update(max_steps=400, save_steps=CHECKPOINT_STEPS, save_total_limit=50)
    (job / "config.json").write_text(json.dumps(config), encoding="utf-8")
    # One demo checkpoint takes about 300 KB: the first fits, the second does not.
    fill(small_disk, leave=640 * 1024)  # 256 KB of it: the reserve
    done = run_trainer(job)
    assert done.returncode != 0
    status = read_status(job)
    assert status is not None, (job / "train.log").read_text()[-3000:]
    assert status.state == "failed"
    assert complete_checkpoints(job) == [CHECKPOINT_STEPS]
    assert f"disk full while saving checkpoint {2 * CHECKPOINT_STEPS}" in status.message
    assert "free space" in status.message.lower()
    # The torn checkpoint is gone (its room is free again and nobody offers it for resume).
    assert [p.name for p in (job / "checkpoints").iterdir()] == [f"checkpoint-{CHECKPOINT_STEPS}"]
    events = read_all_events(job / "events.jsonl")  # every line whole: nothing torn
    assert events[-1].kind == "status" and "disk full" in events[-1].message
    assert not list(job.glob(".*reserve*"))


def test_the_store_reads_on_a_full_disk_and_says_a_write_failed(small_disk: Path) -> None:
    from view_helpers import make_job

    from desktop.core.errors import DiskFullError
    from desktop.core.store import DB_FILENAME, JobStore
    from desktop.models import MetricPoint

    db = small_disk / DB_FILENAME
    job_dir = small_disk / "jobs" / "20260101-000000-dddd"
    job_dir.mkdir(parents=True)
    job = make_job(job_dir.name, job_dir=job_dir)
    with JobStore(db) as store:
        store.add_job(job)
        store.record_progress(store.get_job(job.id), [])
    fill(small_disk)
    with JobStore(db) as store:  # opening must not need a write
        assert [j.id for j in store.list_jobs()] == [job.id]
        stored = store.get_job(job.id)
        points = [
            MetricPoint(job_id=job.id, step=step, name="loss", value=1.0, time=1.0)
            for step in range(1, 3000)  # far more than the pages left (none)
        ]
        with pytest.raises(DiskFullError, match="full") as caught:
            store.record_progress(stored, points)
        assert "free space" in str(caught.value).lower()
        assert store.metric_count(job.id) == 0


def test_a_run_whose_checkpoints_will_not_fit_is_warned_about_before_it_starts(
    small_disk: Path, tmp_path: Path, demo_dir: Path
) -> None:
    import re

    home = small_disk / "home"
    home.mkdir()
    # Six kept checkpoints of about 0.3 MB each and the output: about 2 MB; 1 MB is free.
    config = write_config(
        tmp_path / "cfg", demo_dir, max_steps=40, save_steps=2, save_total_limit=5
    )
    fill(small_disk, leave=1024 * 1024)
    done = cli(home, "run", str(config), "--json", timeout=300)
    job_dir = next((home / "jobs").iterdir(), None) if (home / "jobs").is_dir() else None
    try:
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        warned = [i for i, line in enumerate(lines) if line.startswith("warning:")]
        launched = [i for i, line in enumerate(lines) if ": launched" in line]
        assert warned and launched and warned[0] < launched[0], done.stderr
        said = lines[warned[0]]
        found = re.search(r"needs about ([\d.]+) MB .* has ([\d.]+) MB free", said)
        assert found, said
        needed, free = float(found.group(1)), float(found.group(2))
        assert 1.5 <= needed <= 3.0, said  # the demo: ~0.3 MB a checkpoint, 6 at once
        assert 0.8 <= free <= 1.2 and needed > free, said
        assert "save_total_limit" in said, said
    finally:
        if job_dir is not None:
            launch = job_dir / "launch.json"
            wait_for("the trainer's handle", launch.is_file, timeout=120)
            pid = json.loads(launch.read_text())["pid"]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            wait_for("the trainer to stop", lambda: process_gone(pid), timeout=120)


def test_a_run_that_fits_gets_no_disk_warning(small_disk: Path, demo_dir: Path) -> None:
    from desktop.core.checks import check_disk_space
    from trainer.config import load_config

    config = load_config(demo_dir / "config.json")
    config.model.name_or_path = str(demo_dir / "model")
    space = check_disk_space(config, small_disk / "home" / "jobs")
    assert space.fits and space.warning() is None
    assert 0.5e6 <= space.needed_bytes <= 3e6  # the demo keeps 3 (+1) checkpoints of ~0.3 MB
    assert space.free_bytes == free_bytes(small_disk)


def test_a_trainer_gone_without_a_status_on_a_full_disk_is_said_to_have_met_it(
    small_disk: Path, tmp_path: Path, demo_template: Path
) -> None:
    import asyncio

    from test_local_provider import copy_demo, make_job, running

    from desktop.models import JobState
    from desktop.providers.local import EXITED_WITHOUT_STATUS, LocalProvider

    job_dir = copy_demo(demo_template, small_disk / "job")
    job = make_job(job_dir, "j-full", max_steps=4)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    fill(small_disk)  # so full that the trainer could not even write its last word
    update = asyncio.run(LocalProvider(tmp_path / "home").poll(running(job, gone.pid, 1.0)))
    assert update.state is JobState.FAILED
    assert update.reason.startswith(EXITED_WITHOUT_STATUS), update.reason
    assert "full" in update.reason and str(job_dir) in update.reason, update.reason
    assert "free space" in update.reason.lower(), update.reason


def test_an_event_that_meets_the_full_disk_leaves_no_torn_line(small_disk: Path) -> None:
    from trainer.protocol import EventWriter

    path = small_disk / "events.jsonl"
    writer = EventWriter(path)
    writer.emit("log", level="info", message="x" * 3000)  # most of the file's first page
    fill(small_disk)
    with pytest.raises(OSError) as caught:
        writer.emit("log", level="info", message="y" * 3000)  # crosses into a page not there
    assert caught.value.errno == errno.ENOSPC
    writer.close()
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and len(text.splitlines()) == 1, text[-200:]
    assert [e.kind for e in read_all_events(path)] == ["log"]
