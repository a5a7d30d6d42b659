"""Helpers for the window tests: awaiting conditions on the qasync loop, running a test alone.
(The fixtures are in app_fixtures.py: `pytest_plugins = ["app_fixtures"]`.)"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any


async def until(predicate: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> Any:
    """Wait (serving the Qt and asyncio loop) until `predicate()` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        await asyncio.sleep(step)


def run(loop: Any, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a test body on the qasync loop."""
    return loop.run_until_complete(coro)


def rerun_alone(test_file: str, test_name: str) -> None:
    """Run one test in a fresh interpreter (its own pytest) and fail if it fails there.

    For assertions about `sys.modules` when another test in this worker already imported torch.
    """
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"{test_file}::{test_name}",
            "-q",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "FTDESK_TEST_ALONE": "1"},
        cwd=str(Path(test_file).resolve().parents[1]),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def suspend_process(pid: int, timeout: float = 60.0) -> None:
    """SIGSTOP process `pid` and return once every one of its threads has stopped (Linux).

    The signal is delivered asynchronously: a thread may still run (read a request) for a
    moment after `kill` returns, so a test that relies on the stop waits for it here.
    """
    import signal

    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout

    def stopped() -> bool:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                states.append((task / "stat").read_text().rsplit(") ", 1)[1][0])
            except (FileNotFoundError, IndexError):
                continue  # a thread that ended meanwhile
        return bool(states) and all(state in "Tt" for state in states)

    while not stopped():
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not stop within {timeout} s")
        time.sleep(0.005)


def unread_stdin_bytes(pid: int) -> int:
    """How many bytes wait unread in process `pid`'s stdin pipe (Linux, FIONREAD).

    With the process suspended (SIGSTOP), a request written to it is seen here, so a test can
    resume it knowing the request is there, not hoping it came in time.
    """
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    finally:
        os.close(fd)
