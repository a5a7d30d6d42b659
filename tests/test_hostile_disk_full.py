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
