"""Settings applied in the window reach the disk, the newest last, even when they come while
the previous save is still being written (seen in CI: the Slurm panel's node count, changed
while its partition's save ran, was never saved), and when the window closes first.

The real window over a job service that is not started; the first write is held in its worker
thread by an event, so the "while a save runs" is certain, not a matter of timing.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until

from desktop.models import Settings, load_settings
from desktop.views import operations
from desktop.views.main_window import SAVE_SETTINGS as SAVE

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.qt_log_level_fail("CRITICAL")


class _HeldWrites:
    """`operations.save_settings` whose first write waits for `release`; records each write."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.written: list[int] = []
        self._real = operations.save_settings

    def __call__(self, settings: Settings) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(60), "the test never released the first write"
        self._real(settings)
        self.written.append(settings.gpu_slots or 0)


def _window(qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, _HeldWrites]:
    from desktop.views.app import build_window

    held = _HeldWrites()
    monkeypatch.setattr(operations, "save_settings", held)
    window = build_window(settings=Settings(), check_runtime=False)
    qtbot.addWidget(window)
    return window, held


def test_a_change_applied_while_a_save_runs_is_saved_after_it(
    qtbot: Any, qloop: Any, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window, held = _window(qtbot, monkeypatch)

    async def body() -> None:
        window.show()
        await window.start()
        window.apply_settings(window.settings.model_copy(update={"gpu_slots": 1}))
        await until(held.entered.is_set)  # the first write is in its thread, held
        window.apply_settings(window.settings.model_copy(update={"gpu_slots": 2}))
        window.apply_settings(window.settings.model_copy(update={"gpu_slots": 3}))
        held.release.set()
        await until(lambda: not window.ops.is_running(SAVE))
        assert held.written == [1, 3], "the held write, then the newest once: none lost"
        assert load_settings().gpu_slots == 3
        window.apply_settings(window.settings.model_copy(update={"gpu_slots": 4}))
        await until(lambda: held.written[-1:] == [4])  # and a later change starts a save again
        window.close()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
    assert load_settings().gpu_slots == 4


def test_the_newest_settings_are_saved_when_the_window_closes_before_their_save(
    qtbot: Any, qloop: Any, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window, held = _window(qtbot, monkeypatch)

    async def body() -> None:
        window.show()
        await window.start()
        window.apply_settings(window.settings.model_copy(update={"gpu_slots": 1}))
        await until(held.entered.is_set)
        window.apply_settings(window.settings.model_copy(update={"gpu_slots": 2}))
        held.release.set()
        # No await between: the running save gets no turn of the loop before the close.
        window.close()
        assert load_settings().gpu_slots == 2, "the close wrote the newest settings"
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
    assert held.written[-1] == 2 and load_settings().gpu_slots == 2
