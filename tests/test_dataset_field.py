"""The dataset path field is checked as it is typed: a path that does not exist, cannot be read,
is a folder or holds no known format is an error on the field (and Start is disabled with it);
a good file shows its guessed format and size under the field."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from PySide6.QtWidgets import QLineEdit

from desktop.models import Settings

pytest_plugins = ["app_fixtures"]


def make_window() -> Any:
    from desktop.views.app import build_window

    return build_window(settings=Settings(), check_runtime=False)


def _good_lines(n: int) -> list[str]:
    return [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"q{i}"},
                    {"role": "assistant", "content": f"a{i}"},
                ]
            }
        )
        for i in range(n)
    ]


def _type_path(qtbot: Any, window: Any, text: str) -> None:
    edit = window.editor.field_widget("dataset.path")
    assert isinstance(edit, QLineEdit)
    edit.selectAll()
    qtbot.keyClicks(edit, text)


def test_inspect_dataset_path_names_each_problem(tmp_path: Path) -> None:
    from desktop.core.dataset_path import inspect_dataset_path

    good = tmp_path / "train.jsonl"
    good.write_text("\n".join(_good_lines(321)) + "\n")
    assert inspect_dataset_path(str(good)).note == "JSONL, 321 lines"
    assert inspect_dataset_path(str(good)).error is None
    array = tmp_path / "records.json"
    array.write_text("[" + ",".join(_good_lines(3)) + "]")
    assert inspect_dataset_path(str(array)).note == "JSON array"
    missing = inspect_dataset_path(str(tmp_path / "nope.jsonl")).error
    assert missing is not None and "does not exist" in missing and "nope.jsonl" in missing
    folder = inspect_dataset_path(str(tmp_path)).error
    assert folder is not None and "is a folder" in folder
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x00\x01\x02 not data")
    unknown = inspect_dataset_path(str(binary)).error
    assert unknown is not None and "unknown format" in unknown
    hub = inspect_dataset_path("HuggingFaceH4/no_robots")
    assert hub.error is None and hub.note is not None and "Hub" in hub.note


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="needs POSIX non-root")
def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    from desktop.core.dataset_path import inspect_dataset_path

    locked = tmp_path / "locked.jsonl"
    locked.write_text("\n".join(_good_lines(2)))
    locked.chmod(0)
    try:
        error = inspect_dataset_path(str(locked)).error
    finally:
        locked.chmod(0o600)
    assert error is not None and "cannot be read" in error


def test_a_missing_dataset_path_is_a_field_error_before_start(
    qtbot: Any, qloop: Any, demo_home: Path, tmp_path: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(_good_lines(41)) + "\n")

    async def body() -> None:
        await window.start()
        await until(lambda: window.start_button.isEnabled(), 30)
        _type_path(qtbot, window, str(tmp_path / "missing.jsonl"))
        await until(lambda: window.editor.field_error("dataset.path"), 30)
        assert "does not exist" in (window.editor.field_error("dataset.path") or "")
        error_label = window.editor.findChild(object, "error:dataset.path")
        assert error_label is not None and not error_label.isHidden()
        assert "does not exist" in error_label.text()
        assert not window.start_button.isEnabled()
        assert "does not exist" in window.start_button.toolTip()
        # A folder is not a data file.
        _type_path(qtbot, window, str(tmp_path))
        await until(lambda: "is a folder" in (window.editor.field_error("dataset.path") or ""), 30)
        assert not window.start_button.isEnabled()
        # A good file: no error, its format and size under the field, Start enabled again.
        _type_path(qtbot, window, str(good))
        await until(lambda: window.editor.field_note("dataset.path") == "JSONL, 41 lines", 30)
        assert window.editor.field_error("dataset.path") is None
        await until(lambda: window.start_button.isEnabled(), 30)
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
