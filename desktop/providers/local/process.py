"""Process handling for the local provider: detached starts, identity, group signals.

The file lock lives in `desktop.core.file_lock` (the job service takes an ingest lock too);
it is re-exported here for the queue and the scheduler.

A process is identified by its pid AND when it started, so a pid number that the system has
handed to another process since is never taken for the job. A zombie (exited, not yet reaped)
counts as gone. Two clocks can tell when a process started:

- `psutil.Process.create_time()`, wall-clock seconds. On Linux psutil computes it as the boot
  time from /proc/stat (`btime`, whole seconds, recomputed from the wall clock at each read) plus
  the process's start tick, so it moves when the clock is stepped or slewed across a second:
  two readings of one process may differ by a second or more. It is compared with a tolerance
  (`CREATE_TIME_TOLERANCE_S`) and is the only start time off Linux.
- On Linux, the start tick itself (field 22 of /proc/<pid>/stat, clock ticks since boot) with
  the boot id (/proc/sys/kernel/random/boot_id). Recorded at launch, it is exact and immune to
  clock changes: when it was recorded and the machine has not rebooted since, it decides alone.

For a trainer the caller also passes the job folder: the process's command line must name it
(`--job-dir DIR`), so an unrelated process that happens to hold the pid and a start time within
the tolerance is not taken either. Handles recorded before the start tick existed get the
tolerant time check plus this command-line check.

Everything here is stdlib + psutil, so the detached scheduler can use it without the app.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from desktop.core.file_lock import FileLock, LockBusy
from trainer.protocol import process_start_ticks

__all__ = [
    "CREATE_TIME_TOLERANCE_S",
    "FileLock",
    "LockBusy",
    "ProcessIdentity",
    "current_boot_id",
    "describe_exit",
    "identity_alive",
    "is_alive",
    "kill_group",
    "names_job_dir",
    "probe_identity",
    "spawn_detached",
    "start_ticks",
    "terminate_group",
]

# Two readings of one process's create_time differ by up to a second when the boot time psutil
# adds (whole seconds) moves; processes that shared a pid number start far further apart (the
# pid space has to wrap around first), and the command-line check covers the rest.
CREATE_TIME_TOLERANCE_S = 2.0

# Keys of the identity in `ProviderHandle.extra` (strings there).
EXTRA_START_TICKS = "pid_start_ticks"
EXTRA_BOOT_ID = "boot_id"

_IS_WINDOWS = sys.platform == "win32"
_PROC = Path("/proc")


class ProcessIdentity:
    """A pid plus what makes it unique: its start time and, on Linux, its start tick and boot.

    Attributes:
        pid: the process id.
        create_time: wall-clock start time (psutil), compared with a tolerance.
        start_ticks: clock ticks since boot at the start (/proc/<pid>/stat field 22); None
            off Linux or in handles recorded before it existed.
        boot_id: the boot the start tick belongs to; None when `start_ticks` is None.
    """

    __slots__ = ("boot_id", "create_time", "pid", "start_ticks")

    def __init__(
        self,
        pid: int,
        create_time: float,
        start_ticks: int | None = None,
        boot_id: str | None = None,
    ) -> None:
        self.pid = pid
        self.create_time = create_time
        self.start_ticks = start_ticks
        self.boot_id = boot_id

    def extra(self) -> dict[str, str]:
        """The clock-independent part as `ProviderHandle.extra` entries (empty off Linux)."""
        if self.start_ticks is None or not self.boot_id:
            return {}
        return {EXTRA_START_TICKS: str(self.start_ticks), EXTRA_BOOT_ID: self.boot_id}

    @classmethod
    def from_extra(cls, pid: int, create_time: float, extra: Mapping[str, str]) -> ProcessIdentity:
        """The identity of a handle: `pid`, `create_time` and what `extra()` wrote (if any)."""
        ticks: int | None = None
        with contextlib.suppress(KeyError, ValueError):
            ticks = int(extra[EXTRA_START_TICKS])
        boot = extra.get(EXTRA_BOOT_ID) or None
        if ticks is None or boot is None:
            return cls(pid, create_time)
        return cls(pid, create_time, ticks, boot)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProcessIdentity):
            return NotImplemented
        return (self.pid, self.create_time, self.start_ticks, self.boot_id) == (
            other.pid,
            other.create_time,
            other.start_ticks,
            other.boot_id,
        )

    def __hash__(self) -> int:
        return hash((self.pid, self.create_time, self.start_ticks, self.boot_id))

    def __repr__(self) -> str:
        return (
            f"ProcessIdentity(pid={self.pid}, create_time={self.create_time:.3f}, "
            f"start_ticks={self.start_ticks}, boot_id={self.boot_id!r})"
        )


@functools.cache
def current_boot_id() -> str | None:
    """This boot's id (Linux: /proc/sys/kernel/random/boot_id); None elsewhere."""
    try:
        text = (_PROC / "sys" / "kernel" / "random" / "boot_id").read_text(encoding="ascii")
    except (OSError, ValueError):
        return None
    return text.strip() or None


def start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux); None when unknown."""
    return process_start_ticks(pid)


def process_create_time(pid: int) -> float | None:
    """The start time of process `pid`; None when there is no such process."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, ValueError):
        return None


def probe_identity(pid: int) -> ProcessIdentity | None:
    """The identity of the running process `pid` now; None when there is no such process."""
    create_time = process_create_time(pid)
    if create_time is None:
        return None
    ticks = start_ticks(pid)
    boot = current_boot_id() if ticks is not None else None
    return ProcessIdentity(pid, create_time, ticks, boot)


def _same_path(value: str, job_dir: Path) -> bool:
    if value == str(job_dir):
        return True
    if not os.path.isabs(value):
        return False
    if os.path.normcase(os.path.realpath(value)) == os.path.normcase(os.path.realpath(job_dir)):
        return True
    try:
        return os.path.samefile(value, job_dir)
    except OSError:
        return False


def names_job_dir(cmdline: Sequence[str], job_dir: Path) -> bool:
    """Whether a command line has `--job-dir <job_dir>` (or `--job-dir=<job_dir>`)."""
    for index, arg in enumerate(cmdline):
        value: str | None = None
        if arg == "--job-dir" and index + 1 < len(cmdline):
            value = cmdline[index + 1]
        elif arg.startswith("--job-dir="):
            value = arg.partition("=")[2]
        if value is not None and _same_path(value, job_dir):
            return True
    return False


def _started_as_recorded(proc: psutil.Process, identity: ProcessIdentity) -> bool:
    """Whether `proc` started when `identity` says (exactly by tick when both are known)."""
    if identity.start_ticks is not None and identity.boot_id:
        boot = current_boot_id()
        if boot is not None and boot != identity.boot_id:
            return False  # rebooted since: every process of that boot is gone
        ticks = start_ticks(identity.pid)
        if boot is not None and ticks is not None:
            return ticks == identity.start_ticks
    return bool(abs(proc.create_time() - identity.create_time) <= CREATE_TIME_TOLERANCE_S)


def is_alive(
    pid: int | None,
    create_time: float | None,
    *,
    start_ticks: int | None = None,
    boot_id: str | None = None,
    job_dir: Path | str | None = None,
) -> bool:
    """Whether the process `pid` that started at `create_time` is still running.

    A different process now holding the same pid number is not alive (for us); nor is a zombie.
    With `start_ticks` and `boot_id` (Linux, recorded at launch) the start is compared exactly
    and the wall clock does not matter; without them `create_time` is compared with
    `CREATE_TIME_TOLERANCE_S`. With `job_dir` the process's command line must also name that
    folder after `--job-dir` (a trainer's does). Without a recorded start time nothing can be
    proven, so a pid alone counts as gone: taking a stranger for the job would be worse than
    reporting it gone.
    """
    if pid is None or pid <= 0 or create_time is None:
        return False
    identity = ProcessIdentity(pid, create_time, start_ticks, boot_id)
    try:
        proc = psutil.Process(pid)
        if not _started_as_recorded(proc, identity):
            return False
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.NoSuchProcess, psutil.ZombieProcess, ProcessLookupError):
        return False
    except psutil.AccessDenied:
        # Another user's process with our pid and start time: still ours, just not inspectable.
        return True
    if job_dir is None:
        return True
    try:
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, ProcessLookupError):
        return False
    except psutil.AccessDenied:
        return True  # not readable (another user): the start time has to do
    return names_job_dir(cmdline, Path(job_dir))


def identity_alive(identity: ProcessIdentity, job_dir: Path | str | None = None) -> bool:
    """`is_alive` for a `ProcessIdentity`."""
    return is_alive(
        identity.pid,
        identity.create_time,
        start_ticks=identity.start_ticks,
        boot_id=identity.boot_id,
        job_dir=job_dir,
    )


def spawn_detached(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path,
) -> tuple[subprocess.Popen[bytes], ProcessIdentity]:
    """Start `argv` in its own session / process group, output appended to `log_path`.

    stdin is /dev/null and stdout+stderr go to the file (never a pipe: a full pipe would stall a
    trainer whose app is gone). Returns the Popen (the caller reaps it while it lives) and the
    process's identity (read at once: a child is not reaped before its parent waits for it).

    Raises:
        OSError: the program could not be started.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, object] = {}
    if _IS_WINDOWS:
        kwargs["creationflags"] = (
            subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined,unused-ignore]
            | subprocess.DETACHED_PROCESS  # type: ignore[attr-defined,unused-ignore]
            | subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined,unused-ignore]
        )
    else:
        kwargs["start_new_session"] = True
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=dict(env),
            close_fds=True,
            **kwargs,  # type: ignore[call-overload]
        )
    identity = probe_identity(popen.pid)
    if identity is None:  # gone already (and reaped by someone else): still give a time
        identity = ProcessIdentity(popen.pid, time.time())
    return popen, identity


def _signal_group(pid: int, sig: int) -> None:
    if _IS_WINDOWS:
        # No process groups to signal without a console: terminate the tree through psutil.
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill() if sig == getattr(signal, "SIGKILL", 9) else child.terminate()
            proc.kill() if sig == getattr(signal, "SIGKILL", 9) else proc.terminate()
        return
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        # The group is gone and its id reused by someone else's group: touch only our process.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def terminate_group(identity: ProcessIdentity, job_dir: Path | str | None = None) -> bool:
    """Ask the process group led by `identity` to stop (SIGTERM); False when it is gone.

    `job_dir`: see `is_alive` (the process must be the trainer of that folder).
    """
    if not identity_alive(identity, job_dir):
        return False
    _signal_group(identity.pid, signal.SIGTERM)
    return True


def kill_group(identity: ProcessIdentity, job_dir: Path | str | None = None) -> bool:
    """Kill the process group led by `identity` (SIGKILL); False when it is gone."""
    if not identity_alive(identity, job_dir):
        return False
    _signal_group(identity.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    return True


def describe_exit(exit_code: int | None) -> str:
    """A short phrase for an exit code: 'exit code 1', 'killed by SIGKILL'."""
    if exit_code is None:
        return "exit code unknown"
    if exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return f"exit code {exit_code}"
