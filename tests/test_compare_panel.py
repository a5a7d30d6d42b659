"""The Batch compare dialog driven on the demo job trained in the test.

Two prompts through the base and the job's adapter fill a two-row table whose answers are
what `compare_jobs` returns for the same settings; Save CSV and Save JSONL write what
`write_csv` and `write_jsonl` write; a bad prompts file is its line's sentence; Cancel,
closing the dialog and a killed server each end the run with no model server left running.
The test process never imports torch: the servers are child processes.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from app_helpers import run, until

from desktop.core.compare import (
    CompareCancel,
    CompareCancelled,
    compare_jobs,
    read_prompts,
    write_csv,
    write_jsonl,
)
from desktop.core.runtime import TrainerRuntime
from trainer.serve_protocol import GenerationSettings

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.qt_log_level_fail("CRITICAL")

JOB_ID = "20260101-000000-cmp1"
DEADLINE_S = 120.0
PROMPTS = ['{"prompt": "count on from 17"}', '{"prompt": "reverse: red cat blue"}']
# Greedy and seeded: the panel's run and the core's give the same answers.
SETTINGS = GenerationSettings(temperature=0.0, top_p=0.95, max_new_tokens=8, seed=0)


def _servers() -> list[psutil.Process]:
    """The model servers among this process's children (running, not zombies)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "serve" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("compare-panel") / "prompts.jsonl", PROMPTS)


@pytest.fixture(scope="module")
def expected(trained_chat_job: Path, prompts_file: Path) -> Any:
    """What the core's `compare_jobs` answers for the two prompts (the panel must agree)."""
    return compare_jobs(
        TrainerRuntime(),
        [(JOB_ID, trained_chat_job)],
        read_prompts(prompts_file),
        settings=SETTINGS,
    )


def _make_panel(qtbot: Any, job_dir: Path) -> Any:
    """The dialog on a completed job named "demo-tuned" in `job_dir`, selected."""
    from view_helpers import make_job

    from desktop.views.compare_panel import ComparePanel
    from desktop.views.operations import MessageBus, Operations
    from desktop.views.state import AppState

    state = AppState()
    state.job_added(make_job(JOB_ID, "demo-tuned", state="completed", job_dir=job_dir))
    dialog = ComparePanel(state, Operations(MessageBus()), TrainerRuntime)
    qtbot.addWidget(dialog)
    dialog.set_jobs([JOB_ID])
    dialog.temperature.setValue(SETTINGS.temperature)
    dialog.top_p.setValue(SETTINGS.top_p)
    dialog.max_new_tokens.setValue(SETTINGS.max_new_tokens)
    dialog.seed.setValue(0)
    dialog.ended = []
    dialog.run_finished.connect(dialog.ended.append)
    return dialog


@pytest.fixture
def panel(qtbot: Any, qloop: Any, trained_chat_job: Path) -> Any:
    """The dialog on the trained job; its run is cancelled and its operations closed after."""
    dialog = _make_panel(qtbot, trained_chat_job)
    yield dialog
    dialog.shutdown()
    qloop.run_until_complete(dialog._ops.close())


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow  # 7 s alone, up to ~30 s on two busy cores: a server start and the eval loss
def test_two_prompts_fill_the_table_as_compare_jobs_answers(
    panel: Any, qloop: Any, prompts_file: Path, expected: Any, tmp_path: Path
) -> None:
    from PySide6.QtCore import Qt

    rows, _ = expected
    model = panel.model

    async def body() -> None:
        panel.prompts_edit.setText(str(prompts_file))
        panel.eval_loss_check.setChecked(True)
        panel.run_button.click()
        assert not panel.run_button.isEnabled() and panel.cancel_button.isEnabled()
        await until(lambda: panel.ended, DEADLINE_S)
        assert panel.ended == ["done"], panel.status_label.text()
        headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(3)]
        assert (model.rowCount(), model.columnCount()) == (2, 3)
        assert headers == ["Prompt", "Base", "demo-tuned"]
        for number, row in enumerate(rows):
            cells = [model.full_text(model.index(number, c)) for c in range(3)]
            assert cells == [row.prompt, row.answers["base"], row.answers[JOB_ID]]
            assert all(cell.strip() for cell in cells)
            tip = model.data(model.index(number, 2), Qt.ItemDataRole.ToolTipRole)
            assert tip == row.answers[JOB_ID]
        assert any(r.answers["base"] != r.answers[JOB_ID] for r in rows)  # the adapter was on
        panel.table.setCurrentIndex(model.index(1, 2))
        assert panel.detail.toPlainText() == f"demo-tuned:\n{rows[1].answers[JOB_ID]}"
        # The eval loss line: the adapter learned the data.
        (loss,) = panel.losses
        assert loss.adapter_loss < loss.base_loss and loss.records == 32
        assert panel.losses_label.text().startswith("demo-tuned: eval loss base ")

        # Saved exactly as the CLI's writers write the core's rows.
        table, lines = tmp_path / "answers.csv", tmp_path / "answers.jsonl"
        for path in (table, lines):
            panel.save_to(str(path))
            await until(lambda p=path: "saved 2 prompt(s)" in panel.status_label.text(), 30)
            await until(lambda p=path: not panel._ops.is_running("compare: save"), 30)
        csv_text, jsonl_text = io.StringIO(newline=""), io.StringIO()
        write_csv(rows, csv_text)
        write_jsonl([*rows, loss], jsonl_text)
        assert table.read_bytes() == csv_text.getvalue().encode("utf-8")
        assert lines.read_text(encoding="utf-8") == jsonl_text.getvalue()
        assert not _servers()

    run(qloop, body())


def test_a_bad_prompts_file_is_its_lines_sentence(qtbot: Any, qloop: Any, tmp_path: Path) -> None:
    bad = _write(tmp_path / "prompts.jsonl", ['{"prompt": "hi"}', "{oops"])
    panel = _make_panel(qtbot, tmp_path)  # no model: the file fails before any server starts

    async def body() -> None:
        panel.prompts_edit.setText(str(bad))
        panel.run_button.click()
        await until(lambda: panel.ended, 30)
        sentence = panel.status_label.text()
        assert sentence.startswith(f"{bad}:2: not JSON") and sentence == panel.ended[0]
        assert panel.prompts_edit.text() == str(bad)  # nothing lost: fix the file, run again
        assert panel.run_button.isEnabled() and panel.model.rowCount() == 0
        assert not _servers()
        # A file that cannot be written is a sentence naming it.
        nowhere = tmp_path / "missing" / "answers.csv"
        panel.save_to(str(nowhere))
        await until(lambda: "cannot write" in panel.status_label.text(), 30)
        assert panel.status_label.text().startswith(f"{nowhere}: cannot write the results (")
        await panel._ops.close()

    run(qloop, body())


@pytest.mark.parametrize("how", ["cancel", "close", "kill"])
def test_a_run_ends_without_a_server_left(how: str, panel: Any, qloop: Any, tmp_path: Path) -> None:
    many = _write(tmp_path / "many.jsonl", [f'{{"prompt": "count on from {n}"}}' for n in range(9)])
    panel.max_new_tokens.setValue(400)

    async def body() -> None:
        panel.prompts_edit.setText(str(many))
        panel.show()
        panel.run_button.click()
        await until(lambda: "prompt 1/9 · job demo-tuned" in panel.status_label.text(), 120)
        (server,) = _servers()
        if how == "cancel":
            panel.cancel_button.click()
        elif how == "close":
            panel.close()
        else:
            os.kill(server.pid, signal.SIGKILL)
        await until(lambda: panel.ended, DEADLINE_S)
        if how == "kill":
            assert panel.ended == [
                "the model server was killed (SIGKILL); start the chat again to restart it"
            ]
        else:
            assert panel.ended == ["cancelled"]
        assert panel.status_label.text() == panel.ended[0]
        assert _gone(server)
        assert not _servers() and panel.run_button.isEnabled()
        assert panel.model.rowCount() == 0

    run(qloop, body())


def test_closed_while_its_prompts_are_read_it_starts_no_server(
    panel: Any, qloop: Any, prompts_file: Path
) -> None:
    async def body() -> None:
        panel.prompts_edit.setText(str(prompts_file))
        panel.show()
        panel.run_button.click()  # the file is read in a worker; its answer comes queued
        panel.close()
        await until(lambda: panel.ended, DEADLINE_S)
        assert panel.ended == ["cancelled"] and panel.status_label.text() == "cancelled"
        assert not _servers() and not panel.running

    run(qloop, body())


def test_cancel_from_another_thread_stops_compare_jobs(
    trained_chat_job: Path, prompts_file: Path
) -> None:
    """The core's hook: a cancel closes the server mid-answer; nothing keeps running."""
    cancel = CompareCancel()
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if line.endswith("prompt 1/3"):
            threading.Thread(target=cancel.cancel).start()
            deadline = time.monotonic() + 30
            while not cancel.cancelled and time.monotonic() < deadline:
                time.sleep(0.01)  # until the cancel is under way (it then closes the server)

    prompts = read_prompts(prompts_file)
    prompts.append(prompts[0])
    long = GenerationSettings(temperature=0.0, max_new_tokens=400)
    with pytest.raises(CompareCancelled, match="cancelled"):
        compare_jobs(
            TrainerRuntime(),
            [(JOB_ID, trained_chat_job)],
            prompts,
            settings=long,
            progress=progress,
            cancel=cancel,
        )
    assert lines[-1].endswith("prompt 1/3") and not _servers()


def test_the_chat_tab_opens_it_and_closing_the_window_ends_its_run(
    qtbot: Any, qloop: Any, home: Path, trained_chat_job: Path, prompts_file: Path
) -> None:
    import shutil

    from desktop.core.repair import _job_from_folder
    from desktop.core.store import DB_FILENAME, JobStore
    from desktop.models import Settings
    from desktop.views.app import build_window

    folder = home / "jobs" / JOB_ID
    shutil.copytree(trained_chat_job, folder, ignore=shutil.ignore_patterns("checkpoints"))
    job, _ = _job_from_folder(folder)
    with JobStore(home / DB_FILENAME) as store:
        store.add_job(job, "copied for the compare test")
    window = build_window(settings=Settings(poll_interval_s=0.25), check_runtime=False)
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        window.state.set_selected_job_ids([JOB_ID])
        window.chat_panel.compare_button.click()
        dialog = window.compare_dialog
        assert dialog is not None and dialog.isVisible()
        assert dialog.jobs == [(JOB_ID, job.name, folder)]
        assert f"<b>Jobs:</b> {job.name};" in dialog.jobs_label.text()
        window.state.set_selected_job_ids([])  # the open dialog follows the selection
        assert dialog.jobs == [] and not dialog.run_button.isEnabled()
        assert dialog.jobs_label.text() == "Select one or more completed jobs in the job table."
        window.state.set_selected_job_ids([JOB_ID])
        assert dialog.jobs == [(JOB_ID, job.name, folder)] and dialog.run_button.isEnabled()
        dialog.prompts_edit.setText(str(prompts_file))
        dialog.max_new_tokens.setValue(400)
        dialog.run_button.click()
        await until(lambda: "prompt 1/2 · job" in dialog.status_label.text(), 120)
        (server,) = _servers()
        window.close()  # blocks until the run's server is gone
        assert _gone(server) and not _servers()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())


def test_the_table_model_passes_the_qt_model_tester(qtmodeltester: Any, qtbot: Any) -> None:
    from PySide6.QtCore import Qt

    from desktop.core.compare import CompareRow
    from desktop.views.compare_panel import QtCompareTableModel
    from trainer.serve_protocol import ChatMessage

    long_answer = "line one\nline two " + "x" * 300
    rows = [
        CompareRow(
            prompt=prompt,
            messages=[ChatMessage(role="user", content=prompt)],
            reference=reference,
            answers={"base": base, "j1": tuned},
        )
        for prompt, reference, base, tuned in (
            ("count on from 3", "4 5 6", "", long_answer),
            ("reverse: a b", None, "b a", "b a"),
        )
    ]
    model = QtCompareTableModel()
    model.set_results(rows, [("j1", "first run")])
    qtmodeltester.check(model, force_py=True)
    titles = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert titles == ["Prompt", "Reference", "Base", "first run"]
    assert model.data(model.index(0, 1)) == "4 5 6" and model.data(model.index(1, 1)) == "(empty)"
    assert model.data(model.index(0, 2)) == "(empty)"  # an answer that ended at once
    shown = model.data(model.index(0, 3))
    assert shown.startswith("line one ⏎ line two xxx") and shown.endswith("…")
    assert len(shown) == 120
    assert model.data(model.index(0, 3), Qt.ItemDataRole.ToolTipRole) == long_answer


def test_eval_records_come_with_their_reference_answers(panel: Any, qloop: Any) -> None:
    from PySide6.QtCore import Qt

    async def body() -> None:
        panel.eval_radio.setChecked(True)
        panel.eval_count.setValue(2)
        panel.max_new_tokens.setValue(4)
        panel.run_button.click()
        await until(lambda: panel.ended, DEADLINE_S)
        assert panel.ended == ["done"], panel.status_label.text()
        model = panel.model
        titles = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(4)]
        assert titles == ["Prompt", "Reference", "Base", "demo-tuned"]
        assert model.rowCount() == 2 and panel.losses == []
        for number, row in enumerate(panel.rows):
            assert row.reference and model.full_text(model.index(number, 1)) == row.reference
            assert model.full_text(model.index(number, 0)) == row.prompt
        assert not _servers()

    run(qloop, body())
