"""Process handling for the local provider: detached starts, identity, group signals, file locks.

A process is identified by its pid AND its start time (`psutil.Process.create_time()`): a pid
number that the system has handed to another process since is never taken for the job. A zombie
(exited, not yet reaped) counts as gone.

Everything here is stdlib + psutil, so the detached scheduler can use it without the app.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psutil

__all__ = [
    "CREATE_TIME_TOLERANCE_S",
    "FileLock",
    "LockBusy",
    "ProcessIdentity",
    "describe_exit",
    "is_alive",
    "kill_group",
    "spawn_detached",
    "terminate_group",
]

# psutil derives create_time from the boot time and the start tick; two readings of the same
# process agree far better than this, two processes that shared a pid differ by far more.
CREATE_TIME_TOLERANCE_S = 0.05

_IS_WINDOWS = sys.platform == "win32"


class ProcessIdentity:
    """A pid plus the start time that makes it unique."""

    __slots__ = ("create_time", "pid")

    def __init__(self, pid: int, create_time: float) -> None:
        self.pid = pid
        self.create_time = create_time

    def __repr__(self) -> str:
        return f"ProcessIdentity(pid={self.pid}, create_time={self.create_time:.3f})"


def process_create_time(pid: int) -> float | None:
    """The start time of process `pid`; None when there is no such process."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, ValueError):
        return None


def is_alive(pid: int | None, create_time: float | None) -> bool:
    """Whether the process `pid` that started at `create_time` is still running.

    A different process now holding the same pid number is not alive (for us); nor is a zombie.
    Without a recorded start time nothing can be proven, so a pid alone counts as gone: taking a
    stranger for the job would be worse than reporting it gone.
    """
    if pid is None or pid <= 0 or create_time is None:
        return False
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, ProcessLookupError):
        return False
    except psutil.AccessDenied:
        # Another user's process with our pid and start time: still ours, just not inspectable.
        return True


def spawn_detached(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path,
) -> tuple[subprocess.Popen[bytes], float]:
    """Start `argv` in its own session / process group, output appended to `log_path`.

    stdin is /dev/null and stdout+stderr go to the file (never a pipe: a full pipe would stall a
    trainer whose app is gone). Returns the Popen (the caller reaps it while it lives) and the
    process start time.

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
    create_time = process_create_time(popen.pid)
    if create_time is None:  # gone already (and reaped by someone else): still give a time
        create_time = time.time()
    return popen, create_time


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


def terminate_group(pid: int, create_time: float) -> bool:
    """Ask the process group led by `pid` to stop (SIGTERM); False when the process is gone."""
    if not is_alive(pid, create_time):
        return False
    _signal_group(pid, signal.SIGTERM)
    return True


def kill_group(pid: int, create_time: float) -> bool:
    """Kill the process group led by `pid` (SIGKILL); False when the process is gone."""
    if not is_alive(pid, create_time):
        return False
    _signal_group(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
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


class LockBusy(Exception):
    """A non-blocking lock attempt found the lock held by another process."""


class FileLock:
    """An exclusive advisory lock on a file (fcntl.flock on POSIX, msvcrt on Windows).

    The operating system drops it when the holder dies, so a crashed scheduler never leaves the
    queue locked. Not re-entrant.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self, *, blocking: bool = True, timeout: float | None = None) -> None:
        """Take the lock.

        Raises:
            LockBusy: `blocking` is False (or `timeout` passed) and another process holds it.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: lock already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    self._try_lock(fd, blocking=blocking and deadline is None)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                        raise
                    if not blocking or (deadline is not None and time.monotonic() >= deadline):
                        raise LockBusy(f"{self.path} is locked by another process") from None
                    time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def _try_lock(fd: int, *, blocking: bool) -> None:
        if _IS_WINDOWS:
            import msvcrt

            # LK_NBLCK raises at once when held; blocking is done by the caller's retry loop.
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        """Drop the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _IS_WINDOWS:
                import msvcrt

                with contextlib.suppress(OSError):
                    os.lseek(fd, 0, os.SEEK_SET)
                    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined,unused-ignore]
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
