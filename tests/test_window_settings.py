"""Settings changed in the window reach the next launch: offline mode and the trainer Python.

The real window, the real Settings dialog (its widgets and its OK button) and the real local
provider: after offline mode is turned on, the trainer started by Start has the offline
environment (read from `/proc/<pid>/environ`) and, under the connect guard of
tests/test_offline.py loaded into every child process, attempts no connection; after the
trainer Python is changed to a wrapper that records its use, the next launch runs through it.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QDialogButtonBox
from test_offline import GUARD

from desktop.core.secrets import SecretStore
from desktop.models import JobState, Settings
from desktop.providers.offline import OFFLINE_ENV

pytest_plugins = ["app_fixtures"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/environ"),
]

ROOT = Path(__file__).resolve().parents[1]


class _LockedKeychain:
    """A keyring backend whose keychain is locked: the dialog must not touch a real one."""

    priority = 1

    def get_password(self, service: str, user: str) -> str | None:
        from keyring.errors import KeyringLocked

        raise KeyringLocked("the collection is locked")

    set_password = get_password
    delete_password = get_password


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _guard_records(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def _long_demo(window: Any) -> None:
    """The demo, long enough to still be training when its environment is read."""
    config = window.editor.config()
    training = config.training.model_copy(update={"max_steps": 100_000, "save_steps": 50_000})
    window.editor.set_config(config.model_copy(update={"training": training}))


def _state_of(window: Any, job_id: str) -> JobState | None:
    job = window.state.job(job_id)
    return None if job is None else job.state


def _accept_settings(qtbot: Any, window: Any, *, offline: bool, python: str | None) -> None:
    """Open Settings, set offline mode and the trainer Python in its widgets, press OK."""
    dialog = window.open_settings()
    assert dialog.isVisible()
    if dialog.offline_check.isChecked() != offline:
        check = dialog.offline_check  # on its box: a wide check box's middle is empty space
        qtbot.mouseClick(check, Qt.MouseButton.LeftButton, pos=QPoint(8, check.height() // 2))
    assert dialog.offline_check.isChecked() == offline
    if python is not None:
        dialog.python_edit.clear()
        qtbot.keyClicks(dialog.python_edit, python)
    box = dialog.findChild(QDialogButtonBox)
    qtbot.mouseClick(box.button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()


def _job_ids(window: Any) -> set[str]:
    return {window.state.job_at(row).id for row in range(window.state.job_count())}


async def _train_until_running(qtbot: Any, window: Any) -> str:
    """Press Start on the editor's (long) demo; the new job's id once its trainer trains."""
    before = _job_ids(window)
    await until(lambda: window.start_button.isEnabled(), 60)
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    new = await until(lambda: _job_ids(window) - before, 120)
    (job_id,) = new
    await until(lambda: _state_of(window, job_id) is JobState.TRAINING, 300)
    return str(job_id)


async def _cancel(window: Any, job_id: str) -> None:
    window.cancel_job(job_id)
    await until(lambda: (job := window.state.job(job_id)) is not None and job.is_final, 120)


def test_offline_and_trainer_python_from_settings_reach_the_next_launch(
    qtbot: Any, qloop: Any, demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every process started from here loads the connect guard; none has the offline variables
    # of its own (the test suite's conftest sets some of them for every test).
    guard_dir = tmp_path / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD, encoding="utf-8")
    net_log = tmp_path / "net.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(guard_dir), str(ROOT)]))
    monkeypatch.setenv("NET_GUARD_LOG", str(net_log))
    for name in OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    # A trainer Python that records each use, then is the real interpreter.
    used = tmp_path / "wrapper-used.log"
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(
        f'#!/bin/sh\necho "$$ $*" >> "{used}"\nexec "{sys.executable}" "$@"\n', encoding="utf-8"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)

    from desktop.views.app import build_window

    window = build_window(
        settings=Settings(offline=False),
        check_runtime=False,
        secret_store=SecretStore(_LockedKeychain(), timeout_s=5),
    )
    qtbot.addWidget(window)

    async def body() -> None:
        window.show()
        await window.start()
        assert not window.service.offline
        assert "online" in window.offline_label.text()

        # 1. Offline mode on in Settings; Start: the trainer has the offline environment.
        _accept_settings(qtbot, window, offline=True, python=None)
        assert window.service.offline and "offline" in window.offline_label.text()
        _long_demo(window)
        first = await _train_until_running(qtbot, window)
        job = window.state.job(first)
        assert job is not None and job.handle is not None and job.handle.pid
        env = _environ(job.handle.pid)
        assert {k: env.get(k) for k in OFFLINE_ENV} == OFFLINE_ENV
        guarded = {r["pid"] for r in _guard_records(net_log) if r["kind"] == "loaded"}
        assert job.handle.pid in guarded, "the trainer did not load the connect guard"
        await _cancel(window, first)
        attempts = [r for r in _guard_records(net_log) if r["kind"] in ("connect", "lookup")]
        assert attempts == []
        assert not used.exists()

        # 2. The trainer Python changed in Settings: the next launch runs through it.
        _accept_settings(qtbot, window, offline=True, python=str(wrapper))
        assert window.service.runtime.python == str(wrapper)
        second = await _train_until_running(qtbot, window)
        job = window.state.job(second)
        assert job is not None and job.handle is not None and job.handle.pid
        runs = [line.split(" ", 1) for line in used.read_text(encoding="utf-8").splitlines()]
        assert any(int(pid) == job.handle.pid and "trainer" in args for pid, args in runs), runs
        assert {k: _environ(job.handle.pid).get(k) for k in OFFLINE_ENV} == OFFLINE_ENV
        await _cancel(window, second)
        assert [r for r in _guard_records(net_log) if r["kind"] in ("connect", "lookup")] == []
        # Both were saved (in a worker thread) for the next start of the app.
        settings_file = demo_home / "settings.json"

        def saved() -> dict[str, Any]:
            text = settings_file.read_text(encoding="utf-8") if settings_file.exists() else "{}"
            data: dict[str, Any] = json.loads(text)
            return data

        await until(lambda: saved().get("trainer_python") == str(wrapper), 10)
        assert saved()["offline"] is True

        window.close()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
