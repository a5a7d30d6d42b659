"""The job table model, its filter proxy and the table widget (pytest-qt, offscreen)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QBrush, QIcon, QImage
from pytestqt.qtbot import QtBot
from view_helpers import make_job

from desktop.models.job import ACTIVE_STATES, JobState, ProviderHandle
from desktop.views.job_table import (
    COLUMNS,
    JOB_ID_ROLE,
    PROGRESS_ROLE,
    Column,
    JobFilterProxy,
    JobTableView,
    QtJobTableModel,
    format_duration,
)
from desktop.views.state import AppState

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("does not support propagateSizeHints"),  # offscreen plugin
]

NOW = 1_700_000_000.0


def _texts(model: QtJobTableModel | JobFilterProxy, column: int) -> list[str]:
    return [model.index(r, column).data() for r in range(model.rowCount())]


def _exercise(state: AppState) -> None:
    """Rows added, changed and removed, as a JobService would."""
    state.job_added(make_job("a", "alpha"))
    state.job_added(make_job("b", "beta", provider="runpod", budget_usd=Decimal("10")))
    state.job_added(make_job("c", "gamma"))
    state.job_changed(
        make_job(
            "b",
            "beta",
            provider="runpod",
            state=JobState.TRAINING,
            step=5,
            total_steps=20,
            cost_usd=Decimal("1.5"),
            budget_usd=Decimal("10"),
        )
    )
    state.job_removed("a")
    state.job_added(make_job("d", "delta", state=JobState.FAILED))
    state.job_changed(make_job("c", "gamma", state=JobState.COMPLETED))
    state.job_removed("d")


def test_model_passes_the_model_tester_through_add_change_remove(qtmodeltester, qapp) -> None:  # type: ignore[no-untyped-def]
    state = AppState()
    model = QtJobTableModel(state, clock=lambda: NOW)
    state.job_added(make_job("z"))
    qtmodeltester.check(model, force_py=True)
    _exercise(state)
    assert _texts(model, Column.NAME) == ["run-z", "beta", "gamma"]


def test_proxy_passes_the_qt_model_tester_while_filtered_and_sorted(qtmodeltester, qapp) -> None:  # type: ignore[no-untyped-def]
    state = AppState()
    model = QtJobTableModel(state, clock=lambda: NOW)
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)
    proxy.sort(Column.NAME, Qt.SortOrder.DescendingOrder)
    state.job_added(make_job("z"))
    qtmodeltester.check(proxy)  # Qt's C++ tester: problems are Qt warnings, which fail the test
    proxy.set_state_filter(ACTIVE_STATES)
    _exercise(state)
    assert _texts(proxy, Column.NAME) == ["run-z", "beta"]
    proxy.set_state_filter(None)
    assert _texts(proxy, Column.NAME) == ["run-z", "gamma", "beta"]


def test_a_change_is_one_row_of_data_changed_never_a_reset(qtbot: QtBot) -> None:
    state = AppState()
    model = QtJobTableModel(state, clock=lambda: NOW)
    for job_id in "abc":
        state.job_added(make_job(job_id))
    resets: list[bool] = []
    changes: list[tuple[int, int, int, int]] = []
    model.modelReset.connect(lambda: resets.append(True))
    model.layoutChanged.connect(lambda: resets.append(True))
    model.dataChanged.connect(
        lambda tl, br, roles=(): changes.append((tl.row(), br.row(), tl.column(), br.column()))
    )
    inserted: list[tuple[int, int]] = []
    model.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))

    state.job_changed(make_job("b", state=JobState.TRAINING, step=1, total_steps=4))
    state.job_added(make_job("d"))

    assert changes == [(1, 1, 0, len(COLUMNS) - 1)]
    assert inserted == [(3, 3)]
    assert resets == []
    assert model.index(1, Column.STATE).data() == "training"
    assert model.index(1, Column.PROGRESS).data(PROGRESS_ROLE) == 25


def test_cells_show_what_a_researcher_needs(qapp) -> None:  # type: ignore[no-untyped-def]
    state = AppState()
    model = QtJobTableModel(state, clock=lambda: NOW)
    state.job_added(
        make_job(
            "cloud",
            "llama-qlora",
            provider="runpod",
            state=JobState.TRAINING,
            step=150,
            total_steps=600,
            last_loss=1.23456,
            best_eval_loss=1.5,
            eta_seconds=3725,
            started_at=NOW - 125,
            cost_usd=Decimal("2.345"),
            budget_usd=Decimal("20"),
            handle=ProviderHandle(provider="runpod", pod_id="p1", extra={"gpu_type": "A100 80GB"}),
            gpus_requested=1,
        )
    )
    state.job_added(
        make_job("cpu", "demo", state=JobState.COMPLETED, started_at=NOW - 90, finished_at=NOW - 30)
    )
    state.job_added(
        make_job(
            "gpu", "local-2", handle=ProviderHandle(provider="local", gpus=(0, 1)), gpus_requested=2
        )
    )
    row = [model.index(0, c).data() for c in range(model.columnCount())]
    assert row == [
        "llama-qlora",
        "runpod",
        "training",
        "25%",
        "150 / 600",
        "1.2346",
        "1.5000",
        "1h 02m",
        "2m 05s",
        "$2.35 / $20.00",
        "A100 80GB",
    ]
    done = [model.index(1, c).data() for c in range(model.columnCount())]
    assert done[Column.PROGRESS] == "100%" and done[Column.ELAPSED] == "1m 00s"
    assert done[Column.COST] == "—" and done[Column.GPU] == "CPU" and done[Column.ETA] == "—"
    assert model.index(2, Column.GPU).data() == "GPU 0,1"
    assert model.index(2, Column.PROGRESS).data(PROGRESS_ROLE) is None

    failed_color = QBrush(model.index(0, Column.STATE).data(Qt.ItemDataRole.ForegroundRole)).color()
    state.job_changed(state.job("cloud").model_copy(update={"state": JobState.FAILED}))  # type: ignore[union-attr]
    assert model.index(0, Column.STATE).data(Qt.ItemDataRole.ForegroundRole).color() != failed_color
    assert isinstance(model.index(0, Column.STATE).data(Qt.ItemDataRole.DecorationRole), QIcon)
    assert model.index(0, Column.NAME).data(JOB_ID_ROLE) == "cloud"
    assert model.index(0, 0, model.index(0, 0)).isValid() is False
    assert model.rowCount(model.index(0, 0)) == 0


def test_format_duration() -> None:
    assert [format_duration(s) for s in (None, -1, 0, 59.6, 61, 3600, 90000)] == [
        "—",
        "—",
        "0s",
        "1m 00s",
        "1m 01s",
        "1h 00m",
        "1d 01h",
    ]


def test_filter_by_state_and_by_text(qapp) -> None:  # type: ignore[no-untyped-def]
    state = AppState()
    model = QtJobTableModel(state, clock=lambda: NOW)
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)
    state.job_added(make_job("1", "llama lora", state=JobState.TRAINING))
    state.job_added(make_job("2", "mistral full", provider="runpod", state=JobState.FAILED))
    state.job_added(make_job("3", "llama qlora", state=JobState.COMPLETED))

    proxy.set_state_filter({JobState.FAILED, JobState.COMPLETED})
    assert _texts(proxy, Column.NAME) == ["mistral full", "llama qlora"]
    proxy.set_text_filter("LLAMA")
    assert _texts(proxy, Column.NAME) == ["llama qlora"]
    proxy.set_state_filter(None)
    assert _texts(proxy, Column.NAME) == ["llama lora", "llama qlora"]
    proxy.set_text_filter("runpod failed")  # every word must match (target and state)
    assert _texts(proxy, Column.NAME) == ["mistral full"]
    proxy.set_text_filter("")
    # A job leaving the filtered states disappears from the proxy on its own.
    proxy.set_state_filter(ACTIVE_STATES)
    assert _texts(proxy, Column.NAME) == ["llama lora"]
    state.job_changed(state.job("1").model_copy(update={"state": JobState.CANCELLED}))  # type: ignore[union-attr]
    assert proxy.rowCount() == 0


def test_sorting_is_numeric_not_textual(qapp) -> None:  # type: ignore[no-untyped-def]
    state = AppState()
    model = QtJobTableModel(state, clock=lambda: NOW)
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)
    for job_id, loss in (("a", 10.5), ("b", 9.25), ("c", None), ("d", 100.0)):
        state.job_added(make_job(job_id, last_loss=loss))
    proxy.sort(Column.LOSS, Qt.SortOrder.AscendingOrder)
    assert [proxy.index(r, 0).data(JOB_ID_ROLE) for r in range(4)] == ["b", "a", "d", "c"]


def _menu_actions(view: JobTableView, ids: list[str]) -> dict[str, bool]:
    menu = view.context_menu(ids)
    return {a.objectName(): a.isEnabled() for a in menu.actions() if a.objectName()}


def test_context_menu_enables_actions_by_state_and_emits_job_ids(qtbot: QtBot) -> None:
    state = AppState()
    view = JobTableView(state, clock=lambda: NOW)
    qtbot.addWidget(view)
    state.job_added(make_job("run", state=JobState.TRAINING))
    state.job_added(make_job("bad", state=JobState.FAILED))
    state.job_added(make_job("ok", state=JobState.COMPLETED))

    assert _menu_actions(view, ["run"]) == {
        "cancel": True,
        "resume": False,
        "duplicate": True,
        "open_output": True,
        "export": False,
        "show_log": True,
        "delete": False,
    }
    assert _menu_actions(view, ["bad"])["resume"] is True
    assert _menu_actions(view, ["bad"])["cancel"] is False
    assert _menu_actions(view, ["ok"]) == {
        "cancel": False,
        "resume": False,
        "duplicate": True,
        "open_output": True,
        "export": True,
        "show_log": True,
        "delete": True,
    }
    several = _menu_actions(view, ["run", "bad", "ok"])
    assert several["duplicate"] is False and several["delete"] is False
    assert several["export"] is False and _menu_actions(view, ["bad"])["export"] is False
    assert several["cancel"] and several["resume"]

    cancelled: list[str] = []
    deleted: list[str] = []
    view.cancel_requested.connect(cancelled.append)
    view.delete_requested.connect(deleted.append)
    menu = view.context_menu(["run", "bad", "ok"])
    next(a for a in menu.actions() if a.objectName() == "cancel").trigger()
    assert cancelled == ["run"]  # only the active one
    menu = view.context_menu(["bad", "ok"])
    next(a for a in menu.actions() if a.objectName() == "delete").trigger()
    assert deleted == ["bad", "ok"]
    with qtbot.waitSignal(view.duplicate_requested) as blocker:
        next(
            a for a in view.context_menu(["ok"]).actions() if a.objectName() == "duplicate"
        ).trigger()
    assert blocker.args == ["ok"]
    with qtbot.waitSignal(view.export_requested) as blocker:
        next(a for a in view.context_menu(["ok"]).actions() if a.objectName() == "export").trigger()
    assert blocker.args == ["ok"]


def test_selecting_rows_selects_jobs_in_app_state(qtbot: QtBot) -> None:
    state = AppState()
    view = JobTableView(state, clock=lambda: NOW)
    qtbot.addWidget(view)
    for job_id in "abc":
        state.job_added(make_job(job_id))
    with qtbot.waitSignal(state.selection_changed):
        view.select_job_ids(["c", "a"])
    assert state.selected_job_ids == ("a", "c")
    assert view.selected_job_ids() == ["a", "c"]
    view.table.selectRow(1)
    assert state.selected_job_ids == ("b",)
    # Filtering the selected row away drops it from the selection.
    view.text_edit.setText("run-a")
    assert state.selected_job_ids == ()
    view.text_edit.setText("")
    view.state_combo.setCurrentIndex(view.state_combo.findText("Failed"))
    assert view.proxy.rowCount() == 0
    view.state_combo.setCurrentIndex(0)
    assert view.proxy.rowCount() == 3


def test_double_click_asks_for_the_log(qtbot: QtBot) -> None:
    state = AppState()
    view = JobTableView(state, clock=lambda: NOW)
    qtbot.addWidget(view)
    state.job_added(make_job("a"))
    with qtbot.waitSignal(view.show_log_requested) as blocker:
        view.table.doubleClicked.emit(view.proxy.index(0, 0))
    assert blocker.args == ["a"]


def test_table_paints_with_progress_bars(qtbot: QtBot) -> None:
    state = AppState()
    view = JobTableView(state, clock=lambda: NOW)
    qtbot.addWidget(view)
    view.resize(1000, 200)
    state.job_added(
        make_job("a", state=JobState.TRAINING, step=50, total_steps=100, started_at=NOW - 10)
    )
    state.job_added(make_job("b"))
    image = QImage(view.size(), QImage.Format.Format_ARGB32)
    view.render(image)
    rect = view.table.visualRect(view.proxy.index(0, Column.PROGRESS))
    origin = view.table.viewport().mapTo(view, rect.topLeft())
    colors = {
        image.pixelColor(origin.x() + x, origin.y() + rect.height() // 2).name()
        for x in range(4, rect.width() - 4)
    }
    assert len(colors) > 2  # a bar and its text, not a blank cell


def test_elapsed_ticks_only_while_a_job_is_active(qtbot: QtBot) -> None:
    now = [NOW]
    state = AppState()
    model = QtJobTableModel(state, clock=lambda: now[0])
    state.job_added(make_job("a", state=JobState.TRAINING, started_at=NOW - 5))
    assert model._tick.isActive()
    now[0] += 60
    with qtbot.waitSignal(model.dataChanged, timeout=3000):
        pass
    assert model.index(0, Column.ELAPSED).data() == "1m 05s"
    state.job_changed(
        state.job("a").model_copy(
            update={
                "state": JobState.COMPLETED,  # type: ignore[union-attr]
                "finished_at": now[0],
            }
        )
    )
    assert not model._tick.isActive()
    assert model.index(0, Column.ELAPSED).data() == "1m 05s"
    assert QModelIndex().isValid() is False


def test_a_failed_row_reads_red_with_its_reason_and_its_bar_stops(qtbot: QtBot) -> None:
    from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

    from desktop.views.job_model import ENDED_ROLE, STATE_COLORS

    state = AppState()
    view = JobTableView(state, clock=lambda: NOW)
    qtbot.addWidget(view)
    state.job_added(make_job("a", "alpha", state=JobState.TRAINING, step=47, total_steps=100))
    progress = view.proxy.index(0, Column.PROGRESS)
    option = QStyleOptionViewItem()
    option.state = QStyle.StateFlag.State_Enabled
    assert progress.data(ENDED_ROLE) is False
    assert (
        view.progress_delegate.bar_option(option, progress).state & QStyle.StateFlag.State_Enabled
    )
    reason = "the trainer was killed by SIGKILL (signal 9)\nexit code -9"
    state.job_changed(
        make_job("a", "alpha", state=JobState.FAILED, step=47, total_steps=100, state_reason=reason)
    )
    assert view.proxy.index(0, Column.STATE).data() == (
        "failed: the trainer was killed by SIGKILL (signal 9)"
    )
    red = STATE_COLORS[JobState.FAILED]
    for column in range(len(COLUMNS)):
        brush = view.proxy.index(0, column).data(Qt.ItemDataRole.ForegroundRole)
        assert isinstance(brush, QBrush) and brush.color().name() == red, COLUMNS[column]
    assert progress.data(ENDED_ROLE) is True
    bar = view.progress_delegate.bar_option(option, progress)
    assert not bar.state & QStyle.StateFlag.State_Enabled
    assert bar.progress == 47 and bar.text == "47%"
    # A completed job's bar is full, ended too; its state is plain.
    state.job_changed(make_job("a", "alpha", state=JobState.COMPLETED, step=100, total_steps=100))
    assert view.proxy.index(0, Column.STATE).data() == "completed"
    assert view.progress_delegate.bar_option(option, progress).text == "100%"
