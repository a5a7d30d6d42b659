"""Keep the computer awake while local jobs train, and let it sleep again afterwards.

Linux: `systemd-inhibit --what=sleep:idle` holding a `cat` child that reads a pipe only this
process writes to, so the inhibition ends with the app even when the app is killed (the pipe
closes, `cat` reads its end, systemd-inhibit exits); a `sleep infinity` child would keep the
machine awake for ever after a crash. macOS:
`caffeinate -i -w <our pid>`; Windows: `SetThreadExecutionState`. Where none works (no logind,
no D-Bus, a sandbox), it is a no-op with one log line saying why. `LocalJobsInhibitor` is a
`JobListener` that holds the inhibition exactly while a local job is active.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

from desktop.models import Job, SeriesColumns

__all__ = ["LocalJobsInhibitor", "SleepInhibitor"]

log = logging.getLogger(__name__)

_ES_CONTINUOUS = 0x80000000
_ES_SYSTEM_REQUIRED = 0x00000001


class SleepInhibitor:
    """Holds (or not) one system-wide "don't sleep" inhibition for this app."""

    def __init__(self, reason: str = "Finetune Desk is training a model") -> None:
        self.reason = reason
        self._proc: subprocess.Popen[bytes] | None = None
        self._windows = False
        self.unavailable: str | None = None
        """Why inhibiting does not work here, once that is known."""

    @property
    def held(self) -> bool:
        """Whether an inhibition is in place right now."""
        self._check()
        return self._windows or (self._proc is not None and self._proc.poll() is None)

    def acquire(self) -> None:
        """Keep the system awake (idempotent)."""
        self._check()
        if self.unavailable is not None or self.held:
            return
        if sys.platform == "win32":
            import ctypes

            ok = ctypes.windll.kernel32.SetThreadExecutionState(  # type: ignore[attr-defined]
                _ES_CONTINUOUS | _ES_SYSTEM_REQUIRED
            )
            if ok:
                self._windows = True
                log.info("keeping the computer awake while local jobs run")
            else:
                self._give_up("SetThreadExecutionState refused")
            return
        if sys.platform == "darwin":
            cmd = ["caffeinate", "-i", "-w", str(os.getpid())]
        else:
            cmd = [
                "systemd-inhibit",
                "--what=sleep:idle",
                "--who=Finetune Desk",
                f"--why={self.reason}",
                "--mode=block",
                "cat",
            ]
        if shutil.which(cmd[0]) is None:
            self._give_up(f"{cmd[0]} is not installed")
            return
        try:
            # The pipe's write end stays here: when this process ends, the child reads EOF.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE if cmd[-1] == "cat" else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            self._give_up(f"{cmd[0]} cannot start: {exc.strerror or exc}")
            return
        log.info("keeping the computer awake while local jobs run (%s)", cmd[0])

    def release(self) -> None:
        """Let the system sleep again (idempotent)."""
        if self._windows:
            import ctypes

            ctypes.windll.kernel32.SetThreadExecutionState(_ES_CONTINUOUS)  # type: ignore[attr-defined]
            self._windows = False
            log.info("the computer may sleep again")
        proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()  # the child reads EOF and ends, and the inhibitor with it
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.info("the computer may sleep again")
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()

    def _check(self) -> None:
        """Notice an inhibitor child that exited at once (no logind / D-Bus here)."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        err = b""
        if proc.stderr is not None:
            err = proc.stderr.read() or b""
            proc.stderr.close()
        self._proc = None
        message = err.decode(errors="replace").strip().splitlines()
        program = str(proc.args[0]) if isinstance(proc.args, list) else "the inhibitor"
        self._give_up(
            f"{program} exited with {proc.returncode}" + (f": {message[-1]}" if message else "")
        )

    def _give_up(self, why: str) -> None:
        if self.unavailable is None:
            self.unavailable = why
            log.info("cannot keep the computer awake during training: %s", why)


class LocalJobsInhibitor:
    """A `JobListener` that keeps the computer awake exactly while a local job is active."""

    def __init__(self, inhibitor: SleepInhibitor | None = None) -> None:
        self.inhibitor = inhibitor or SleepInhibitor()
        self._active: set[str] = set()

    def _update(self, job: Job) -> None:
        if job.provider == "local" and not job.is_final:
            self._active.add(job.id)
        else:
            self._active.discard(job.id)
        self._apply()

    def _apply(self) -> None:
        if self._active:
            self.inhibitor.acquire()
        else:
            self.inhibitor.release()

    @property
    def active_jobs(self) -> frozenset[str]:
        """The local jobs that hold the inhibition."""
        return frozenset(self._active)

    def job_added(self, job: Job) -> None:
        """A job appeared (or was loaded): hold while it is active."""
        self._update(job)

    def job_changed(self, job: Job) -> None:
        """A job's state changed: release after the last active one ends."""
        self._update(job)

    def job_removed(self, job_id: str) -> None:
        """A job was deleted."""
        self._active.discard(job_id)
        self._apply()

    def metrics_added(self, job_id: str, columns: Mapping[str, SeriesColumns]) -> None:
        """Not used."""

    def log_added(self, job_id: str, lines: list[str]) -> None:
        """Not used."""

    def close(self) -> None:
        """Release at exit (jobs keep running detached, but the app no longer watches them)."""
        self._active.clear()
        self.inhibitor.release()
