"""The window started on a damaged job database offers to repair it (issue 8: "also offered by
the window when the check fails").

The store is damaged as `test_hostile_engine_store` damages it (garbage over pages in the
middle of the closed file); a real job folder (the completed job of the upgrade fixture, made
by the real trainer) is in `jobs/`. The real entry point (`desktop.views.app.main`) runs; the
test answers the dialog it shows. Repair: the window opens and its job table lists the job
rebuilt from its folder. Quit: the app ends and the database file keeps its bytes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QWidget
from test_hostile_engine_store import _damage_middle_pages, _write_store

from desktop.core.store import DB_FILENAME
from desktop.views import app as app_module
from desktop.views.job_model import JOB_ID_ROLE

pytest_plugins = ["app_fixtures"]

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "upgrade" / "v0.1.0-2026-12-02"
DIALOG = "repair_store_dialog"
TIMEOUT_MS = 120_000


def _damaged_home(home: Path) -> tuple[Path, str]:
    """A damaged store in `home` and one real job folder; (the store's path, the job's id)."""
    db = _write_store(home)
    job_id = json.loads((FIXTURE / "fixture.json").read_text(encoding="utf-8"))["jobs"]["completed"]
    shutil.copytree(FIXTURE / "home" / "jobs" / job_id, home / "jobs" / job_id)
    _damage_middle_pages(db)
    return db, job_id


def _visible(name: str) -> QWidget | None:
    for widget in QApplication.topLevelWidgets():
        if widget.objectName() == name and widget.isVisible():
            return widget
    return None


def _main_window() -> Any:
    from desktop.views.main_window import MainWindow

    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, MainWindow) and widget.isVisible():
            return widget
    return None


def _drive(step: Callable[[], bool]) -> tuple[int, list[str]]:
    """Run the app; call `step` every 100 ms until it returns True (or time runs out)."""
    failures: list[str] = []
    waited = [0]

    def give_up(why: str) -> None:
        failures.append(why)
        for widget in QApplication.topLevelWidgets():
            widget.close()

    def poll() -> None:
        try:
            if step():
                return
        except Exception as exc:  # a failed check must end the app, not leave it waiting
            give_up(f"{type(exc).__name__}: {exc}")
            return
        waited[0] += 100
        if waited[0] > TIMEOUT_MS:
            give_up("timed out")
            return
        QTimer.singleShot(100, poll)

    QTimer.singleShot(100, poll)
    return app_module.main([]), failures


def _table_ids(window: Any) -> set[str]:
    model = window.jobs_view.table.model()  # what the table shows (through its filter)
    return {model.index(row, 0).data(JOB_ID_ROLE) for row in range(model.rowCount())}


@pytest.mark.slow
@pytest.mark.expect_log("job database failed its check")
def test_repair_is_offered_and_brings_the_jobs_back(qapp: Any, demo_home: Path) -> None:
    db, job_id = _damaged_home(demo_home)
    offered: list[str] = []
    listed: list[set[str]] = []

    def step() -> bool:
        dialog = _visible(DIALOG)
        if dialog is not None and not offered:
            offered.append(dialog.text())  # type: ignore[attr-defined]
            dialog.repair_button.click()  # type: ignore[attr-defined]
            return False
        window = _main_window()
        if offered and window is not None and window.is_ready and job_id in _table_ids(window):
            listed.append(_table_ids(window))
            window.close()
            return True
        return False

    code, failures = _drive(step)
    assert not failures, (failures, offered)
    assert offered and "damaged" in offered[0] and str(db) in offered[0], offered
    assert code == 0
    assert listed == [{job_id}]
    assert list(demo_home.glob(f"{DB_FILENAME}.damaged-*")), "the damaged file is kept aside"


@pytest.mark.slow
@pytest.mark.expect_log("job database failed its check")
def test_quit_leaves_the_damaged_store_untouched(qapp: Any, demo_home: Path) -> None:
    db, _ = _damaged_home(demo_home)
    before = db.read_bytes()
    offered: list[str] = []

    def step() -> bool:
        dialog = _visible(DIALOG)
        if dialog is not None:
            offered.append(dialog.text())  # type: ignore[attr-defined]
            dialog.quit_button.click()  # type: ignore[attr-defined]
            return True
        return False

    code, failures = _drive(step)
    assert not failures, failures
    assert len(offered) == 1 and "damaged" in offered[0], offered
    assert code == 1
    assert db.read_bytes() == before
    assert not list(demo_home.glob(f"{DB_FILENAME}.damaged-*"))
    assert _main_window() is None


def test_the_offer_names_what_sqlite_found(tmp_path: Path) -> None:
    """The check at open runs on the open connection: its finding is SQLite's own words about
    the file, not the error of a check run after the connection was closed."""
    from desktop.core.repair import store_problem

    home = tmp_path / "home"
    db, _ = _damaged_home(home)
    problem = store_problem(home)
    assert problem is not None and str(db) in problem and "damaged" in problem, problem
    assert "closed database" not in problem, problem
