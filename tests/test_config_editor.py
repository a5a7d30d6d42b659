"""The schema-generated config editor: round trip through the widgets, errors on their fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QWidget,
)
from pytestqt.qtbot import QtBot

from desktop.core.config_io import export_config, import_config, load_preset
from desktop.core.errors import ConfigError
from desktop.core.memory_fit import estimate_for_config, read_model_config
from desktop.views.config_editor import ConfigEditor
from desktop.views.memory_badge import MemoryFitBadge
from trainer.config import TrainingConfig

pytestmark = pytest.mark.qt_log_level_fail("WARNING")


@pytest.fixture
def editor(qtbot: QtBot, tmp_path: Path) -> ConfigEditor:
    widget = ConfigEditor(load_preset("demo-cpu", demo_dir=tmp_path / "demo"))
    qtbot.addWidget(widget)
    return widget


def _retype(qtbot: QtBot, edit: QWidget, text: str) -> None:
    """Replace a line edit's text by typing, as a person would."""
    assert isinstance(edit, QLineEdit)
    edit.selectAll()
    qtbot.keyClick(edit, Qt.Key.Key_Delete)  # type: ignore[no-untyped-call]
    qtbot.keyClicks(edit, text)  # type: ignore[no-untyped-call]


def test_widgets_follow_the_schema(editor: ConfigEditor) -> None:
    r = editor.field_widget("lora.r")
    assert isinstance(r, QSpinBox) and (r.minimum(), r.maximum()) == (1, 1024)
    split = editor.field_widget("dataset.eval_split")
    assert isinstance(split, QDoubleSpinBox) and split.minimum() > 0 and split.maximum() < 0.5
    method = editor.field_widget("method")
    assert isinstance(method, QComboBox)
    assert [method.itemText(i) for i in range(method.count())] == ["lora", "qlora", "full"]
    assert isinstance(editor.field_widget("dataset.packing"), QCheckBox)
    assert isinstance(editor.field_widget("model.name_or_path"), QLineEdit)
    assert "Hugging Face Hub id" in editor.field_widget("model.name_or_path").toolTip()
    assert editor.set_box("training.max_steps") is not None  # int | None has a "set" box
    assert "schema_version" not in editor.field_paths()
    assert editor.launch_target() == "local"


def test_round_trip_preset_edit_export_import(
    editor: ConfigEditor, qtbot: QtBot, tmp_path: Path
) -> None:
    assert editor.is_valid
    _retype(qtbot, editor.field_widget("name"), "my-run")
    editor.field_widget("lora.r").setValue(32)  # type: ignore[attr-defined]
    editor.field_widget("training.learning_rate").setValue(1e-4)  # type: ignore[attr-defined]
    editor.field_widget("training.lr_scheduler").setCurrentText("cosine")  # type: ignore[attr-defined]
    editor.field_widget("dataset.packing").setChecked(True)  # type: ignore[attr-defined]
    _retype(qtbot, editor.field_widget("lora.target_modules"), "q_proj, v_proj")
    editor.set_box("training.max_steps").setChecked(False)  # type: ignore[union-attr]
    editor.field_widget("training.num_epochs").setValue(2.5)  # type: ignore[attr-defined]
    assert editor.is_valid, editor.errors()

    edited = editor.config()
    assert edited.name == "my-run" and edited.lora.r == 32
    assert edited.training.learning_rate == 1e-4 and edited.training.lr_scheduler == "cosine"
    assert edited.dataset.packing and edited.lora.target_modules == ["q_proj", "v_proj"]
    assert edited.training.max_steps is None and edited.training.num_epochs == 2.5

    for suffix in (".json", ".yaml"):
        path = export_config(edited, tmp_path / f"edited{suffix}")
        loaded = import_config(path)
        assert loaded == edited
        other = ConfigEditor(load_preset("full-1b"))
        qtbot.addWidget(other)
        other.set_config(loaded)
        assert other.config() == edited


def test_every_preset_survives_the_editor(qtbot: QtBot, tmp_path: Path) -> None:
    from desktop.core.config_io import list_presets

    editor = ConfigEditor()
    qtbot.addWidget(editor)
    assert not editor.is_valid  # no model, no dataset yet
    assert editor.field_error("model.name_or_path") == "required"
    for info in list_presets():
        cfg = load_preset(info.name, demo_dir=tmp_path)
        editor.set_config(cfg)
        assert editor.config() == cfg, info.name


def test_eval_steps_without_eval_set_is_shown_on_that_field(
    editor: ConfigEditor, qtbot: QtBot
) -> None:
    with qtbot.waitSignal(editor.validity_changed) as blocker:
        editor.set_box("training.eval_steps").click()  # type: ignore[union-attr]
    assert blocker.args == [False]
    assert not editor.is_valid
    error = editor.field_error("training.eval_steps")
    assert error is not None and "no eval set" in error
    label = editor.findChild(type(editor.general_error_label), "error:training.eval_steps")
    assert label is not None and label.isVisibleTo(editor) and "no eval set" in label.text()
    assert editor.field_widget("training.eval_steps").property("invalid") is True
    assert editor.field_error("lora.r") is None
    with pytest.raises(ConfigError, match=r"training\.eval_steps"):
        editor.config()

    # Giving an eval fraction fixes it.
    with qtbot.waitSignal(editor.validity_changed) as blocker:
        editor.set_box("dataset.eval_split").setChecked(True)  # type: ignore[union-attr]
    assert blocker.args == [True]
    assert editor.field_error("training.eval_steps") is None
    assert editor.field_widget("training.eval_steps").property("invalid") is False


def test_bad_typed_value_is_shown_on_that_field(editor: ConfigEditor, qtbot: QtBot) -> None:
    edit = editor.field_widget("output.hub_repo_id")
    with qtbot.waitSignal(editor.validity_changed) as blocker:
        _retype(qtbot, edit, "not a repo id")
    assert blocker.args == [False]
    error = editor.field_error("output.hub_repo_id")
    assert error is not None and "pattern" in error
    assert set(editor.errors()) == {"output.hub_repo_id"}
    _retype(qtbot, edit, "org/name")
    assert editor.is_valid

    _retype(qtbot, editor.field_widget("lora.target_modules"), "")
    assert "at least one module" in (editor.field_error("lora.target_modules") or "")
    _retype(qtbot, editor.field_widget("lora.target_modules"), "all-linear")
    assert editor.is_valid


def test_spin_boxes_refuse_out_of_range_typing(editor: ConfigEditor, qtbot: QtBot) -> None:
    spin = editor.field_widget("training.per_device_batch_size")
    assert isinstance(spin, QSpinBox)
    spin.selectAll()
    qtbot.keyClicks(spin, "99999")  # type: ignore[no-untyped-call]
    spin.interpretText()
    assert 1 <= spin.value() <= 4096
    assert editor.config().training.per_device_batch_size == spin.value()


def test_cross_field_error_names_both_fields(editor: ConfigEditor) -> None:
    editor.field_widget("method").setCurrentText("qlora")  # type: ignore[attr-defined]
    assert not editor.is_valid
    assert "needs a CUDA GPU" in (editor.field_error("method") or "")
    assert "needs a CUDA GPU" in (editor.field_error("hardware.device") or "")
    assert editor.section("Quantisation").isEnabled()
    editor.field_widget("hardware.device").setCurrentText("cuda")  # type: ignore[attr-defined]
    assert editor.is_valid
    editor.field_widget("method").setCurrentText("full")
    assert not editor.section("LoRA").isEnabled()


def test_file_picker_returns_a_path_into_the_field(qtbot: QtBot, tmp_path: Path) -> None:
    asked: list[str] = []

    def picker(kind: str, caption: str, current: str) -> str | None:
        asked.append(kind)
        return str(tmp_path / "other.jsonl")

    editor = ConfigEditor(load_preset("full-1b"), path_picker=picker)
    qtbot.addWidget(editor)
    with qtbot.waitSignal(editor.config_changed):
        button = editor.findChild(QToolButton, "browse:dataset.path")
        assert button is not None
        button.click()
    assert editor.config().dataset.path == str(tmp_path / "other.jsonl")
    assert asked == ["file"]


def test_raw_values_hold_invalid_input(editor: ConfigEditor, qtbot: QtBot) -> None:
    _retype(qtbot, editor.field_widget("model.name_or_path"), "")
    raw = editor.raw_values()
    assert raw["model"]["name_or_path"] == ""
    assert editor.field_error("model.name_or_path") == "required"
    with pytest.raises(ConfigError):
        editor.config()
    assert TrainingConfig.model_fields.keys() >= raw.keys()


def test_memory_badge_shows_fit_against_the_gpu(qtbot: QtBot) -> None:
    badge = MemoryFitBadge("RTX 4090 24 GB")
    qtbot.addWidget(badge)
    assert badge.level() is None and "?" in badge.text()
    cfg = load_preset("lora-8b-24gb")
    est = estimate_for_config(cfg, read_model_config(cfg.model.name_or_path))
    badge.set_estimate(est)
    assert badge.text() == f"fit: {est.total_gb:.1f} / 24 GB"
    assert badge.level() == "green" and "Assumptions" in badge.toolTip()
    with qtbot.waitSignal(badge.gpu_changed) as blocker:
        badge.set_gpu("T4 16 GB")
    assert blocker.args == ["T4 16 GB", 16.0]
    assert badge.level() == "red" and "does not fit" in badge.toolTip()
