"""The sleep inhibitor, where it can run: a fake `systemd-inhibit` on PATH records its arguments
and its lifetime, and real local jobs (the demo, trained by real trainers) hold it exactly while
one of them is active."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from desktop.core.sleep_inhibit import LocalJobsInhibitor, SleepInhibitor
from desktop.models import JobState, Settings

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="systemd-inhibit is the Linux inhibitor"
)

_FAKE = """#!{python}
# A stand-in for systemd-inhibit: records its argv when it starts and when it ends, and runs the
# command after its options as the real one does (stdin inherited; the child gets SIGTERM when
# it is told to stop, as the real one's child does through PR_SET_PDEATHSIG), ending with it.
import json, os, signal, subprocess, sys

def record(event, **extra):
    with open(os.environ["FAKE_INHIBIT_LOG"], "a", encoding="utf-8") as out:
        entry = {{"event": event, "pid": os.getpid(), "argv": sys.argv[1:], **extra}}
        out.write(json.dumps(entry) + "\\n")

child = None

def stop(*_args):
    if child is not None:
        child.terminate()
    record("exit")
    os._exit(0)

signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
if os.environ.get("FAKE_INHIBIT_FAIL"):
    record("start")
    print("Failed to inhibit: no logind here", file=sys.stderr)
    record("exit")
    sys.exit(1)
command = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
child = subprocess.Popen(command)
record("start", child=child.pid)
code = child.wait()
record("exit")
sys.exit(code)
"""


@pytest.fixture
def fake_inhibit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `systemd-inhibit` first on PATH; returns the file it records to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemd-inhibit"
    script.write_text(_FAKE.format(python=sys.executable), encoding="utf-8")
    script.chmod(0o755)
    record = tmp_path / "inhibit.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_INHIBIT_LOG", str(record))
    return record


def _events(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


def test_the_inhibitor_runs_systemd_inhibit_while_held_and_ends_it_on_release(
    fake_inhibit: Path,
) -> None:
    inhibitor = SleepInhibitor("training")
    assert not inhibitor.held and _events(fake_inhibit) == []
    inhibitor.acquire()
    inhibitor.acquire()  # idempotent: one process
    _wait_for(lambda: len(_events(fake_inhibit)) == 1)
    (start,) = _events(fake_inhibit)
    assert start["event"] == "start"
    assert start["argv"][:4] == [
        "--what=sleep:idle",
        "--who=Finetune Desk",
        "--why=training",
        "--mode=block",
    ]
    assert inhibitor.held and _alive(start["pid"])
    inhibitor.release()
    assert [e["event"] for e in _events(fake_inhibit)] == ["start", "exit"]
    assert not inhibitor.held and not _alive(start["pid"])
    inhibitor.release()  # idempotent
    assert inhibitor.unavailable is None


def test_an_inhibitor_that_cannot_inhibit_is_a_no_op_with_its_reason(
    fake_inhibit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_INHIBIT_FAIL", "1")
    inhibitor = SleepInhibitor()
    inhibitor.acquire()
    _wait_for(lambda: [e["event"] for e in _events(fake_inhibit)] == ["start", "exit"])
    _wait_for(lambda: not inhibitor.held)
    assert (
        inhibitor.unavailable == "systemd-inhibit exited with 1: Failed to inhibit: no logind here"
    )
    inhibitor.acquire()  # not tried again
    assert len(_events(fake_inhibit)) == 2
    inhibitor.release()


@pytest.mark.slow
def test_real_local_jobs_hold_the_inhibition_exactly_while_one_is_active(
    fake_inhibit: Path, home: Path, demo_dir: Path
) -> None:
    from desktop.core.checks import resolve_config
    from desktop.core.service import JobService

    config = resolve_config(demo_dir / "config.json")
    endless = config.model_copy(
        update={"training": config.training.model_copy(update={"max_steps": 100_000})}
    )

    async def go() -> None:
        service = JobService(settings=Settings(poll_interval_s=0.25, cancel_grace_s=5))
        listener = LocalJobsInhibitor()
        service.add_listener(listener)
        await service.start()
        assert _events(fake_inhibit) == []  # no job, no inhibition
        try:
            first = await service.launch(endless, provider="local")
            await asyncio.to_thread(_wait_for, lambda: len(_events(fake_inhibit)) == 1)
            (start,) = _events(fake_inhibit)
            second = await service.launch(endless, provider="local")
            assert listener.active_jobs == {first.id, second.id}
            await service.cancel(first.id)
            done = await service.wait(first.id, timeout=120)
            assert done.state is JobState.CANCELLED
            # One job still active: still held by the same process.
            assert [e["event"] for e in _events(fake_inhibit)] == ["start"]
            assert _alive(start["pid"]) and listener.inhibitor.held
            await service.cancel(second.id)
            done = await service.wait(second.id, timeout=120)
            assert done.state is JobState.CANCELLED
            # The last active job ended: the inhibitor process is gone.
            await asyncio.to_thread(
                _wait_for, lambda: [e["event"] for e in _events(fake_inhibit)] == ["start", "exit"]
            )
            assert not _alive(start["pid"]) and not listener.inhibitor.held
        finally:
            listener.close()
            await service.close()

    asyncio.run(go())


def test_the_inhibition_ends_with_the_app_even_when_the_app_is_killed(fake_inhibit: Path) -> None:
    # An app that dies without releasing (SIGKILL, a crash) must not keep the machine awake for
    # ever: the inhibitor's child ends when the app is gone.
    code = (
        "import sys, time\n"
        "from desktop.core.sleep_inhibit import SleepInhibitor\n"
        "SleepInhibitor().acquire()\n"
        "time.sleep(600)\n"
    )
    app = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
    try:
        _wait_for(lambda: len(_events(fake_inhibit)) == 1)
        (start,) = _events(fake_inhibit)
        app.kill()
        app.wait(timeout=30)
        _wait_for(lambda: [e["event"] for e in _events(fake_inhibit)] == ["start", "exit"])
        _wait_for(lambda: not _alive(start["pid"]) and not _alive(start["child"]))
    finally:
        app.kill()
        app.wait(timeout=30)
        for event in _events(fake_inhibit):  # what a failed run left behind
            for pid in (event["pid"], event.get("child")):
                if pid is not None and _alive(pid):
                    os.kill(pid, signal.SIGKILL)
