"""The dataset preflight: `trainer check-data --json` run in the background from the window,
shown with formats, problems by line (and their records), token lengths and a rendered example."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until

from desktop.core.data_preview import read_record
from desktop.models import Settings
from desktop.views.preflight import PreflightPanel, example_columns

pytest_plugins = ["app_fixtures"]

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"


def make_window() -> Any:
    from desktop.views.app import build_window

    return build_window(settings=Settings(), check_runtime=False)


def _with_dataset(window: Any, path: Path) -> None:
    window.load_preset("demo-cpu")
    config = window.editor.config()
    dataset = config.dataset.model_copy(update={"path": str(path), "format": "auto"})
    window.editor.set_config(config.model_copy(update={"dataset": dataset}))


@pytest.mark.slow
def test_preflight_of_the_demo_shows_rows_histogram_and_trained_tokens(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        window.run_preflight()
        panel = window.preflight_dialog().panel
        await until(lambda: panel.report is not None, 300)
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
    panel: PreflightPanel = window.preflight_dialog().panel
    report = panel.report
    assert report is not None and report.usable and report.format == "messages"
    assert "chat messages" in panel.summary_label.text()
    assert panel.examples_table.rowCount() == len(report.examples) > 0
    first = report.examples[0]["messages"]
    assert panel.examples_table.item(0, 2).text() == first[0]["content"]
    assert panel.examples_table.item(0, 3).text() == first[1]["content"]
    # The histogram holds every counted record; the max length is marked with its share cut.
    assert panel.bars is not None
    heights = panel.bars.opts["height"]
    assert report.token_stats is not None
    assert sum(heights) == report.token_stats.counted
    assert panel.max_length_line is not None and panel.max_length_line.value() == 64
    assert "cut at max length 64" in panel.tokens_label.text()
    # The rendered example marks the assistant's answer as trained, the prompt not.
    html = panel.rendered_view.toHtml()
    assert report.rendered_example is not None
    trained = [s.text for s in report.rendered_example.segments if s.trained]
    assert trained and first[1]["content"] in "".join(trained)
    assert "#cdeccd" in html


def test_preflight_lists_problems_by_line_and_shows_the_selected_record(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)
    _with_dataset(window, FIXTURES / "mixed_formats.jsonl")
    panel = window.preflight_dialog().panel

    async def body() -> None:
        window.run_preflight()
        await until(lambda: panel.report is not None, 300)
        assert panel.problem_lines() == [4, 6]
        panel.problems_table.selectRow(0)
        await until(lambda: "Say hi" in panel.record_view.toPlainText(), 30)
        panel.problems_table.selectRow(1)
        await until(lambda: '"completion": "y"' in panel.record_view.toPlainText(), 30)
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
    assert panel.record_view.toPlainText().startswith("line 6:")
    assert "mixed formats" in panel.problems_table.item(0, 1).text()
    assert "NOT usable" in panel.summary_label.text() or (
        panel.report is not None and panel.report.usable
    )


@pytest.mark.slow
def test_the_window_stays_responsive_while_a_big_file_is_checked(
    qtbot: Any, qloop: Any, demo_home: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.jsonl"
    line = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "x " * 200},
                {"role": "assistant", "content": "y"},
            ]
        }
    )
    with big.open("w") as fh:
        for _ in range(150_000):  # ~60 MB: long enough to watch the event loop meanwhile
            fh.write(line + "\n")
    window = make_window()
    qtbot.addWidget(window)
    _with_dataset(window, big)
    panel = window.preflight_dialog().panel
    gaps: list[float] = []

    async def body() -> None:
        window.run_preflight()
        last = time.monotonic()
        while panel.report is None:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            assert len(gaps) < 30_000, "the check did not finish"
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
    assert panel.report is not None and panel.report.records == 150_000
    assert len(gaps) > 10
    # The loop kept turning: no pause near a second while the child read the file.
    assert max(gaps) < 0.75, max(gaps)


def test_example_columns_normalise_every_format() -> None:
    assert example_columns(
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}
    ) == ("s", "u", "", 2)
    assert example_columns({"prompt": "p", "completion": "c"}) == ("", "p", "c", 2)


def test_read_record_streams_one_line(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"a": 1}\nnot json\n', encoding="utf-8")
    assert json.loads(read_record(data, 1)) == {"a": 1}
    assert read_record(data, 2) == "not json"
    assert "fewer than 5 lines" in read_record(data, 5)


def test_choosing_a_dataset_runs_the_preflight_lists_its_problems_and_offers_to_skip(
    qtbot: Any, qloop: Any, demo_home: Path, tmp_path: Path
) -> None:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"what is {i} plus one?"},
                    {"role": "assistant", "content": f"{i + 1}"},
                ]
            }
        )
        for i in range(40)
    ]
    lines.insert(16, '{"messages": [{"role": "user", "content": "broken"')
    data = tmp_path / "one_bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        await until(lambda: window.start_button.isEnabled(), 30)
        _with_dataset(window, data)  # chosen: no Preflight button pressed
        summary = window.config_actions.data_summary
        await until(lambda: summary.report is not None, 120)
        # Every problem is listed with its line, in the window, not cut in a status bar.
        assert summary.problem_texts() == [
            "line 17: invalid JSON: Expecting ',' delimiter (column 51)"
        ]
        assert not summary.isHidden() and not summary.problems_list.isHidden()
        assert "40 valid" in summary.summary_label.text()
        # Start is blocked with the reason until the person decides.
        assert not window.start_button.isEnabled()
        assert "line 17" in window.start_button.toolTip()
        assert not summary.skip_button.isHidden()
        assert summary.skip_button.text() == "Skip invalid records (1)"
        summary.skip_button.click()
        # The choice is a config field: recorded in the job's config.json, obeyed by the trainer.
        assert window.editor.config().dataset.skip_invalid_records is True
        await until(lambda: window.start_button.isEnabled(), 30)
        assert summary.skip_button.isHidden()
        assert "1 invalid record will be skipped" in summary.summary_label.text()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
