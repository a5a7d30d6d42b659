"""What the editor shows is what trains: every invalid field is an error by its on-screen label,
Start is disabled while any is left, one list shows them all and leads to each field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QFocusEvent
from PySide6.QtWidgets import QAbstractSpinBox, QApplication, QLineEdit, QWidget
from pytestqt.qtbot import QtBot

from desktop.core.config_io import load_preset
from desktop.core.errors import ConfigError
from desktop.models import Settings
from desktop.views.config_editor import ConfigEditor

pytest_plugins = ["app_fixtures"]

LR = "training.learning_rate"


@pytest.fixture
def editor(qtbot: QtBot, tmp_path: Path) -> ConfigEditor:
    widget = ConfigEditor(load_preset("demo-cpu", demo_dir=tmp_path / "demo"))
    qtbot.addWidget(widget)
    return widget


def _line_edit(widget: QWidget) -> QLineEdit:
    if isinstance(widget, QAbstractSpinBox):
        edit = widget.findChild(QLineEdit)
        assert edit is not None
        return edit
    assert isinstance(widget, QLineEdit)
    return widget


def _type(qtbot: QtBot, widget: QWidget, text: str) -> None:
    """Replace a field's text by typing it, as a person would."""
    edit = _line_edit(widget)
    edit.selectAll()
    qtbot.keyClick(edit, Qt.Key.Key_Delete)  # type: ignore[no-untyped-call]
    qtbot.keyClicks(edit, text)  # type: ignore[no-untyped-call]


def _leave(qtbot: QtBot, widget: QWidget) -> None:
    """Press Enter, then tab away, as a person would (Qt's spin box re-reads its text on both)."""
    assert isinstance(widget, QAbstractSpinBox)
    qtbot.keyClick(widget, Qt.Key.Key_Return)  # type: ignore[no-untyped-call]
    QApplication.sendEvent(widget, QFocusEvent(QEvent.Type.FocusOut, Qt.FocusReason.TabFocusReason))


# -- the editor alone ----------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["0", "-1e-4"])
def test_out_of_range_learning_rate_is_an_error_on_its_field_by_label(
    editor: ConfigEditor, qtbot: QtBot, typed: str
) -> None:
    assert editor.is_valid
    spin = editor.field_widget(LR)
    _type(qtbot, spin, typed)
    assert _line_edit(spin).text() == typed
    assert not editor.is_valid
    assert editor.field_error(LR) == f"Learning rate must be greater than 0; you typed {typed}"
    # The value the editor would hand on is the one typed, never the previous 0.005 ...
    assert editor.raw_values()["training"]["learning_rate"] == float(typed)
    with pytest.raises(ConfigError):
        editor.config()
    # ... and leaving the field keeps the text and the error (no silent revert).
    _leave(qtbot, spin)
    assert _line_edit(spin).text() == typed
    assert editor.field_error(LR) == f"Learning rate must be greater than 0; you typed {typed}"


def test_an_out_of_range_whole_number_is_kept_and_named_by_label(
    editor: ConfigEditor, qtbot: QtBot
) -> None:
    spin = editor.field_widget("lora.r")
    _type(qtbot, spin, "0")
    _leave(qtbot, spin)
    assert _line_edit(spin).text() == "0"
    assert editor.field_error("lora.r") == "Rank (r) must be at least 1; you typed 0"
    assert not editor.is_valid
    _type(qtbot, spin, "8")
    assert editor.is_valid and editor.config().lora.r == 8


def test_a_half_typed_number_is_an_error_not_the_previous_value(
    editor: ConfigEditor, qtbot: QtBot
) -> None:
    spin = editor.field_widget(LR)
    _type(qtbot, spin, "3e")
    _leave(qtbot, spin)
    assert _line_edit(spin).text() == "3e"
    assert editor.field_error(LR) == "Learning rate needs a number; you typed 3e"
    assert not editor.is_valid
    _type(qtbot, spin, "3e-4")
    assert editor.is_valid and editor.config().training.learning_rate == 3e-4


def _config_is_what_the_fields_show(editor: ConfigEditor) -> None:
    """A valid editor's config holds each number field's shown text; an invalid one yields none."""
    if not editor.is_valid:
        with pytest.raises(ConfigError):
            editor.config()
        return
    data = editor.config().model_dump()
    for path in editor.field_paths():
        widget = editor.field_widget(path)
        box = editor.set_box(path)
        if not isinstance(widget, QAbstractSpinBox) or (box is not None and not box.isChecked()):
            continue
        value: Any = data
        for part in path.split("."):
            value = value[part]
        assert float(_line_edit(widget).text()) == value, path


def test_the_config_is_always_what_the_fields_show(editor: ConfigEditor, qtbot: QtBot) -> None:
    _config_is_what_the_fields_show(editor)
    for path, typed in [(LR, "0"), (LR, "-1e-4"), (LR, "3e-4"), ("lora.r", "0"), ("lora.r", "12")]:
        _type(qtbot, editor.field_widget(path), typed)
        _config_is_what_the_fields_show(editor)
    assert editor.is_valid
    assert (editor.config().training.learning_rate, editor.config().lora.r) == (3e-4, 12)


def test_folding_advanced_keeps_what_was_typed(editor: ConfigEditor, qtbot: QtBot) -> None:
    editor.show()  # hiding a field needs it shown first
    editor.set_advanced_visible(True)
    spin = editor.field_widget("training.weight_decay")
    assert spin.isVisible()
    _type(qtbot, spin, "2")
    editor.set_advanced_visible(False)  # hides the field: Qt re-reads a hidden spin box's text
    assert _line_edit(spin).text() == "2"
    assert editor.field_error("training.weight_decay") == (
        "Weight decay must be at most 1; you typed 2"
    )
    assert not editor.is_valid


def test_a_cross_field_error_is_shown_once_by_label(editor: ConfigEditor, qtbot: QtBot) -> None:
    box = editor.set_box("training.eval_steps")
    assert box is not None
    box.click()
    problems = editor.problems()
    assert len(problems) == 1, problems
    text = problems[0].text
    assert "Evaluate every" in text and "no eval set" in text
    assert "training." not in text and "dataset." not in text
    assert problems[0].paths[0] == "training.eval_steps"
    # One error line under one field, however many fields the rule names.
    shown = [
        p
        for p in editor.field_paths()
        if editor.error_label(p).isVisibleTo(editor) and editor.error_label(p).text()
    ]
    assert shown == ["training.eval_steps"]


# -- the window ----------------------------------------------------------------------------------


def make_window() -> Any:
    from desktop.views.app import build_window

    return build_window(settings=Settings(poll_interval_s=0.25), check_runtime=False)


async def close(window: Any) -> None:
    window.close()
    await window.ops.close()
    await window.service.close()


def test_out_of_range_values_disable_start_and_are_listed_until_fixed(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        await until(lambda: window.start_button.isEnabled(), 20)
        spin = window.editor.field_widget(LR)
        for typed in ("0", "-1e-4"):
            _type(qtbot, spin, typed)
            _leave(qtbot, spin)
            message = f"Learning rate must be greater than 0; you typed {typed}"
            assert not window.start_button.isEnabled()
            assert message in window.start_button.toolTip()
            assert window.error_list.entries() == [message]
            assert window.error_list.isVisibleTo(window)
        # Two errors at once are listed at once.
        window.editor.set_box("training.eval_steps").click()
        assert len(window.error_list.entries()) == 2
        window.editor.set_box("training.eval_steps").click()
        # Fixing it: Start comes back, the list empties and hides, and the config Start would
        # launch holds the typed value.
        _type(qtbot, spin, "3e-4")
        assert window.start_button.isEnabled()
        assert window.error_list.entries() == []
        assert not window.error_list.isVisibleTo(window)
        assert window.editor.config().training.learning_rate == 3e-4
        await close(window)

    run(qloop, body())


def test_a_cross_field_error_is_listed_once_and_leads_to_its_field(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        window.show()
        await window.start()
        await until(lambda: window.start_button.isEnabled(), 20)
        window.editor.set_box("training.eval_steps").click()
        assert not window.start_button.isEnabled()
        entries = window.error_list.entries()
        assert len(entries) == 1 and "Evaluate every" in entries[0], entries
        assert "training.eval_steps" not in entries[0]
        spin = window.editor.field_widget("training.eval_steps")
        assert window.focusWidget() not in (spin, _line_edit(spin))
        qtbot.mouseClick(window.error_list.entry_button(0), Qt.MouseButton.LeftButton)
        await until(lambda: window.focusWidget() in (spin, _line_edit(spin)), 20)
        await close(window)

    run(qloop, body())


@pytest.mark.expect_log("cannot save an invalid config")
def test_a_validation_status_line_goes_once_the_field_is_fixed(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        await until(lambda: window.start_button.isEnabled(), 20)
        asked: list[str] = []
        # The file dialog is the edge: a valid config would ask for a path, and none is given.
        window.ask_path = lambda mode, caption, filters: asked.append(mode)
        spin = window.editor.field_widget(LR)
        _type(qtbot, spin, "0")
        window.save_config()
        assert asked == []
        status = window.statusBar().currentMessage()
        assert "cannot save an invalid config" in status
        assert "training." not in status and "Learning rate" in status
        _type(qtbot, spin, "1e-3")
        assert window.editor.is_valid
        assert window.statusBar().currentMessage() == ""
        await close(window)

    run(qloop, body())


@pytest.mark.expect_log("choose a dataset file first")
def test_the_preflight_without_a_dataset_names_the_field_by_label(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        _type(qtbot, window.editor.field_widget("dataset.path"), "")
        window.run_preflight()
        status = window.statusBar().currentMessage()
        assert "Dataset: choose a dataset file first" in status
        assert "dataset.path" not in status
        await close(window)

    run(qloop, body())
