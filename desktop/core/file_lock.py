"""An exclusive advisory file lock shared by processes (fcntl.flock on POSIX, msvcrt on Windows).

Qt-free and stdlib only: the job service takes a job's ingest lock with it, the local provider
its queue and scheduler locks, and the detached scheduler runs it without the app.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from pathlib import Path
from types import TracebackType

__all__ = ["FileLock", "LockBusy"]

_IS_WINDOWS = sys.platform == "win32"


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
