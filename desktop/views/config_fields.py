"""The config editor's field factory: one input widget per pydantic field of the schema.

`FormField` makes the input a field's type asks for (a check box, a spin box with the field's
bounds, a combo of a `Literal`'s choices, a line edit with a path picker), reads and writes its
value and shows its error; `FormSection` groups fields under a title with an "Advanced" fold.
`ConfigEditor` (config_editor.py) lays them out and validates the whole config.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic.fields import FieldInfo
from PySide6.QtCore import Qt
from PySide6.QtGui import QFocusEvent, QHideEvent, QKeyEvent, QValidator
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

__all__ = [
    "PATH_FIELDS",
    "FieldBounds",
    "FormField",
    "FormSection",
    "NumberSpinBox",
    "PathPicker",
    "WholeSpinBox",
    "default_picker",
    "field_bounds",
    "is_undefined",
    "split_optional",
]

#: (kind, caption, current value) -> chosen path or None; kind is "dir" or "file".
PathPicker = Callable[[str, str, str], str | None]

#: Fields edited as a path, with the picker kind.
PATH_FIELDS: dict[str, str] = {
    "model.name_or_path": "dir",
    "dataset.path": "file",
    "dataset.eval_path": "file",
}

_SCIENTIFIC = frozenset({"training.learning_rate"})
_INT32_MAX = 2**31 - 1
_INVALID_STYLE = "border: 1px solid #d9534f; border-radius: 2px;"
_DATA_FILTER = "Datasets (*.jsonl *.jsonl.gz *.json *.csv *.parquet *.txt);;All files (*)"


def default_picker(parent: QWidget) -> PathPicker:
    def pick(kind: str, caption: str, current: str) -> str | None:
        if kind == "dir":
            chosen = QFileDialog.getExistingDirectory(parent, caption, current)
        else:
            chosen, _ = QFileDialog.getOpenFileName(parent, caption, current, _DATA_FILTER)
        return chosen or None

    return pick


@dataclass(frozen=True)
class FieldBounds:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False


def field_bounds(info: FieldInfo) -> FieldBounds:
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
    return FieldBounds(lo, hi, lo_open, hi_open)


def split_optional(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)) and len(args) == 1:
            return args[0], True
    return annotation, False


class _KeepsTypedText:
    """Keeps the text a person typed when Qt's spin box would replace it.

    On Enter, focus-out and hide a `QAbstractSpinBox` re-reads its text and, when the text is
    not an acceptable number (out of range, half typed), silently puts the previous value
    back. The editor shows exactly the value that will train, so the text stays as typed and
    the editor reports it as an error on the field instead.
    """

    def _keeping_text(
        self, handler: Callable[[Any], None], event: Any, *, finishes: bool = False
    ) -> None:
        spin = typing.cast(QAbstractSpinBox, self)
        edit = spin.lineEdit()
        text = edit.text()
        if spin.validate(text, 0)[0] == QValidator.State.Acceptable:
            handler(event)
            return
        # Qt puts the previous value's text back (and may re-announce that unchanged value);
        # with the text restored nothing changed, so nothing is announced but the edit's end.
        spin_blocked, edit_blocked = spin.blockSignals(True), edit.blockSignals(True)
        try:
            handler(event)
            edit.setText(text)
        finally:
            edit.blockSignals(edit_blocked)
            spin.blockSignals(spin_blocked)
        if finishes:
            spin.editingFinished.emit()

    def focusOutEvent(self, event: QFocusEvent) -> None:
        """Leave the field without replacing what was typed."""
        self._keeping_text(super().focusOutEvent, event, finishes=True)  # type: ignore[misc]

    def hideEvent(self, event: QHideEvent) -> None:
        """Hide (an Advanced fold closing) without replacing what was typed."""
        self._keeping_text(super().hideEvent, event)  # type: ignore[misc]

    def keyPressEvent(self, event: QKeyEvent) -> None:
        """Enter accepts an acceptable number and leaves any other text as it is."""
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self._keeping_text(super().keyPressEvent, event, finishes=True)  # type: ignore[misc]
        else:
            super().keyPressEvent(event)  # type: ignore[misc]


class WholeSpinBox(_KeepsTypedText, QSpinBox):
    """A QSpinBox that keeps out-of-range text as typed (see `_KeepsTypedText`)."""


class NumberSpinBox(_KeepsTypedText, QDoubleSpinBox):
    """A float spin box that shows values compactly (0.05, 2e-05) and accepts 1e-4 typed in.

    With `multiplicative`, the arrows double or halve the value (learning rates live on a log
    scale); with `integer`, it holds whole numbers past QSpinBox's 32-bit range. Text out of
    range is kept as typed (see `_KeepsTypedText`).
    """

    def __init__(self, multiplicative: bool = False, integer: bool = False) -> None:
        super().__init__()
        self._multiplicative = multiplicative
        self._integer = integer
        self.setDecimals(0 if integer else 10)

    def textFromValue(self, val: float, /) -> str:
        """Compact text: no trailing zeros, exponent for small values."""
        # 12 significant digits: the text is the value that trains (see FormField.value).
        return str(round(val)) if self._integer else f"{val:.12g}"

    def valueFromText(self, text: str, /) -> float:
        """Parse plain or scientific notation."""
        try:
            return float(text.strip())
        except ValueError:
            return self.value()

    def validate(self, input: str, pos: int, /) -> tuple[QValidator.State, str, int]:
        """Acceptable when the number is in range; partial numbers (a sign, "1e", "-1e-") and
        numbers out of range are intermediate (kept, and reported by the editor)."""
        text = input.strip()
        try:
            value = float(text)
        except ValueError:
            ok = re.fullmatch(r"[+-]?[0-9]*\.?[0-9]*([eE][+-]?[0-9]*)?", text) is not None
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


class FormField:
    """One schema field: its input widget, an optional "set" box, and an error line."""

    def __init__(
        self, path: str, info: FieldInfo, on_change: Callable[[], None], picker: PathPicker
    ) -> None:
        self.path = path
        self.info = info
        self._on_change = on_change
        self._picker = picker
        inner, self.optional = split_optional(info.annotation)
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
        # A background check's word on a good value ("JSONL, 321 lines"), under the error line.
        self.note_label = QLabel()
        self.note_label.setObjectName(f"note:{path}")
        self.note_label.setWordWrap(True)
        self.note_label.setStyleSheet("color: #666666;")
        self.note_label.setVisible(False)
        column = QVBoxLayout()
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addLayout(row)
        column.addWidget(self.error_label)
        column.addWidget(self.note_label)
        self.container = QWidget()
        self.container.setLayout(column)
        self.error: str | None = None
        self._row, self._column = row, column

    def attach(self, widget: QWidget, below: tuple[QWidget, ...] = ()) -> None:
        """Put `widget` at the end of the field's row and `below` under it (a Pull button and
        its progress line, for the model field)."""
        self._row.addWidget(widget)
        for item in below:
            self._column.addWidget(item)

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
            b = field_bounds(info)
            big = inner is int and (
                (b.hi is not None and b.hi > _INT32_MAX)
                or (b.lo is not None and b.lo < -_INT32_MAX)
            )
            spin: QSpinBox | QDoubleSpinBox
            if inner is int and not big:
                spin = WholeSpinBox()
                lo = int(b.lo) + (1 if b.lo_open else 0) if b.lo is not None else -_INT32_MAX
                hi = int(b.hi) - (1 if b.hi_open else 0) if b.hi is not None else _INT32_MAX
                spin.setRange(lo, hi)
            else:
                spin = NumberSpinBox(multiplicative=self.path in _SCIENTIFIC, integer=inner is int)
                eps = 1.0 if inner is int else (1e-9 if self.path in _SCIENTIFIC else 1e-3)
                lo_f = (float(b.lo) + (eps if b.lo_open else 0.0)) if b.lo is not None else -1e18
                hi_f = (float(b.hi) - (eps if b.hi_open else 0.0)) if b.hi is not None else 1e18
                spin.setRange(lo_f, hi_f)
                if inner is float:
                    spin.setSingleStep(0.01 if hi_f <= 1.0 else 0.5)
            spin.setKeyboardTracking(True)
            spin.valueChanged.connect(lambda _v: self._on_change())
            # The text is the value (see `value`): text out of range changes no spin value.
            spin.lineEdit().textEdited.connect(lambda _t: self._on_change())
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
        if self.kind in ("int", "float"):
            # The text, not the spin box's value: Qt keeps its last in-range value while the
            # text says otherwise, and what trains must be what the field reads.
            text = self.text()
            number = _parse_number(text, whole=self.kind == "int")
            return text if number is None else number
        assert isinstance(w, QLineEdit)
        text = w.text()
        if self.optional and not text.strip():
            return None
        return text

    def text(self) -> str:
        """The text the field shows (for a number, as typed)."""
        w = self.input
        if isinstance(w, QAbstractSpinBox):
            return w.lineEdit().text().strip()
        if isinstance(w, QLineEdit):
            return w.text()
        if isinstance(w, QComboBox):
            return w.currentText()
        return ""

    def parse_error(self) -> str | None:
        """Why the typed text is not a value of this field (a number field only), or None."""
        if self.kind not in ("int", "float"):
            return None
        if self.set_box is not None and not self.set_box.isChecked():
            return None
        text = self.text()
        if _parse_number(text, whole=self.kind == "int") is not None:
            return None
        what = "a whole number" if self.kind == "int" else "a number"
        return f"{self.title} needs {what}" + (f"; you typed {text}" if text else "")

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

    def set_error(self, message: str | None, *, shown: bool = True) -> None:
        """Mark the field invalid with `message` (None clears it).

        Args:
            message: the error, or None.
            shown: write it under the field; False marks the field (red border, the message
                in its tooltip) where the same error is written under another field, so a
                rule about several fields is read once.
        """
        text = message if shown else None
        if (message, text) == (self.error, self.error_label.text() or None):
            return
        self.error = message
        self.error_label.setText(text or "")
        self.error_label.setVisible(bool(text))
        self.input.setProperty("invalid", bool(message))
        self.input.setToolTip(
            "\n\n".join(t for t in (message, self.info.description) if t)
            if message
            else (self.info.description or "")
        )
        # A per-widget style sheet rather than re-polishing a shared one: cheap, and it avoids
        # holding a reference to Qt's transient style-sheet style object.
        self.input.setStyleSheet(_INVALID_STYLE if message else "")

    def set_note(self, text: str | None) -> None:
        """Show `text` under the field in grey (what a background check found), or clear it."""
        self.note_label.setText(text or "")
        self.note_label.setVisible(bool(text))

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


class FormSection(QGroupBox):
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

    def add(self, field: FormField, advanced: bool) -> None:
        """Add a field row to the main form or the Advanced fold."""
        (self.advanced_form if advanced else self.form).addRow(field.label, field.container)
        if advanced:
            self.advanced_toggle.setVisible(True)

    def _on_advanced_toggle_toggled(self, checked: bool) -> None:
        self.advanced_box.setVisible(checked)
        self.advanced_toggle.setArrowType(
            Qt.ArrowType.DownArrow if checked else Qt.ArrowType.RightArrow
        )


def _parse_number(text: str, *, whole: bool) -> int | float | None:
    """The number `text` spells (plain or scientific), or None; `whole` wants an integer."""
    try:
        number = float(text)
    except ValueError:
        return None
    if whole:
        return int(number) if number.is_integer() else None
    return number


def is_undefined(value: Any) -> bool:
    from pydantic_core import PydanticUndefined

    return value is PydanticUndefined
