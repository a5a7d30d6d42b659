"""The training-config editor, generated from the `TrainingConfig` schema.

Every widget comes from a pydantic field: its label from `title`, its tooltip from
`description`, its range from `ge`/`le`/`gt`/`lt`, combo choices from `Literal[...]`. Validation
is pydantic's own: after each edit the whole config is validated and every error is shown on the
field it names (red border and a line under the field), cross-field rules included. The editor
never reads or writes files; a file picker only returns a path (and can be replaced, for tests).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.views.operations import ConfigError
from trainer.config import TrainingConfig, format_validation_error

__all__ = ["SECTIONS", "ConfigEditor", "PathPicker"]

#: (kind, caption, current value) -> chosen path or None; kind is "dir" or "file".
PathPicker = Callable[[str, str, str], str | None]

#: Section title -> the top-level fields it shows (nested models are expanded).
SECTIONS: dict[str, tuple[str, ...]] = {
    "Model": ("name", "model"),
    "Method": ("method",),
    "LoRA": ("lora",),
    "Quantisation": ("quantization",),
    "Dataset": ("dataset",),
    "Training": ("training",),
    "Output": ("output",),
    "Hardware": ("hardware",),
}

#: Rarely changed fields, folded under "Advanced" in their section.
ADVANCED: frozenset[str] = frozenset(
    {
        "model.revision",
        "model.attn_implementation",
        "model.trust_remote_code",
        "lora.use_rslora",
        "lora.use_dora",
        "quantization.double_quant",
        "quantization.compute_dtype",
        "dataset.split",
        "training.weight_decay",
        "training.max_grad_norm",
        "training.seed",
        "training.save_total_limit",
        "training.early_stopping_patience",
        "training.dataloader_num_workers",
        "training.dataloader_prefetch_factor",
        "training.pretokenize",
        "output.hub_private",
        "hardware.cpu_processes",
        "hardware.strategy",
    }
)
_ADVANCED_PREFIXES = ("dataset.field_map.",)

#: Fields edited as a path, with the picker kind.
PATH_FIELDS: dict[str, str] = {
    "model.name_or_path": "dir",
    "dataset.path": "file",
    "dataset.eval_path": "file",
}

_HIDDEN = frozenset({"schema_version"})
_SCIENTIFIC = frozenset({"training.learning_rate"})
_INT32_MAX = 2**31 - 1
_INVALID_STYLE = "border: 1px solid #d9534f; border-radius: 2px;"
_DATA_FILTER = "Datasets (*.jsonl *.jsonl.gz *.json *.csv *.parquet *.txt);;All files (*)"


def _default_picker(parent: QWidget) -> PathPicker:
    def pick(kind: str, caption: str, current: str) -> str | None:
        if kind == "dir":
            chosen = QFileDialog.getExistingDirectory(parent, caption, current)
        else:
            chosen, _ = QFileDialog.getOpenFileName(parent, caption, current, _DATA_FILTER)
        return chosen or None

    return pick


@dataclass(frozen=True)
class _Bounds:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False


def _bounds(info: FieldInfo) -> _Bounds:
    lo = hi = None
    lo_open = hi_open = False
    for m in info.metadata:
        if getattr(m, "ge", None) is not None:
            lo = m.ge
        if getattr(m, "gt", None) is not None:
            lo, lo_open = m.gt, True
        if getattr(m, "le", None) is not None:
            hi = m.le
        if getattr(m, "lt", None) is not None:
            hi, hi_open = m.lt, True
    return _Bounds(lo, hi, lo_open, hi_open)


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)) and len(args) == 1:
            return args[0], True
    return annotation, False


class _NumberSpinBox(QDoubleSpinBox):
    """A float spin box that shows values compactly (0.05, 2e-05) and accepts 1e-4 typed in.

    With `multiplicative`, the arrows double or halve the value (learning rates live on a log
    scale); with `integer`, it holds whole numbers past QSpinBox's 32-bit range.
    """

    def __init__(self, multiplicative: bool = False, integer: bool = False) -> None:
        super().__init__()
        self._multiplicative = multiplicative
        self._integer = integer
        self.setDecimals(0 if integer else 10)

    def textFromValue(self, val: float, /) -> str:
        """Compact text: no trailing zeros, exponent for small values."""
        return str(round(val)) if self._integer else f"{val:.8g}"

    def valueFromText(self, text: str, /) -> float:
        """Parse plain or scientific notation."""
        try:
            return float(text.strip())
        except ValueError:
            return self.value()

    def validate(self, input: str, pos: int, /) -> tuple[QValidator.State, str, int]:
        """Acceptable when the number is in range; partial numbers are intermediate."""
        text = input.strip()
        try:
            value = float(text)
        except ValueError:
            ok = re.fullmatch(r"[0-9]*\.?[0-9]*([eE][+-]?[0-9]*)?|[+-]", text) is not None
            return (QValidator.State.Intermediate if ok else QValidator.State.Invalid, input, pos)
        if self._integer and not value.is_integer():
            return (QValidator.State.Invalid, input, pos)
        if self.minimum() <= value <= self.maximum():
            return (QValidator.State.Acceptable, input, pos)
        return (QValidator.State.Intermediate, input, pos)

    def stepBy(self, steps: int, /) -> None:
        """Double/halve in multiplicative mode, else the usual linear step."""
        if self._multiplicative:
            self.setValue(self.value() * (2.0**steps))
        else:
            super().stepBy(steps)


class _Field:
    """One schema field: its input widget, an optional "set" box, and an error line."""

    def __init__(
        self, path: str, info: FieldInfo, on_change: Callable[[], None], picker: PathPicker
    ) -> None:
        self.path = path
        self.info = info
        self._on_change = on_change
        self._picker = picker
        inner, self.optional = _split_optional(info.annotation)
        self.title = info.title or path.rsplit(".", 1)[-1]
        self.kind, self.input = self._make_input(inner, info)
        self.input.setObjectName(f"field:{path}")
        tooltip = info.description or ""
        self.label = QLabel(self.title)
        self.label.setToolTip(tooltip)
        self.input.setToolTip(tooltip)
        self.set_box: QCheckBox | None = None

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        if self.optional and self.kind in ("int", "float"):
            self.set_box = QCheckBox()
            self.set_box.setObjectName(f"set:{path}")
            self.set_box.setToolTip(f"Set {self.title}; unchecked means not set.")
            self.set_box.toggled.connect(self._on_set_box_toggled)
            row.addWidget(self.set_box)
            self.input.setEnabled(False)
        row.addWidget(self.input, 1)
        if path in PATH_FIELDS:
            self.browse = QToolButton()
            self.browse.setText("…")
            self.browse.setObjectName(f"browse:{path}")
            self.browse.setToolTip(
                "Choose a folder" if PATH_FIELDS[path] == "dir" else "Choose a file"
            )
            self.browse.clicked.connect(self._on_browse_clicked)
            row.addWidget(self.browse)
        self.error_label = QLabel()
        self.error_label.setObjectName(f"error:{path}")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c9302c;")
        self.error_label.setVisible(False)
        self.error_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        column = QVBoxLayout()
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addLayout(row)
        column.addWidget(self.error_label)
        self.container = QWidget()
        self.container.setLayout(column)
        self.error: str | None = None

    # -- construction ----------------------------------------------------------------------

    def _make_input(self, inner: Any, info: FieldInfo) -> tuple[str, QWidget]:
        if self.path == "lora.target_modules":
            edit = QLineEdit()
            edit.setPlaceholderText("all-linear, or q_proj, k_proj, v_proj, o_proj")
            edit.textEdited.connect(lambda _t: self._on_change())
            return "modules", edit
        if typing.get_origin(inner) is Literal:
            combo = QComboBox()
            for choice in typing.get_args(inner):
                combo.addItem(str(choice), choice)
            combo.currentIndexChanged.connect(lambda _i: self._on_change())
            return "choice", combo
        if inner is bool:
            box = QCheckBox()
            box.toggled.connect(lambda _b: self._on_change())
            return "bool", box
        if inner in (int, float):
            b = _bounds(info)
            big = inner is int and (
                (b.hi is not None and b.hi > _INT32_MAX)
                or (b.lo is not None and b.lo < -_INT32_MAX)
            )
            spin: QSpinBox | QDoubleSpinBox
            if inner is int and not big:
                spin = QSpinBox()
                lo = int(b.lo) + (1 if b.lo_open else 0) if b.lo is not None else -_INT32_MAX
                hi = int(b.hi) - (1 if b.hi_open else 0) if b.hi is not None else _INT32_MAX
                spin.setRange(lo, hi)
            else:
                spin = _NumberSpinBox(multiplicative=self.path in _SCIENTIFIC, integer=inner is int)
                eps = 1.0 if inner is int else (1e-9 if self.path in _SCIENTIFIC else 1e-3)
                lo_f = (float(b.lo) + (eps if b.lo_open else 0.0)) if b.lo is not None else -1e18
                hi_f = (float(b.hi) - (eps if b.hi_open else 0.0)) if b.hi is not None else 1e18
                spin.setRange(lo_f, hi_f)
                if inner is float:
                    spin.setSingleStep(0.01 if hi_f <= 1.0 else 0.5)
            spin.setKeyboardTracking(True)
            spin.valueChanged.connect(lambda _v: self._on_change())
            return ("int" if inner is int else "float"), spin
        edit = QLineEdit()
        if self.optional:
            edit.setPlaceholderText("not set")
        edit.textEdited.connect(lambda _t: self._on_change())
        return "text", edit

    # -- values ----------------------------------------------------------------------------

    def value(self) -> Any:
        """The raw value the widget holds (None when an optional field is not set)."""
        w = self.input
        if self.set_box is not None and not self.set_box.isChecked():
            return None
        if self.kind == "modules":
            assert isinstance(w, QLineEdit)
            text = w.text().strip()
            if text == "all-linear":
                return "all-linear"
            return [] if not text else [part.strip() for part in text.split(",")]
        if self.kind == "choice":
            assert isinstance(w, QComboBox)
            return w.currentData()
        if self.kind == "bool":
            assert isinstance(w, QCheckBox)
            return w.isChecked()
        if self.kind == "int":
            assert isinstance(w, QSpinBox | QDoubleSpinBox)
            return round(w.value())
        if self.kind == "float":
            assert isinstance(w, QDoubleSpinBox)
            return float(f"{w.value():.10g}")
        assert isinstance(w, QLineEdit)
        text = w.text()
        if self.optional and not text.strip():
            return None
        return text

    def set_value(self, value: Any) -> None:
        """Show `value` (None clears an optional field)."""
        w = self.input
        if self.set_box is not None:
            self.set_box.setChecked(value is not None)
            self.input.setEnabled(value is not None)
            if value is None:
                return
        if self.kind == "modules":
            assert isinstance(w, QLineEdit)
            w.setText(value if isinstance(value, str) else ", ".join(value))
        elif self.kind == "choice":
            assert isinstance(w, QComboBox)
            index = w.findData(value)
            w.setCurrentIndex(max(index, 0))
        elif self.kind == "bool":
            assert isinstance(w, QCheckBox)
            w.setChecked(bool(value))
        elif self.kind in ("int", "float"):
            assert isinstance(w, QSpinBox | QDoubleSpinBox)
            w.setValue(value)
        else:
            assert isinstance(w, QLineEdit)
            w.setText("" if value is None else str(value))

    def set_error(self, message: str | None) -> None:
        """Show `message` under the field with a red border, or clear it."""
        if message == self.error:
            return
        self.error = message
        self.error_label.setText(message or "")
        self.error_label.setVisible(bool(message))
        self.input.setProperty("invalid", bool(message))
        # A per-widget style sheet rather than re-polishing a shared one: cheap, and it avoids
        # holding a reference to Qt's transient style-sheet style object.
        self.input.setStyleSheet(_INVALID_STYLE if message else "")

    # -- slots -----------------------------------------------------------------------------

    def _on_set_box_toggled(self, checked: bool) -> None:
        self.input.setEnabled(checked)
        self._on_change()

    def _on_browse_clicked(self) -> None:
        assert isinstance(self.input, QLineEdit)
        chosen = self._picker(PATH_FIELDS[self.path], f"Choose {self.title}", self.input.text())
        if chosen:
            self.input.setText(chosen)
            self._on_change()


class _Section(QGroupBox):
    """A titled group of fields with an "Advanced" fold for the rarely changed ones."""

    def __init__(self, title: str) -> None:
        super().__init__(title)
        self.setObjectName(f"section:{title}")
        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.advanced_form = QFormLayout()
        self.advanced_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.advanced_box = QWidget()
        self.advanced_box.setLayout(self.advanced_form)
        self.advanced_box.setVisible(False)
        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setObjectName(f"advanced:{title}")
        self.advanced_toggle.setText("Advanced")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.setAutoRaise(True)
        self.advanced_toggle.toggled.connect(self._on_advanced_toggle_toggled)
        self.advanced_toggle.setVisible(False)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(self.advanced_toggle, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.advanced_box)

    def add(self, field: _Field, advanced: bool) -> None:
        """Add a field row to the main form or the Advanced fold."""
        (self.advanced_form if advanced else self.form).addRow(field.label, field.container)
        if advanced:
            self.advanced_toggle.setVisible(True)

    def _on_advanced_toggle_toggled(self, checked: bool) -> None:
        self.advanced_box.setVisible(checked)
        self.advanced_toggle.setArrowType(
            Qt.ArrowType.DownArrow if checked else Qt.ArrowType.RightArrow
        )


_FIELD_REF = re.compile(r"\b([a-z_]+(?:\.[a-z_]+)+)\b")


class ConfigEditor(QWidget):
    """Edits a `TrainingConfig` through widgets generated from its schema.

    Signals:
        config_changed(): a value changed (by the user or `set_config`); read `raw_values()`
            or, when `is_valid`, `config()`.
        validity_changed(bool): the config became valid (True) or invalid (False).
        launch_target_changed(str): the launch target (provider id) changed.

    Args:
        config: the config to show first; without one the schema defaults are shown and the
            required fields (model, dataset) are empty, so the editor starts invalid.
        path_picker: returns a chosen path for the "…" buttons; defaults to QFileDialog.
        parent: the parent widget.
    """

    config_changed = Signal()
    validity_changed = Signal(bool)
    launch_target_changed = Signal(str)

    def __init__(
        self,
        config: TrainingConfig | None = None,
        path_picker: PathPicker | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("config_editor")
        self._picker = path_picker or _default_picker(self)
        self._fields: dict[str, _Field] = {}
        self._sections: dict[str, _Section] = {}
        self._loading = False
        self._valid = False
        self._errors: dict[str, str] = {}
        self._general_errors: list[str] = []

        self.general_error_label = QLabel()
        self.general_error_label.setObjectName("general_error")
        self.general_error_label.setWordWrap(True)
        self.general_error_label.setStyleSheet("color: #c9302c;")
        self.general_error_label.setVisible(False)

        body = QWidget()
        body_layout = QVBoxLayout(body)
        for title, names in SECTIONS.items():
            section = _Section(title)
            self._sections[title] = section
            for name in names:
                self._add_field(section, name, TrainingConfig.model_fields[name])
            body_layout.addWidget(section)
        placed = {n for names in SECTIONS.values() for n in names} | _HIDDEN
        for name, info in TrainingConfig.model_fields.items():
            if name not in placed:  # a field added to the schema later still gets a home
                section = _Section(info.title or name)
                self._sections[section.title()] = section
                self._add_field(section, name, info)
                body_layout.addWidget(section)

        target = _Section("Launch target")
        self._sections["Launch target"] = target
        self.target_combo = QComboBox()
        self.target_combo.setObjectName("launch_target")
        self.target_combo.setToolTip("Where the job runs. Not part of the training config.")
        self.target_combo.addItem("Local", "local")
        self.target_combo.currentIndexChanged.connect(self._on_target_combo_changed)
        target.form.addRow(QLabel("Provider"), self.target_combo)
        body_layout.addWidget(target)
        body_layout.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.general_error_label)
        layout.addWidget(scroll)

        self._loading = True
        for field in self._fields.values():
            default = field.info.get_default(call_default_factory=True)
            field.set_value(None if default is None or _is_undefined(default) else default)
        self._loading = False
        if config is not None:
            self.set_config(config)
        else:
            self._revalidate()
            self._update_enabled()

    # -- construction ----------------------------------------------------------------------

    def _add_field(self, section: _Section, path: str, info: FieldInfo) -> None:
        inner, _ = _split_optional(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            for name, sub in inner.model_fields.items():
                self._add_field(section, f"{path}.{name}", sub)
            return
        field = _Field(path, info, self._on_field_changed, self._picker)
        self._fields[path] = field
        advanced = path in ADVANCED or path.startswith(_ADVANCED_PREFIXES)
        section.add(field, advanced)

    # -- public API ------------------------------------------------------------------------

    @property
    def is_valid(self) -> bool:
        """Whether the current values make a valid `TrainingConfig`."""
        return self._valid

    def set_config(self, config: TrainingConfig) -> None:
        """Show `config` in the widgets (emits config_changed, and validity_changed on a flip)."""
        data = config.model_dump()
        self._loading = True
        try:
            for path, field in self._fields.items():
                field.set_value(_get_path(data, path))
        finally:
            self._loading = False
        self._update_enabled()
        self._revalidate()
        self.config_changed.emit()

    def raw_values(self) -> dict[str, Any]:
        """The values in the widgets as a nested dict, valid or not (launch target excluded)."""
        data: dict[str, Any] = {
            "schema_version": TrainingConfig.model_fields["schema_version"].get_default()
        }
        for path, field in self._fields.items():
            _set_path(data, path, field.value())
        return data

    def config(self) -> TrainingConfig:
        """The edited config.

        Raises:
            ConfigError: the values do not validate; the message names each field.
        """
        try:
            return TrainingConfig.model_validate(self.raw_values())
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "config")) from exc

    def errors(self) -> dict[str, str]:
        """Field path -> the error shown on it (e.g. {"training.eval_steps": "..."})."""
        return dict(self._errors)

    def general_errors(self) -> list[str]:
        """Errors that name no field, shown above the sections."""
        return list(self._general_errors)

    def field_error(self, path: str) -> str | None:
        """The error shown on the field at `path` (dotted, e.g. "lora.r"), or None."""
        return self._errors.get(path)

    def field_widget(self, path: str) -> QWidget:
        """The input widget of a field (QSpinBox, QLineEdit, ...), for the window and tests."""
        return self._fields[path].input

    def set_box(self, path: str) -> QCheckBox | None:
        """The "set" checkbox of an optional number field, or None."""
        return self._fields[path].set_box

    def field_paths(self) -> list[str]:
        """Every editable field path, in display order."""
        return list(self._fields)

    def section(self, title: str) -> QGroupBox:
        """The group box of a section ("Model", "LoRA", ..., "Launch target")."""
        return self._sections[title]

    def set_advanced_visible(self, visible: bool) -> None:
        """Unfold (or fold) every section's Advanced fields."""
        for section in self._sections.values():
            section.advanced_toggle.setChecked(visible)

    def launch_target(self) -> str:
        """The chosen provider id ("local", later "runpod")."""
        return str(self.target_combo.currentData())

    def set_launch_targets(self, targets: list[tuple[str, str]]) -> None:
        """Replace the provider choices with (id, label) pairs, keeping the choice if present."""
        current = self.launch_target()
        self.target_combo.blockSignals(True)
        self.target_combo.clear()
        for target_id, label in targets:
            self.target_combo.addItem(label, target_id)
        self.target_combo.blockSignals(False)
        index = self.target_combo.findData(current)
        self.target_combo.setCurrentIndex(max(index, 0))
        if self.launch_target() != current:
            self.launch_target_changed.emit(self.launch_target())

    def set_launch_target(self, target_id: str) -> None:
        """Choose a provider by id.

        Raises:
            ValueError: no such provider among the choices.
        """
        index = self.target_combo.findData(target_id)
        if index < 0:
            raise ValueError(f"unknown launch target {target_id!r}")
        self.target_combo.setCurrentIndex(index)

    # -- validation ------------------------------------------------------------------------

    def _revalidate(self) -> None:
        errors: dict[str, list[str]] = {}
        general: list[str] = []
        try:
            TrainingConfig.model_validate(self.raw_values())
        except ValidationError as exc:
            for item in exc.errors(include_url=False):
                msg = str(item["msg"]).removeprefix("Value error, ")
                path = self._field_for_loc(tuple(str(p) for p in item["loc"]))
                if path is not None:
                    errors.setdefault(path, []).append(_friendly(item, msg))
                    continue
                for part in _split_problems(msg):  # cross-field rules: one problem each
                    named = self._fields_named_in(part)
                    for p in named:
                        errors.setdefault(p, []).append(part)
                    if not named:
                        general.append(part)
        self._errors = {p: "\n".join(dict.fromkeys(msgs)) for p, msgs in errors.items()}
        self._general_errors = general
        for path, field in self._fields.items():
            field.set_error(self._errors.get(path))
        self.general_error_label.setText("\n".join(general))
        self.general_error_label.setVisible(bool(general))
        valid = not errors and not general
        if valid != self._valid:
            self._valid = valid
            self.validity_changed.emit(valid)

    def _field_for_loc(self, loc: tuple[str, ...]) -> str | None:
        # Union members add their type name to the location (lora.target_modules.list[str]).
        while loc:
            path = ".".join(loc)
            if path in self._fields:
                return path
            loc = loc[:-1]
        return None

    def _fields_named_in(self, message: str) -> list[str]:
        named = [m for m in _FIELD_REF.findall(message) if m in self._fields]
        if re.match(r"method\b", message) and "method" in self._fields:
            named.insert(0, "method")
        return list(dict.fromkeys(named))

    def _update_enabled(self) -> None:
        method = self._fields["method"].value()
        self._sections["LoRA"].setEnabled(method in ("lora", "qlora"))
        self._sections["Quantisation"].setEnabled(method == "qlora")

    # -- slots -----------------------------------------------------------------------------

    def _on_field_changed(self) -> None:
        if self._loading:
            return
        self._update_enabled()
        self._revalidate()
        self.config_changed.emit()

    def _on_target_combo_changed(self, _index: int) -> None:
        self.launch_target_changed.emit(self.launch_target())


_CONTINUATION = re.compile(r"^[a-z_]+(?:\.[a-z_]+)+ is '")


def _split_problems(message: str) -> list[str]:
    """Split TrainingConfig's joined cross-field message into its problems.

    The rules join problems with "; ", and a few problems use "; " themselves to add the value
    that conflicts ("...needs a CUDA GPU; hardware.device is 'cpu'"); such a statement of a
    current value belongs to the problem before it.
    """
    parts: list[str] = []
    for part in message.split("; "):
        if parts and _CONTINUATION.match(part):
            parts[-1] += "; " + part
        else:
            parts.append(part)
    return parts


def _friendly(item: Any, msg: str) -> str:
    if item["type"] == "missing":
        return "required"
    if item["type"] == "string_too_short" and item.get("input") == "":
        return "required"
    return msg


def _is_undefined(value: Any) -> bool:
    from pydantic_core import PydanticUndefined

    return value is PydanticUndefined


def _get_path(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
