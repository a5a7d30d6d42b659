"""Helpers for the window tests: a qasync loop per test, awaiting conditions, a window on a
private FTDESK_HOME with the demo already written."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def qloop(qapp: Any) -> Iterator[Any]:
    """A qasync event loop on the Qt thread; drive a test body with `qloop.run_until_complete`."""
    import qasync

    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data folder (FTDESK_HOME)."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("FTDESK_HOME", str(folder))
    return folder


@pytest.fixture(scope="session")
def demo_made_apart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo written by `python -m trainer make-demo` in a child process, so this process
    never imports torch (the window tests assert that it does not)."""
    folder = tmp_path_factory.mktemp("demo-apart")
    subprocess.run(
        [sys.executable, "-m", "trainer", "make-demo", str(folder)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return folder


@pytest.fixture
def demo_home(home: Path, demo_made_apart: Path) -> Path:
    """FTDESK_HOME with the demo already in `demo/` (the window skips `make-demo`)."""
    shutil.copytree(demo_made_apart, home / "demo")
    return home


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
