"""The runs view: config differences and metrics of the selected runs, side by side
(pytest-qt, offscreen)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot
from view_helpers import make_job

from desktop.views.chart import export as chart_export
from desktop.views.chart.widget import LossChart
from desktop.views.runs_compare import differing_fields, flatten_config
from desktop.views.runs_view import FIXED_COLUMNS, RunsView, chart_tabs
from desktop.views.state import AppState
from trainer.config import TrainingConfig

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("does not support propagateSizeHints"),  # offscreen plugin
]


def _config(**sections: dict[str, Any]) -> TrainingConfig:
    values: dict[str, Any] = {
        "model": {"name_or_path": "org/tiny-model"},
        "dataset": {"path": "data/train.jsonl"},
    }
    for name, fields in sections.items():
        values.setdefault(name, {}).update(fields)
    return TrainingConfig.model_validate(values)


def _state() -> AppState:
    state = AppState()
    state.job_added(make_job("a", "alpha", state="completed", step=30, config=_config()))
    state.job_added(
        make_job(
            "b",
            "beta",
            state="completed",
            step=30,
            # Its config's run name differs too: the run column shows names, not a field.
            config=_config(training={"learning_rate": 5e-4}, lora={"r": 32}).model_copy(
                update={"name": "beta"}
            ),
        )
    )
    state.job_added(
        make_job(
            "c",
            "gamma",
            state="training",
            step=12,
            config=_config(training={"learning_rate": 5e-4}, lora={"r": 16}),
        )
    )
    for job_id, end in (("a", 0.9), ("b", 0.5), ("c", 1.4)):
        steps = np.arange(30.0)
        loss = np.linspace(2.0, end, 30)
        loss[10] = end - 0.2  # the best loss is not the last
        state.add_metric_arrays(job_id, "loss", steps, loss, steps)
        state.add_metric_arrays(job_id, "eval_loss", steps[::10], loss[::10] + 0.1, steps[::10])
    return state


def test_differing_fields_are_exactly_those_not_equal_in_every_config() -> None:
    a = flatten_config({"lora": {"r": 8, "alpha": 16}, "training": {"lr": 1e-4}})
    b = flatten_config({"lora": {"r": 8, "alpha": 32}, "training": {"lr": 1e-4}, "x": [1, 2]})
    assert a == {"lora.r": 8, "lora.alpha": 16, "training.lr": 1e-4}
    assert differing_fields([a, b]) == ["lora.alpha", "x"]  # x: missing from one
    assert differing_fields([a, a]) == [] and differing_fields([a]) == []


def test_the_view_lists_exactly_the_differing_fields_and_the_metrics(qtbot: QtBot) -> None:
    state = _state()
    view = RunsView(state)
    qtbot.addWidget(view)
    state.set_selected_job_ids(["a", "b"])
    # The differences come first, where a narrow table still shows them.
    assert view.model.header() == [
        "run",
        "lora.r",
        "training.learning_rate",
        *FIXED_COLUMNS[1:],
    ]
    state.set_selected_job_ids(["b", "c"])  # same learning rate: only r differs
    assert view.model.fields == ["lora.r"]
    assert view.summary_label.text() == "2 runs · 1 differing config field"
    state.set_selected_job_ids(["a", "b", "c"])
    rows = {row[0]: row for row in view.rows_shown()}
    header = view.model.header()
    col = header.index
    assert rows["alpha"][col("lora.r")] != rows["beta"][col("lora.r")] == 32
    assert rows["gamma"][col("state")] == "training" and rows["gamma"][col("step")] == 12
    for name, job_id in (("alpha", "a"), ("beta", "b"), ("gamma", "c")):
        loss = state.series(job_id, "loss")
        evals = state.series(job_id, "eval_loss")
        assert loss is not None and evals is not None
        assert rows[name][col("final loss")] == loss.value[-1]
        assert rows[name][col("best loss")] == loss.value.min() < loss.value[-1]
        assert rows[name][col("best eval loss")] == evals.value.min()
        assert rows[name][col("mean tokens/s")] is None  # not logged: shown as missing
    state.set_selected_job_ids(["a"])
    assert view.model.fields == [] and not view.overlay_button.isEnabled()
    assert "two or more" in view.summary_label.text()


def test_sorting_by_a_metric_and_the_csv_keeps_the_order(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _state()
    view = RunsView(state)
    qtbot.addWidget(view)
    state.set_selected_job_ids(["a", "b", "c"])
    best = view.model.header().index("final loss")
    view.table.sortByColumn(best, Qt.SortOrder.AscendingOrder)
    assert [row[0] for row in view.rows_shown()] == ["beta", "alpha", "gamma"]
    view.table.sortByColumn(best, Qt.SortOrder.DescendingOrder)
    assert [row[0] for row in view.rows_shown()] == ["gamma", "alpha", "beta"]
    target = tmp_path / "runs.csv"
    monkeypatch.setattr(
        chart_export.QFileDialog, "getSaveFileName", lambda *_a, **_k: (str(target), "")
    )
    view.csv_button.click()
    rows = list(csv.reader(target.open()))
    assert rows[0] == view.model.header()
    assert [r[0] for r in rows[1:]] == ["gamma", "alpha", "beta"]
    assert rows[1][rows[0].index("lora.r")] == "16"
    assert rows[1][rows[0].index("mean tokens/s")] == ""


def test_one_click_overlays_the_compared_runs_in_the_chart(qtbot: QtBot) -> None:
    state = _state()
    chart = LossChart(state, redraw_interval_ms=10)
    view = RunsView(state)
    tabs = chart_tabs(state, chart, view)
    qtbot.addWidget(tabs)
    state.set_selected_job_ids(["a", "b", "c"])
    tabs.setCurrentWidget(view)
    view.table.sortByColumn(view.model.header().index("final loss"), Qt.SortOrder.AscendingOrder)
    state.set_selected_job_ids(["a"])  # the person looked at one run meanwhile
    view.set_job_ids(["a", "b", "c"])
    view.overlay_button.click()
    assert tabs.currentWidget() is chart
    assert set(chart.job_ids) == {"a", "b", "c"}
    chart.redraw()
    for job_id in "abc":
        assert len(chart.plotted(job_id, "loss")[0]) == 30  # type: ignore[index]


def test_the_model_passes_the_qt_model_tester(qtmodeltester: Any, qtbot: QtBot) -> None:
    state = _state()
    view = RunsView(state)
    qtbot.addWidget(view)
    state.set_selected_job_ids(["a", "b", "c"])
    qtmodeltester.check(view.model, force_py=True)
