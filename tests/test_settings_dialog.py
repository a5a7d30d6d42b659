"""The settings dialog: keys against a real Secret Service keychain, the runtime check, and the
settings it returns."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from PySide6.QtCore import Qt

from desktop.core.secrets import SecretName, SecretStore
from desktop.models import Settings
from desktop.views.operations import MessageBus, Operations
from desktop.views.settings_dialog import SettingsDialog, describe_doctor
from trainer.reports import DoctorReport

pytest_plugins = ["app_fixtures", "keychain"]


def make_dialog(store: Any, settings: Settings | None = None) -> tuple[SettingsDialog, MessageBus]:
    bus = MessageBus()
    ops = Operations(bus)
    dialog = SettingsDialog(settings or Settings(), ops, store)
    return dialog, bus


@pytest.mark.keychain
def test_keys_set_status_delete_against_the_real_keychain(
    qtbot: Any, qloop: Any, home: Path, real_keychain: Any
) -> None:
    store = SecretStore(real_keychain.backend)
    dialog, _bus = make_dialog(store)
    qtbot.addWidget(dialog)
    row = dialog.key_rows[SecretName.HF_TOKEN]
    value = "hf_dialogSecretValue1234567890"

    async def body() -> None:
        dialog.refresh_keys()
        await until(lambda: SecretName.HF_TOKEN in dialog.statuses, 20)
        assert "Secret Service" in dialog.backend_label.text()
        assert dialog.statuses[SecretName.HF_TOKEN].source == "missing"
        assert "not set" in row.status_label.text()
        assert not row.delete_button.isEnabled()

        qtbot.keyClicks(row.edit, value)
        assert row.save_button.isEnabled()
        qtbot.mouseClick(row.save_button, Qt.MouseButton.LeftButton)
        await until(lambda: dialog.statuses[SecretName.HF_TOKEN].source == "keychain", 20)
        # Stored in the real keychain, shown as such, the field emptied, the value nowhere.
        assert real_keychain.lookup("finetune-desk", "hf_token") == value
        assert "stored in" in row.status_label.text()
        assert value not in row.status_label.text() and row.edit.text() == ""
        assert row.delete_button.isEnabled()

        qtbot.mouseClick(row.delete_button, Qt.MouseButton.LeftButton)
        await until(lambda: dialog.statuses[SecretName.HF_TOKEN].source == "missing", 20)
        assert real_keychain.lookup("finetune-desk", "hf_token") is None
        assert "not set" in row.status_label.text()

    run(qloop, body())


class _BrokenBackend:
    """A keyring backend whose keychain is locked (what a person sees on a broken setup)."""

    priority = 1

    def get_password(self, service: str, user: str) -> str | None:
        from keyring.errors import KeyringLocked

        raise KeyringLocked("the collection is locked")

    set_password = get_password
    delete_password = get_password


@pytest.mark.expect_log("The keychain cannot be used")
def test_a_key_that_cannot_be_stored_says_why(qtbot: Any, qloop: Any, home: Path) -> None:
    dialog, bus = make_dialog(SecretStore(_BrokenBackend(), timeout_s=5))
    qtbot.addWidget(dialog)
    row = dialog.key_rows[SecretName.RUNPOD_API_KEY]
    errors: list[str] = []
    bus.error_posted.connect(errors.append)

    async def body() -> None:
        dialog.refresh_keys()
        await until(lambda: SecretName.RUNPOD_API_KEY in dialog.statuses, 20)
        assert dialog.statuses[SecretName.RUNPOD_API_KEY].source == "unavailable"
        assert "cannot be stored" in row.status_label.text()
        # Exactly why, with the way out, once above the keys.
        assert "locked" in dialog.backend_label.text()
        assert "FTDESK_" in dialog.backend_label.text()
        qtbot.keyClicks(row.edit, "rpa_0123456789abcdef")
        qtbot.mouseClick(row.save_button, Qt.MouseButton.LeftButton)
        await until(lambda: "not saved" in row.status_label.text(), 20)
        assert errors and "rpa_0123456789abcdef" not in " ".join(errors)

    run(qloop, body())


def test_settings_offline_and_interpreter_are_returned(qtbot: Any, home: Path) -> None:
    dialog, _ = make_dialog(SecretStore(_BrokenBackend()), Settings(offline=False))
    qtbot.addWidget(dialog)
    assert str(home) in dialog.data_label.text() and "FTDESK_HOME" in dialog.data_label.text()
    dialog.offline_check.setChecked(True)
    dialog.python_edit.setText(sys.executable)
    result = dialog.settings()
    assert result.offline is True and result.trainer_python == sys.executable
    dialog.python_edit.setText("  ")
    assert dialog.settings().trainer_python is None


def test_the_monthly_runpod_cap_is_set_and_cleared_in_settings(qtbot: Any, home: Path) -> None:
    from decimal import Decimal

    from desktop.models import RunpodOptions

    start = Settings(runpod=RunpodOptions(monthly_cap_usd=Decimal("120")))
    dialog, _ = make_dialog(SecretStore(_BrokenBackend()), start)
    qtbot.addWidget(dialog)
    assert dialog.monthly_cap_spin.value() == 120.0
    dialog.monthly_cap_spin.setValue(250.5)
    assert dialog.settings().runpod.monthly_cap_usd == Decimal("250.50")
    dialog.monthly_cap_spin.setValue(0)  # "no cap"
    assert dialog.settings().runpod.monthly_cap_usd is None
    assert dialog.monthly_cap_spin.text() == "no cap"


@pytest.mark.slow
def test_the_runtime_check_shows_torch_and_gpus(qtbot: Any, qloop: Any, home: Path) -> None:
    dialog, _ = make_dialog(SecretStore(_BrokenBackend()))
    qtbot.addWidget(dialog)

    async def body() -> None:
        with qtbot.waitSignal(dialog.doctor_finished, timeout=300_000):
            dialog.run_doctor()
            await until(lambda: dialog.doctor_button.isEnabled(), 300)

    run(qloop, body())
    text = dialog.doctor_label.text()
    assert text.startswith("torch 2.") and ("GPU" in text)


@pytest.mark.expect_log("cannot start the trainer runtime")
def test_a_runtime_that_cannot_start_says_so(qtbot: Any, qloop: Any, home: Path) -> None:
    dialog, _ = make_dialog(SecretStore(_BrokenBackend()))
    qtbot.addWidget(dialog)
    dialog.python_edit.setText(str(home / "no-such-python"))

    async def body() -> None:
        dialog.run_doctor()
        await until(lambda: dialog.doctor_button.isEnabled(), 30)

    run(qloop, body())
    assert "cannot start the trainer runtime" in dialog.doctor_label.text()


def test_describe_doctor_counts_gpus() -> None:
    report = {
        "torch": "2.5.1+cu124",
        "cuda_available": True,
        "cuda_version": "12.4",
        "gpus": [{"index": i, "name": "NVIDIA RTX 4090", "memory_gb": 24.0} for i in range(2)],
        "problems": [],
    }
    doctor = DoctorReport.parse(
        {"python": "3.12.1", "executable": "/x/python", "ok": True, **report}
    )
    assert describe_doctor(doctor) == "torch 2.5.1+cu124, CUDA 12.4, 2 × NVIDIA RTX 4090"
