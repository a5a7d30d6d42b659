"""The main window through pytest-qt, offscreen, on a real JobService and local provider."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from app_helpers import rerun_alone, run, until
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit, QMessageBox

from desktop.models import JobState, Settings

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.qt_log_level_fail("CRITICAL")


def make_window(**kw: Any) -> Any:
    from desktop.views.app import build_window

    settings = kw.pop("settings", Settings(poll_interval_s=0.25, cancel_grace_s=5))
    return build_window(settings=settings, check_runtime=False, **kw)


async def close(window: Any) -> None:
    window.close()
    await window.ops.close()
    await window.service.close()


def _short_demo(window: Any, steps: int) -> None:
    config = window.editor.config()
    training = config.training.model_copy(
        update={"max_steps": steps, "save_steps": max(2, steps // 2)}
    )
    window.editor.set_config(config.model_copy(update={"training": training}))


def _state_of(window: Any, job_id: str) -> JobState | None:
    job = window.state.job(job_id)
    return None if job is None else job.state


@pytest.mark.slow
def test_start_on_the_demo_trains_and_the_gui_never_imports_torch(
    qtbot: Any, qloop: Any, home: Path
) -> None:
    if "torch" in sys.modules:  # another test in this worker imported it: check in a clean one
        assert not os.environ.get("FTDESK_TEST_ALONE"), "torch was imported before the window"
        rerun_alone(__file__, "test_start_on_the_demo_trains_and_the_gui_never_imports_torch")
        return
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> str:
        window.show()
        await window.start()
        # First run: the Demo preset is in the editor; the demo is written in the background
        # (a `trainer make-demo` child) and Start waits for it.
        assert window.editor.config().name == "demo"
        assert Path(window.editor.config().model.name_or_path) == home / "demo" / "model"
        assert not window.start_button.isEnabled()
        await until(lambda: (home / "demo" / "model" / "config.json").exists(), 300)
        _short_demo(window, 8)
        await until(lambda: window.start_button.isEnabled(), 30)
        qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
        job_id = await until(lambda: window.state.job_count() and window.state.job_at(0).id, 120)
        await until(lambda: _state_of(window, job_id) in (JobState.COMPLETED, JobState.FAILED), 600)
        assert _state_of(window, job_id) is JobState.COMPLETED, window.state.job(job_id)
        # The new job is selected: the chart shows its loss curve, the log view follows it.
        assert window.state.selected_job_ids == (job_id,)
        window.chart.redraw()
        plotted = window.chart.plotted(job_id, "loss", raw=True)
        assert plotted is not None and len(plotted[0]) == 8
        assert window.state.job(job_id).last_loss is not None
        await until(lambda: window.state.log_tail(job_id), 10)
        assert window.log_view.job_id == job_id
        await until(lambda: window.log_view.text.toPlainText().strip(), 10)
        await close(window)
        return job_id

    job_id = run(qloop, body())
    assert "torch" not in sys.modules
    assert not any(m.split(".")[0] in ("transformers", "peft", "trl") for m in sys.modules)
    # The last config and the layout are remembered for the next start.
    assert (home / "last_config.json").exists()
    assert (home / "window.ini").exists()
    assert (home / "jobs" / job_id / "status.json").exists()


def test_an_invalid_value_shows_on_its_field_and_disables_start(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        await until(lambda: window.start_button.isEnabled(), 10)
        # Typed by the person: empty the dataset path, then give it back.
        edit = window.editor.field_widget("dataset.path")
        assert isinstance(edit, QLineEdit)
        edit.selectAll()
        qtbot.keyClick(edit, Qt.Key.Key_Delete)
        assert window.editor.field_error("dataset.path")
        assert not window.start_button.isEnabled()
        assert "dataset.path" in window.start_button.toolTip()
        qtbot.keyClicks(edit, str(demo_home / "demo" / "train.jsonl"))
        assert window.editor.field_error("dataset.path") is None
        assert window.start_button.isEnabled()
        await close(window)

    run(qloop, body())


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_trainer_killed_outside_the_app_shows_failed(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        _short_demo(window, 100_000)
        await until(lambda: window.start_button.isEnabled(), 10)
        window.start_job()
        job_id = await until(lambda: window.state.job_count() and window.state.job_at(0).id, 120)
        await until(lambda: _state_of(window, job_id) is JobState.TRAINING, 300)
        job = window.state.job(job_id)
        assert job is not None and job.handle is not None and job.handle.pid
        os.kill(job.handle.pid, signal.SIGKILL)
        await until(lambda: _state_of(window, job_id) is JobState.FAILED, 60)
        assert "SIGKILL" in window.state.job(job_id).state_reason
        # The desktop notification went out once, saying it failed.
        assert [t for t, _ in window.notifier.sent] == [f"{job.name} failed"]
        await close(window)

    run(qloop, body())


@pytest.mark.expect_log("a bug in an operation")
def test_an_unexpected_error_in_an_operation_shows_the_traceback_and_the_app_runs_on(
    qtbot: Any, qloop: Any, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[tuple[str, str]] = []

    def fake_open(box: QMessageBox) -> None:
        shown.append((box.text(), box.detailedText()))

    monkeypatch.setattr(QMessageBox, "open", fake_open)
    window = make_window()
    qtbot.addWidget(window)

    async def broken() -> None:
        raise ZeroDivisionError("a bug in an operation")

    async def body() -> None:
        window.ops.run("broken thing", broken())
        await until(lambda: shown, 10)
        # The app keeps running: another operation still completes and updates the UI.
        done: list[int] = []

        async def fine() -> int:
            return 42

        window.ops.run("fine thing", fine(), done.append)
        await until(lambda: done, 10)
        assert done == [42]
        await close(window)

    run(qloop, body())
    text, details = shown[0]
    assert "broken thing failed: a bug in an operation" in text
    assert "ZeroDivisionError" in details and "Traceback" in details
    log_text = (home / "logs" / "finetune-desk.log").read_text(encoding="utf-8")
    assert "ZeroDivisionError: a bug in an operation" in log_text


@pytest.mark.expect_log("invalid JSON; fix that line")
def test_an_expected_error_goes_to_the_status_bar_not_a_dialog(
    qtbot: Any, qloop: Any, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from desktop.core.errors import DatasetError

    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append(box.text()) or 0)
    monkeypatch.setattr(QMessageBox, "open", lambda box: shown.append(box.text()))
    window = make_window()
    qtbot.addWidget(window)

    async def expected() -> None:
        raise DatasetError("data.jsonl: line 3: invalid JSON; fix that line")

    async def body() -> None:
        window.ops.run("check", expected())
        await until(lambda: "line 3" in window.statusBar().currentMessage(), 10)
        await close(window)

    run(qloop, body())
    assert shown == []
