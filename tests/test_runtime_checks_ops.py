"""A trainer-runtime check asked for while an older one runs is answered, for what it asked
about, and the older answer is never shown or acted on.

`Operations` refuses a second operation of a name while one runs. The window's startup check
and the Settings dialog's Check shared one name, so a click during the startup check was
refused and its button stayed disabled; an interpreter applied while the old one was checked
was never checked, and the old one's verdict stayed on the window (it can block Start); a
runtime picked in Settings → Use existing… while the last pick was checked was refused, and
the last pick was then used.

The checks' process is faked at its edge (`TrainerRuntime.doctor`, `use_existing_runtime`),
each call held in its worker thread by an event, so "while a check runs" is certain, not a
matter of timing; nothing starts a Python or imports torch.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from PySide6.QtCore import Qt

from desktop.core.runtime import TrainerRuntime
from desktop.models import Settings
from desktop.views import operations
from desktop.views.operations import MessageBus, Operations
from desktop.views.runtime_panel import RuntimePanel
from desktop.views.settings_dialog import SettingsDialog, describe_doctor
from trainer.reports import DoctorReport

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.qt_log_level_fail("CRITICAL")

APP = sys.executable  # the runtime of `Settings()`: the app's own Python
OLD, NEW = "/runtimes/old/bin/python", "/runtimes/new/bin/python"


class _Held:
    """A blocking check that records what it was asked about; a call about a name in `hold`
    waits in its worker thread until the test releases that name."""

    def __init__(self, *hold: str) -> None:
        self.entered = {name: threading.Event() for name in hold}
        self.released = {name: threading.Event() for name in hold}
        self.asked: list[str] = []

    def wait(self, name: str) -> None:
        self.asked.append(name)
        if name in self.entered:
            self.entered[name].set()
            assert self.released[name].wait(60), f"the test never released {name}"

    def release(self, name: str) -> None:
        self.released[name].set()


def _report(python: str) -> DoctorReport:
    """A doctor report that names its interpreter in the torch version (shown everywhere)."""
    return DoctorReport(python="3.12", executable=python, torch=f"2.5.1 of {python}", ok=True)


def _held_doctor(monkeypatch: pytest.MonkeyPatch, *hold: str) -> _Held:
    held = _Held(*hold)

    def doctor(runtime: TrainerRuntime, *, timeout_s: float = 300.0) -> DoctorReport:
        held.wait(runtime.python)
        return _report(runtime.python)

    # The window's check (`service.runtime.doctor`) and the dialog's (`check_runtime`) both
    # end here, where the real one would start the trainer's process.
    monkeypatch.setattr(TrainerRuntime, "doctor", doctor)
    return held


class _NoKeychain:
    """The dialog's secret store, never asked in these tests."""


def _window(qtbot: Any) -> Any:
    """The real window over a job service; `demo_home` spares it writing the demo."""
    from desktop.views.app import build_window

    window = build_window(settings=Settings())
    qtbot.addWidget(window)
    return window


async def _close(window: Any) -> None:
    window.close()
    await window.ops.close()
    await window.service.close()


def test_a_settings_check_asked_during_the_startup_check_is_answered_and_reenabled(
    qtbot: Any, qloop: Any, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _held_doctor(monkeypatch, APP, OLD)
    window = _window(qtbot)
    checked: list[str] = []
    window.runtime_checked.connect(checked.append)

    async def body() -> None:
        window.show()
        await window.start()
        await until(held.entered[APP].is_set)  # the startup check is in its thread, held
        dialog = SettingsDialog(window.settings, window.ops, _NoKeychain(), parent=window)  # type: ignore[arg-type]
        finished: list[str] = []
        dialog.doctor_finished.connect(finished.append)
        dialog.python_edit.setText(OLD)
        qtbot.mouseClick(dialog.doctor_button, Qt.MouseButton.LeftButton)
        assert not dialog.doctor_button.isEnabled()
        await until(held.entered[OLD].is_set)  # its own check runs beside the window's
        # Browse… picks another interpreter while the first is checked: it is checked next.
        dialog.python_edit.setText(NEW)
        dialog.run_doctor()
        assert dialog.doctor_label.text() == f"checking {NEW} …"
        held.release(OLD)
        await until(lambda: finished)
        assert finished == [describe_doctor(_report(NEW))], "only the newest pick's answer"
        assert dialog.doctor_label.text() == describe_doctor(_report(NEW))
        assert dialog.doctor_button.isEnabled()
        assert held.asked == [APP, OLD, NEW]
        assert not checked, "the window's own check is still running"
        held.release(APP)
        await until(lambda: checked)
        assert checked == [f"torch 2.5.1 of {APP}, no CUDA, no GPU"]
        assert finished == [describe_doctor(_report(NEW))]
        await _close(window)

    run(qloop, body())


def test_an_interpreter_applied_while_the_old_one_is_checked_gets_its_own_verdict(
    qtbot: Any, qloop: Any, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _held_doctor(monkeypatch, APP)
    window = _window(qtbot)
    checked: list[str] = []
    window.runtime_checked.connect(checked.append)

    async def body() -> None:
        window.show()
        await window.start()
        await until(held.entered[APP].is_set)  # the startup check of the old interpreter
        window.apply_settings(window.settings.model_copy(update={"trainer_python": NEW}))
        assert window.config_actions.runtime_report is None
        assert window.status_bar.runtime_label.text() == "runtime: checking …"
        held.release(APP)
        await until(lambda: checked)
        assert held.asked == [APP, NEW]
        assert checked == [f"torch 2.5.1 of {NEW}, no CUDA, no GPU"], "the old verdict dropped"
        assert window.config_actions.runtime_report == _report(NEW)
        assert window.status_bar.runtime_label.text() == f"runtime: {checked[0]}"
        await until(lambda: not window.ops.is_running("check the trainer runtime"))
        assert checked == [f"torch 2.5.1 of {NEW}, no CUDA, no GPU"]
        assert window.config_actions.runtime_report == _report(NEW)
        await _close(window)

    run(qloop, body())


def test_a_runtime_picked_while_the_last_pick_is_checked_is_the_one_used(
    qtbot: Any, qloop: Any, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _Held(OLD)

    def use_existing(python: str, offline: bool) -> str:
        held.wait(python)
        return python

    monkeypatch.setattr(operations, "use_existing_runtime", use_existing)
    picks = iter([OLD, NEW])
    ops = Operations(MessageBus())
    panel = RuntimePanel(ops, lambda: "", lambda: False, picker=lambda: next(picks))
    qtbot.addWidget(panel)
    chosen: list[str] = []
    shown: list[str] = []
    panel.runtime_chosen.connect(chosen.append)
    panel.status_shown.connect(shown.append)

    async def body() -> None:
        qtbot.mouseClick(panel.use_button, Qt.MouseButton.LeftButton)
        await until(held.entered[OLD].is_set)
        qtbot.mouseClick(panel.use_button, Qt.MouseButton.LeftButton)
        assert panel.verdict_label.text() == f"checking {NEW} …"
        held.release(OLD)
        await until(lambda: chosen)
        assert chosen == [NEW], "the newest pick is checked and used, the older one dropped"
        assert shown == [f"{NEW} (your own Python): ready"]
        assert panel.verdict_label.text() == shown[0]
        assert held.asked == [OLD, NEW]
        await until(lambda: not ops.is_running("use a trainer runtime"))
        assert chosen == [NEW]
        await ops.close()

    run(qloop, body())
