"""Fixtures for the window tests: a qasync loop per test, a private FTDESK_HOME, the demo
written by a child process (so the test process never imports torch)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def qloop(qapp: Any) -> Iterator[Any]:
    """A qasync event loop on the Qt thread; drive a test body with `qloop.run_until_complete`."""
    import qasync

    from desktop.views.gui_gc import GuiGarbageCollector

    # A window closing must not end the loop mid-test (Qt quits on the last window closed).
    qapp.setQuitOnLastWindowClosed(False)
    # As in the app: cyclic garbage (an earlier window's Qt objects) is collected on the Qt
    # thread only, never by a worker thread's allocation (a test froze that way).
    collector = GuiGarbageCollector()
    collector.start()
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    asyncio.set_event_loop(None)
    collector.stop()  # this test's garbage goes now, on the Qt thread


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
