"""The training-config editor, generated from the `TrainingConfig` schema.

Every widget comes from a pydantic field: its label from `title`, its tooltip from
`description`, its range from `ge`/`le`/`gt`/`lt`, combo choices from `Literal[...]`.

What a field shows is what trains: a number field's value is its text as typed (never a spin
box's previous in-range value), and text that is not a valid value stays as typed and is an
error on that field, named by its on-screen label ("Learning rate must be greater than 0; you
typed 0"). Validation is pydantic's own: after each edit the whole config is validated; each
problem is listed once (`problems()`), written under the first field it concerns and marked on
the others, with dotted config keys replaced by labels; the rules between fields are checked
among the valid fields even while another field is invalid, so every error shows at once. The
editor never reads or writes files; a file picker only returns a path (and can be replaced, for
tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from desktop.views.config_fields import (
    FormField,
    FormSection,
    PathPicker,
    default_picker,
    is_undefined,
    split_optional,
)
from desktop.views.operations import ConfigError
from trainer.config import TrainingConfig, format_validation_error

__all__ = ["SECTIONS", "ConfigEditor", "FieldProblem", "PathPicker"]


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with the editor's values.

    Attributes:
        paths: the fields it concerns, the one it leads to first (empty: it names none).
        text: the sentence for the error list, naming fields by their on-screen labels.
        field_text: what is written under the first field (may rely on the label beside it).
    """

    paths: tuple[str, ...]
    text: str
    field_text: str


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


_HIDDEN = frozenset({"schema_version"})


_FIELD_REF = re.compile(r"\b([a-z_]+(?:\.[a-z_]+)+)\b")


class ConfigEditor(QWidget):
    """Edits a `TrainingConfig` through widgets generated from its schema.

    Signals:
        config_changed(): a value changed (by the user or `set_config`); read `raw_values()`
            or, when `is_valid`, `config()`.
        validity_changed(bool): the config became valid (True) or invalid (False).
        problems_changed(): the list of problems (`problems()`) changed.
        launch_target_changed(str): the launch target (provider id) changed.

    Args:
        config: the config to show first; without one the schema defaults are shown and the
            required fields (model, dataset) are empty, so the editor starts invalid.
        path_picker: returns a chosen path for the "…" buttons; defaults to QFileDialog.
        parent: the parent widget.
    """

    config_changed = Signal()
    validity_changed = Signal(bool)
    problems_changed = Signal()
    launch_target_changed = Signal(str)

    def __init__(
        self,
        config: TrainingConfig | None = None,
        path_picker: PathPicker | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("config_editor")
        self._picker = path_picker or default_picker(self)
        self._fields: dict[str, FormField] = {}
        self._sections: dict[str, FormSection] = {}
        self._loading = False
        self._valid = False
        self._errors: dict[str, str] = {}
        self._general_errors: list[str] = []
        self._problems: list[FieldProblem] = []
        #: Errors found by background checks (set_external_error), by field path or other key.
        self._external_errors: dict[str, str] = {}

        self.general_error_label = QLabel()
        self.general_error_label.setObjectName("general_error")
        self.general_error_label.setWordWrap(True)
        self.general_error_label.setStyleSheet("color: #c9302c;")
        self.general_error_label.setVisible(False)

        body = QWidget()
        body_layout = QVBoxLayout(body)
        for title, names in SECTIONS.items():
            section = FormSection(title)
            self._sections[title] = section
            for name in names:
                self._add_field(section, name, TrainingConfig.model_fields[name])
            body_layout.addWidget(section)
        placed = {n for names in SECTIONS.values() for n in names} | _HIDDEN
        for name, info in TrainingConfig.model_fields.items():
            if name not in placed:  # a field added to the schema later still gets a home
                section = FormSection(info.title or name)
                self._sections[section.title()] = section
                self._add_field(section, name, info)
                body_layout.addWidget(section)

        target = FormSection("Launch target")
        self._sections["Launch target"] = target
        self.target_combo = QComboBox()
        self.target_combo.setObjectName("launch_target")
        self.target_combo.setToolTip("Where the job runs. Not part of the training config.")
        self.target_combo.addItem("Local", "local")
        self.target_combo.addItem("RunPod", "runpod")
        self.target_combo.currentIndexChanged.connect(self._on_target_combo_changed)
        target.form.addRow(QLabel("Provider"), self.target_combo)
        body_layout.addWidget(target)
        body_layout.addStretch(1)

        self._scroll = scroll = QScrollArea()
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
            field.set_value(None if default is None or is_undefined(default) else default)
        self._loading = False
        if config is not None:
            self.set_config(config)
        else:
            self._revalidate()
            self._update_enabled()

    # -- construction ----------------------------------------------------------------------

    def _add_field(self, section: FormSection, path: str, info: FieldInfo) -> None:
        inner, _ = split_optional(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            for name, sub in inner.model_fields.items():
                self._add_field(section, f"{path}.{name}", sub)
            return
        field = FormField(path, info, self._on_field_changed, self._picker)
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

    def attach_to_field(self, path: str, widget: QWidget, below: tuple[QWidget, ...] = ()) -> None:
        """Add `widget` beside the field `path` and `below` under it (see `FormField.attach`)."""
        self._fields[path].attach(widget, below)

    def errors(self) -> dict[str, str]:
        """Field path -> the error shown on it (e.g. {"training.eval_steps": "..."})."""
        return dict(self._errors)

    def general_errors(self) -> list[str]:
        """Errors that name no field, shown above the sections."""
        return list(self._general_errors)

    def problems(self) -> list[FieldProblem]:
        """Every current problem once, in the order of the fields they lead to (by label)."""
        return list(self._problems)

    def focus_field(self, path: str) -> None:
        """Bring the field at `path` into view (unfolding its Advanced fold) and focus it."""
        field = self._fields[path]
        for section in self._sections.values():
            if section.advanced_box.isAncestorOf(field.container):
                section.advanced_toggle.setChecked(True)
        self._scroll.ensureWidgetVisible(field.container)
        field.input.setFocus(Qt.FocusReason.OtherFocusReason)

    def field_label(self, path: str) -> str:
        """The on-screen label of the field at `path` ("Learning rate")."""
        return self._fields[path].title

    def error_label(self, path: str) -> QLabel:
        """The line under a field that shows its error (hidden when it has none to show)."""
        return self._fields[path].error_label

    def field_error(self, path: str) -> str | None:
        """The error shown on the field at `path` (dotted, e.g. "lora.r"), or None."""
        return self._errors.get(path)

    def set_external_error(self, key: str, message: str | None) -> None:
        """Set (or clear, with None) an error a background check found.

        `key` is a field path (the error shows on that field, as a schema error would), a
        field path with a "#tag" when several checks judge one field ("dataset.path#records"),
        or any other name (the error shows above the sections). Either way it counts like a schema
        error: the editor is invalid while it stands, so Start is disabled with its reason.
        The checker clears it when the value it judged changes.
        """
        if message:
            self._external_errors[key] = message
        elif self._external_errors.pop(key, None) is None:
            return
        self._revalidate()

    def external_error(self, key: str) -> str | None:
        """The background check's error set under `key`, or None."""
        return self._external_errors.get(key)

    def set_field_note(self, path: str, text: str | None) -> None:
        """Show a grey note under the field at `path` (e.g. "JSONL, 321 lines"), or clear it."""
        self._fields[path].set_note(text)

    def field_note(self, path: str) -> str | None:
        """The note shown under the field at `path`, or None."""
        text = self._fields[path].note_label.text()
        return text or None

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
        # One problem per rule broken, each led by the field it is listed under (the first it
        # names); the other fields it names are marked, not written under again.
        found: list[FieldProblem] = []
        parse_errors = {p: e for p, f in self._fields.items() if (e := f.parse_error())}
        found += [FieldProblem((p,), e, e) for p, e in parse_errors.items()]
        try:
            TrainingConfig.model_validate(self.raw_values())
        except ValidationError as exc:
            for item in exc.errors(include_url=False):
                msg = str(item["msg"]).removeprefix("Value error, ")
                path = self._field_for_loc(tuple(str(p) for p in item["loc"]))
                if path is not None:
                    if path not in parse_errors:
                        found.append(self._field_problem(path, item, msg))
                    continue
                found += self._cross_field_problems(msg, set())
        invalid = {pr.paths[0] for pr in found if pr.paths}
        if invalid:
            found += self._rules_between_valid_fields(invalid)
        found += self._external_problems()
        order = {p: i for i, p in enumerate(self._fields)}
        found.sort(key=lambda pr: order[pr.paths[0]] if pr.paths else len(order))
        errors: dict[str, list[str]] = {}
        shown: dict[str, list[str]] = {}
        for problem in found:
            for i, path in enumerate(problem.paths):
                errors.setdefault(path, []).append(problem.field_text)
                if i == 0:
                    shown.setdefault(path, []).append(problem.field_text)
        general = [pr.text for pr in found if not pr.paths]
        self._errors = {p: "\n".join(dict.fromkeys(msgs)) for p, msgs in errors.items()}
        self._general_errors = general
        for path, field in self._fields.items():
            field.set_error(self._errors.get(path), shown=path in shown)
        self.general_error_label.setText("\n".join(general))
        self.general_error_label.setVisible(bool(general))
        if found != self._problems:
            self._problems = found
            self.problems_changed.emit()
        valid = not found
        if valid != self._valid:
            self._valid = valid
            self.validity_changed.emit(valid)

    def _external_problems(self) -> list[FieldProblem]:
        """The background checks' errors (`set_external_error`), as problems of their fields."""
        found = []
        for key, message in self._external_errors.items():
            on = key.partition("#")[0]  # "dataset.path#records": another check of that field
            if on in self._fields:
                label = self._fields[on].title
                text = message if message.startswith(label) else f"{label}: {message}"
                found.append(FieldProblem((on,), text, message))
            else:
                found.append(FieldProblem((), message, message))
        return found

    def _cross_field_problems(self, message: str, skip: set[str]) -> list[FieldProblem]:
        """The problems of a cross-field rule's message, except those naming a `skip` field."""
        found = []
        for part in _split_problems(message):  # the rules join their problems: one each
            paths = tuple(self._fields_named_in(part))
            if not skip.intersection(paths):
                text = self._with_labels(part)
                found.append(FieldProblem(paths, text, text))
        return found

    def _rules_between_valid_fields(self, invalid: set[str]) -> list[FieldProblem]:
        """Cross-field problems among the valid fields while some field is invalid.

        pydantic checks the rules between fields only once every field is valid, which showed
        the errors one at a time; here each invalid field stands in with its default (or a
        placeholder) so the rules about the other fields are checked, and a rule that names an
        invalid field is left until that field is fixed.
        """
        data = self.raw_values()
        for path in invalid:
            default = self._fields[path].info.get_default(call_default_factory=True)
            _set_path(data, path, "stand-in" if is_undefined(default) else default)
        try:
            TrainingConfig.model_validate(data)
        except ValidationError as exc:
            return [
                problem
                for item in exc.errors(include_url=False)
                if not item["loc"]
                for problem in self._cross_field_problems(
                    str(item["msg"]).removeprefix("Value error, "), invalid
                )
            ]
        return []

    def _field_problem(self, path: str, item: Any, msg: str) -> FieldProblem:
        """A pydantic error on one field, said by the field's label."""
        field = self._fields[path]
        bound = _BOUND_WORDS.get(str(item["type"]))
        if bound is not None:
            words, key = bound
            limit = item.get("ctx", {}).get(key)
            text = f"{field.title} must be {words} {_number(limit)}; you typed {field.text()}"
            return FieldProblem((path,), text, text)
        under = _friendly(item, msg)
        return FieldProblem((path,), f"{field.title}: {under}", under)

    def _with_labels(self, message: str) -> str:
        """`message` with each dotted field name replaced by the field's on-screen label."""

        def label(match: re.Match[str]) -> str:
            field = self._fields.get(match.group(1))
            return field.title if field is not None else match.group(0)

        text = _FIELD_REF.sub(label, message)
        if re.match(r"method\b", text) and "method" in self._fields:
            text = self._fields["method"].title + text[len("method") :]
        return text

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


#: pydantic's bound error types -> (the words, the bound's key in the error's context).
_BOUND_WORDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _friendly(item: Any, msg: str) -> str:
    if item["type"] == "missing":
        return "required"
    if item["type"] == "string_too_short" and item.get("input") == "":
        return "required"
    return msg


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
