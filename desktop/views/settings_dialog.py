"""The settings dialog: API keys in the keychain, the trainer runtime, the data folder, offline.

Keys are saved to (and deleted from) the keychain at once through `SecretStore`'s async calls,
run as operations, so a stuck keychain never freezes the window; each key shows where it is
stored or exactly why it cannot be (`SecretStatus.describe()`). The other settings are returned
by `settings()` when the dialog is accepted; the window saves them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.models import Settings, data_home
from desktop.views import operations
from desktop.views.latest_call import latest_call
from desktop.views.operations import Operations, SecretName, SecretStatus, SecretStore
from desktop.views.runpod_panel import add_key_test
from desktop.views.runtime_panel import RuntimePanel
from desktop.views.theme import theme_combo

if TYPE_CHECKING:
    from trainer.reports import DoctorReport

__all__ = ["SettingsDialog", "describe_doctor"]

_T = TypeVar("_T")


def describe_doctor(report: DoctorReport) -> str:
    """One or two lines from `trainer doctor --json`: torch, CUDA, GPUs, and any problem."""
    torch = report.torch or "not installed"
    if report.cuda_available:
        cuda = f"CUDA {report.cuda_version or '?'}"
    elif report.mps_available:
        cuda = "Apple MPS"
    else:
        cuda = "no CUDA"
    gpus = report.gpus or []
    if gpus:
        names: dict[str, int] = {}
        for gpu in gpus:
            names[gpu.name] = names.get(gpu.name, 0) + 1
        gpu_text = ", ".join(f"{n} × {name}" for name, n in names.items())
    else:
        gpu_text = "no GPU"
    text = f"torch {torch}, {cuda}, {gpu_text}"
    problems = report.problems or []
    if problems:
        text += "\nProblems: " + "; ".join(str(p) for p in problems)
    return text


class _KeyRow:
    """One secret: a password field, Save / Delete, and where it is stored."""

    def __init__(self, name: SecretName, grid: QGridLayout, row: int) -> None:
        self.name = name
        self.label = QLabel(name.label)
        self.edit = QLineEdit()
        self.edit.setObjectName(f"key_edit:{name.value}")
        self.edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.edit.setPlaceholderText("paste a new value to store it")
        self.save_button = QPushButton("Save")
        self.save_button.setObjectName(f"key_save:{name.value}")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setObjectName(f"key_delete:{name.value}")
        self.status_label = QLabel("checking …")
        self.status_label.setObjectName(f"key_status:{name.value}")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.setStyleSheet("color: #555555;")
        grid.addWidget(self.label, row, 0)
        grid.addWidget(self.edit, row, 1)
        grid.addWidget(self.save_button, row, 2)
        grid.addWidget(self.delete_button, row, 3)
        grid.addWidget(self.status_label, row + 1, 1, 1, 3)
        self.save_button.setEnabled(False)
        self.edit.textChanged.connect(lambda text: self.save_button.setEnabled(bool(text.strip())))


class SettingsDialog(QDialog):
    """Edits `Settings` and the keychain's API keys.

    Args:
        settings: the current settings (not changed; read the result from `settings()`).
        ops: runs the keychain calls and the doctor in the background.
        secret_store: the keychain.
        interpreter_picker: returns a chosen interpreter path (default: a file dialog).
        parent: the parent widget.

    Signals:
        key_status_changed(str, str): a key's status line was updated (name, text).
        doctor_finished(str): the runtime check finished (its summary).
    """

    key_status_changed = Signal(str, str)
    doctor_finished = Signal(str)

    def __init__(
        self,
        settings: Settings,
        ops: Operations,
        secret_store: SecretStore,
        *,
        interpreter_picker: Callable[[str], str | None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("settings_dialog")
        self.setWindowTitle("Settings")
        self._settings = settings
        self._ops = ops
        self._store = secret_store
        self._picker = interpreter_picker or self._pick_interpreter
        self.statuses: dict[SecretName, SecretStatus] = {}
        # Outlives the C++ dialog, so late callbacks can tell it is gone (`_while_open`).
        self._alive = threading.Event()
        self._alive.set()
        alive = self._alive
        self.destroyed.connect(lambda *_: alive.clear())

        # Keys
        keys_box = QGroupBox("API keys")
        keys_layout = QVBoxLayout(keys_box)
        self.backend_label = QLabel("Keychain: checking …")
        self.backend_label.setObjectName("keychain_backend")
        self.backend_label.setWordWrap(True)
        keys_layout.addWidget(self.backend_label)
        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        self.key_rows: dict[SecretName, _KeyRow] = {}
        for i, name in enumerate(SecretName):
            row = _KeyRow(name, grid, 2 * i)
            row.save_button.clicked.connect(lambda _c=False, n=name: self.save_key(n))
            row.delete_button.clicked.connect(lambda _c=False, n=name: self.delete_key(n))
            self.key_rows[name] = row
        keys_layout.addLayout(grid)
        self.runpod_test_button = add_key_test(
            keys_layout, ops, secret_store, settings.runpod.api_url
        )
        cap_row = QHBoxLayout()
        self.monthly_cap_spin = QDoubleSpinBox()
        self.monthly_cap_spin.setObjectName("runpod_monthly_cap")
        self.monthly_cap_spin.setRange(0, 1_000_000)
        self.monthly_cap_spin.setDecimals(2)
        self.monthly_cap_spin.setPrefix("$ ")
        self.monthly_cap_spin.setSpecialValueText("no cap")  # 0: no cap
        cap = settings.runpod.monthly_cap_usd
        self.monthly_cap_spin.setValue(float(cap) if cap is not None else 0.0)
        self.monthly_cap_spin.setToolTip(
            "All RunPod pods this month, together: a launch whose budget would pass it is "
            "refused before any pod is created (finetune-desk spend shows the month)."
        )
        cap_row.addWidget(QLabel("RunPod monthly spend cap"))
        cap_row.addWidget(self.monthly_cap_spin)
        cap_row.addStretch(1)
        keys_layout.addLayout(cap_row)
        hint = QLabel(
            "Keys live only in the keychain and reach a trainer only as environment variables. "
            "FTDESK_HF_TOKEN (and friends) in the environment override them for one session."
        )
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #777777;")
        keys_layout.addWidget(hint)

        # Runtime
        runtime_box = QGroupBox("Trainer runtime")
        runtime_form = QFormLayout(runtime_box)
        self.python_edit = QLineEdit(settings.trainer_python or "")
        self.python_edit.setObjectName("trainer_python")
        self.python_edit.setPlaceholderText("the app's own Python")
        self.python_edit.setToolTip(Settings.model_fields["trainer_python"].description or "")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        self.doctor_button = QPushButton("Check")
        self.doctor_button.setObjectName("run_doctor")
        self.doctor_button.setToolTip("Run `trainer doctor` with this interpreter")
        self.doctor_button.clicked.connect(self.run_doctor)
        python_row = QHBoxLayout()
        python_row.addWidget(self.python_edit, 1)
        python_row.addWidget(browse)
        python_row.addWidget(self.doctor_button)
        runtime_form.addRow("Interpreter", python_row)
        self.doctor_label = QLabel("not checked yet")
        self.doctor_label.setObjectName("doctor_result")
        self.doctor_label.setWordWrap(True)
        self.doctor_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        runtime_form.addRow("Runtime", self.doctor_label)
        self.runtime_panel = RuntimePanel(
            ops, lambda: self.python_edit.text().strip(), lambda: self.offline_check.isChecked()
        )
        self.runtime_panel.runtime_chosen.connect(self.python_edit.setText)
        self.runtime_panel.runtime_removed.connect(lambda _folder: self.python_edit.clear())
        runtime_form.addRow("Manage", self.runtime_panel)

        # Data folder and offline
        data_box = QGroupBox("Data")
        data_form = QFormLayout(data_box)
        home = data_home()
        source = "FTDESK_HOME" if os.environ.get("FTDESK_HOME") else "default"
        self.data_label = QLabel(f"{home}  ({source})")
        self.data_label.setObjectName("data_folder")
        self.data_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.data_label.setToolTip(
            "Jobs, metrics, logs and settings live here. Set FTDESK_HOME to use another folder."
        )
        open_data = QPushButton("Open")
        open_data.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(data_home())))
        )
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_label, 1)
        data_row.addWidget(open_data)
        data_form.addRow("Data folder", data_row)
        self.offline_check = QCheckBox("Offline mode: refuse every network path")
        self.offline_check.setObjectName("offline")
        self.offline_check.setChecked(settings.offline)
        self.offline_check.setToolTip(Settings.model_fields["offline"].description or "")
        data_form.addRow("", self.offline_check)
        self.theme_combo = theme_combo(settings.theme, self)
        data_form.addRow("Theme", self.theme_combo)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(keys_box)
        layout.addWidget(runtime_box)
        layout.addWidget(data_box)
        layout.addStretch(1)
        layout.addWidget(buttons)
        self.resize(760, 600)

    # -- results ----------------------------------------------------------------------------

    def settings(self) -> Settings:
        """The settings as edited (validated)."""
        python = self.python_edit.text().strip() or None
        cap = self.monthly_cap_spin.value()
        runpod = self._settings.runpod.model_copy(
            update={"monthly_cap_usd": Decimal(f"{cap:.2f}") if cap > 0 else None}
        )
        return self._settings.model_copy(
            update={
                "runpod": runpod,
                "trainer_python": python,
                "offline": self.offline_check.isChecked(),
                "theme": self.theme_combo.currentData(),
            }
        )

    def _while_open(self, callback: Callable[[_T], None]) -> Callable[[_T], None]:
        """`callback`, skipped once the dialog is deleted: an operation it started (the
        keychain, the doctor) can outlive it when OK is pressed before the answer came."""
        alive = self._alive

        def call(value: _T) -> None:
            if alive.is_set():
                callback(value)

        return call

    # -- keys -------------------------------------------------------------------------------

    def refresh_keys(self) -> None:
        """Ask the keychain where each key is stored (in the background)."""

        async def work() -> tuple[str, list[SecretStatus]]:
            backend = await self._store.abackend_description()
            return backend, [await self._store.astatus(n) for n in SecretName]

        self._ops.run("read the keychain", work(), self._while_open(self._on_keys_read))

    def _on_keys_read(self, result: tuple[str, list[SecretStatus]]) -> None:
        backend, statuses = result
        problem = next((s.problem for s in statuses if s.problem), None)
        if problem:
            # One keychain, one reason: say it once, in full, above the keys.
            self.backend_label.setText(f"Keychain: {backend}. {problem}")
            self.backend_label.setStyleSheet("color: #c9302c;")
        else:
            self.backend_label.setText(f"Keychain: {backend}")
            self.backend_label.setStyleSheet("")
        for status in statuses:
            self._show_status(status)

    def _show_status(self, status: SecretStatus) -> None:
        self.statuses[status.name] = status
        row = self.key_rows[status.name]
        text = status.describe()
        if status.source == "unavailable":
            text = (
                f"{status.name.value}: cannot be stored (see above); for this session only, set "
                f"{status.name.override_env_var}"
            )
        row.status_label.setText(text)
        colour = {"unavailable": "#c9302c", "missing": "#777777"}.get(status.source, "#2e7d32")
        row.status_label.setStyleSheet(f"color: {colour};")
        row.delete_button.setEnabled(bool(status.in_keychain))
        self.key_status_changed.emit(status.name.value, text)

    def save_key(self, name: SecretName) -> None:
        """Store the typed value in the keychain, then show where it went."""
        row = self.key_rows[name]
        value = row.edit.text().strip()
        if not value:
            return

        async def work() -> SecretStatus:
            await self._store.aset(name, value)
            return await self._store.astatus(name)

        def done(status: SecretStatus) -> None:
            row.edit.clear()
            self._show_status(status)

        self._ops.run(
            f"save {name.label}",
            work(),
            self._while_open(done),
            self._while_open(self._key_failed(name)),
        )

    def delete_key(self, name: SecretName) -> None:
        """Remove the key from the keychain, then show the new status."""

        async def work() -> SecretStatus:
            await self._store.adelete(name)
            return await self._store.astatus(name)

        self._ops.run(
            f"delete {name.label}",
            work(),
            self._while_open(self._show_status),
            self._while_open(self._key_failed(name)),
        )

    def _key_failed(self, name: SecretName) -> Callable[[BaseException], None]:
        def show(exc: BaseException) -> None:
            row = self.key_rows[name]
            row.status_label.setText(f"{name.value}: not saved - {exc}")
            row.status_label.setStyleSheet("color: #c9302c;")
            self.key_status_changed.emit(name.value, row.status_label.text())

        return show

    # -- runtime ----------------------------------------------------------------------------

    def run_doctor(self) -> None:
        """Run `trainer doctor` with the chosen interpreter (and the dialog's offline mode)
        through the trainer runtime, in a worker thread.

        Its own operation, beside the window's check; a check asked for while one runs (Browse…
        during a check) runs after it, and only the newest answer is shown (`LatestCall`)."""
        python = self.python_edit.text().strip() or self._default_python()
        self.doctor_label.setText(f"checking {python} …")
        self.doctor_button.setEnabled(False)

        def done(report: DoctorReport) -> None:
            self.doctor_button.setEnabled(True)
            text = describe_doctor(report)
            self.doctor_label.setText(text)
            self.doctor_label.setStyleSheet("" if report.ok else "color: #c9302c;")
            self.doctor_finished.emit(text)

        def failed(exc: BaseException) -> None:
            self.doctor_button.setEnabled(True)
            self.doctor_label.setText(str(exc))
            self.doctor_label.setStyleSheet("color: #c9302c;")
            self.doctor_finished.emit(str(exc))

        latest_call(self._ops, "check the interpreter in Settings").request(
            operations.check_runtime,
            python,
            self.offline_check.isChecked(),
            on_done=self._while_open(done),
            on_error=self._while_open(failed),
        )

    def show_doctor(self, report: DoctorReport) -> None:
        """Show a doctor report the window already has."""
        self.doctor_label.setText(describe_doctor(report))

    @staticmethod
    def _default_python() -> str:
        import sys

        # A frozen app's own executable is no Python: "" gives the runtime's "not set up yet".
        return "" if getattr(sys, "frozen", False) else sys.executable

    def _pick_interpreter(self, current: str) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self, "Python interpreter for the trainer", current)
        return path or None

    def _on_browse_clicked(self) -> None:
        chosen = self._picker(self.python_edit.text())
        if chosen:
            self.python_edit.setText(chosen)
            self.run_doctor()
