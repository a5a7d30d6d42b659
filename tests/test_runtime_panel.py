"""Settings → Trainer runtime in the window: Set up with its progress bar, live log and Cancel,
Use existing…, Remove, and a broken runtime's one sentence on the runtime badge and at Start.

The setup runs against a fake uv (a script at the edge, `FTDESK_UV`): the real one from a
wheelhouse is tests/test_runtime_setup.py's (about 50 s), too slow to repeat under the GUI.
The fake makes a venv whose `python` is this test run's own interpreter, so the setup's last
step, `trainer doctor`, is real.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from PySide6.QtCore import Qt

from desktop.core.runtime import SETUP_FIX
from desktop.models import Settings
from desktop.views.operations import MessageBus, Operations
from desktop.views.settings_dialog import SettingsDialog

pytest_plugins = ["app_fixtures"]

FAKE_UV = """#!/bin/sh
echo "fake uv $1 $2"
case "$1" in
venv)
  for last; do :; done
  mkdir -p "$last/bin"
  echo "home = /usr/bin" > "$last/pyvenv.cfg"
  printf '#!/bin/sh\\nexec %s "$@"\\n' "{python}" > "$last/bin/python"
  chmod +x "$last/bin/python";;
pip)
  if [ -e "{block}" ]; then sleep 600 & echo $! > "{block}.pid"; wait; fi
  echo "Installed 1 package";;
esac
"""


class _NoKeychain:
    """The dialog's secret store, never asked in these tests."""


def make_dialog(settings: Settings | None = None) -> SettingsDialog:
    return SettingsDialog(settings or Settings(), Operations(MessageBus()), _NoKeychain())  # type: ignore[arg-type]


@pytest.fixture
def fake_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake uv; while the returned file exists, its `pip install` blocks."""
    block = tmp_path / "block"
    uv = tmp_path / "uv"
    uv.write_text(FAKE_UV.format(python=sys.executable, block=block), encoding="utf-8")
    uv.chmod(uv.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FTDESK_UV", str(uv))
    return block


def test_set_up_shows_progress_and_log_cancels_then_resumes_to_a_ready_runtime(
    qtbot: Any, qloop: Any, home: Path, fake_uv: Path
) -> None:
    dialog = make_dialog()
    qtbot.addWidget(dialog)
    panel = dialog.runtime_panel
    finished: list[str] = []
    panel.setup_finished.connect(finished.append)
    fake_uv.touch()
    venv_python = home / "runtime" / "venv" / "bin" / "python"

    async def body() -> None:
        dialog.show()
        qtbot.mouseClick(panel.setup_button, Qt.MouseButton.LeftButton)
        # The plan first (disk space), then uv's lines, live, while the torch step blocks.
        await until(lambda: "fake uv pip install" in panel.log.toPlainText(), 30)
        log = panel.log.toPlainText()
        assert log.startswith("disk space: needs about 3.0 GB in ") or log.startswith(
            "disk space: needs about 9.0 GB in "
        )
        assert "fake uv venv" in log
        assert panel.progress.isVisible() and panel.progress.maximum() == 4
        assert panel.progress.value() == 1  # the venv is made; torch is being installed
        assert panel.cancel_button.isEnabled() and not panel.setup_button.isEnabled()
        await until(lambda: Path(f"{fake_uv}.pid").exists(), 30)
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
        await until(lambda: finished, 60)
        assert "was cancelled" in finished[0] and "resumes it" in finished[0]
        assert "was cancelled" in panel.verdict_label.text()
        assert panel.setup_button.isEnabled() and not panel.cancel_button.isEnabled()
        assert dialog.python_edit.text() == ""  # nothing chosen
        # Set up again: the venv is kept, the rest installs, doctor (real) says ready.
        fake_uv.unlink()
        qtbot.mouseClick(panel.setup_button, Qt.MouseButton.LeftButton)
        await until(lambda: len(finished) == 2, 120)
        assert finished[1] == "ready"
        log = panel.log.toPlainText()
        assert "resuming: kept from the last attempt: venv" in log
        assert "fake uv venv" not in log
        assert panel.progress.value() == panel.progress.maximum()
        assert dialog.python_edit.text() == str(venv_python)
        assert "ready" in panel.verdict_label.text()
        dialog.close()

    run(qloop, body())
    assert dialog.settings().trainer_python == str(venv_python)
    state = json.loads((home / "runtime" / "setup.json").read_text(encoding="utf-8"))
    assert state["state"] == "ready"


def test_use_existing_checks_the_pick_and_remove_refuses_a_persons_python(
    qtbot: Any, qloop: Any, home: Path, tmp_path: Path
) -> None:
    not_a_venv = tmp_path / "folder"
    not_a_venv.mkdir()
    picks = iter([str(not_a_venv), sys.prefix])
    dialog = make_dialog()
    qtbot.addWidget(dialog)
    panel = dialog.runtime_panel
    panel._picker = lambda: next(picks)
    panel._confirm = lambda _question: True
    shown: list[str] = []
    panel.status_shown.connect(shown.append)

    async def body() -> None:
        qtbot.mouseClick(panel.use_button, Qt.MouseButton.LeftButton)
        await until(lambda: shown, 30)
        assert shown[0] == (
            f"the trainer runtime {not_a_venv} is a folder but not a virtual environment (it "
            f"has no bin/python); {SETUP_FIX}"
        )
        assert dialog.python_edit.text() == ""
        qtbot.mouseClick(panel.use_button, Qt.MouseButton.LeftButton)
        await until(lambda: len(shown) == 2, 120)
        assert dialog.python_edit.text() == str(Path(sys.prefix) / "bin" / "python")
        qtbot.mouseClick(panel.remove_button, Qt.MouseButton.LeftButton)
        await until(lambda: len(shown) == 3, 30)
        assert "is your own Python, not one this app set up, so nothing was deleted" in shown[2]
        dialog.close()

    run(qloop, body())
    assert Path(sys.prefix).is_dir()


@pytest.mark.expect_log("is a folder but not a virtual environment")
def test_a_broken_runtime_is_one_sentence_on_the_badge_and_at_start(
    qtbot: Any, qloop: Any, demo_home: Path, tmp_path: Path
) -> None:
    from desktop.views.app import build_window

    folder = tmp_path / "not-a-venv"
    folder.mkdir()
    window = build_window(settings=Settings(trainer_python=str(folder)), check_runtime=False)
    qtbot.addWidget(window)
    sentence = (
        f"the trainer runtime {folder} is a folder but not a virtual environment (it has no "
        f"bin/python); {SETUP_FIX}"
    )
    checked: list[str] = []
    window.runtime_checked.connect(checked.append)

    async def body() -> None:
        window.show()
        await window.start()
        window.check_runtime()
        await until(lambda: checked, 30)
        assert checked == [sentence]
        assert window.status_bar.runtime_label.toolTip() == sentence
        assert "not usable" in window.status_bar.runtime_label.text()
        await until(lambda: window.start_button.isEnabled(), 30)
        qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
        await until(lambda: sentence in window.statusBar().toolTip(), 60)
        assert "Traceback" not in window.statusBar().toolTip()
        await until(lambda: not window.ops.is_running("start the job"), 30)
        window.close()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
