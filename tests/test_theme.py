"""The dark theme: it follows the system unless Settings chooses, and the chart goes dark too
(pytest-qt, offscreen)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot
from view_helpers import make_job

from desktop.models import Settings
from desktop.models.settings import load_settings, save_settings
from desktop.views.chart.widget import LossChart
from desktop.views.operations import MessageBus, Operations
from desktop.views.settings_dialog import SettingsDialog
from desktop.views.state import AppState
from desktop.views.theme import ThemeFollower

pytest_plugins = ["app_fixtures"]
pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("does not support propagateSizeHints"),  # offscreen plugin
]


@pytest.fixture
def chart(qtbot: QtBot) -> Iterator[LossChart]:
    state = AppState()
    state.job_added(make_job("a", "alpha"))
    chart = LossChart(state, redraw_interval_ms=10)
    qtbot.addWidget(chart)
    chart.resize(600, 400)
    state.set_selected_job_ids(["a"])
    steps = np.arange(20.0)
    state.add_metric_arrays("a", "loss", steps, 2.0 - steps / 20, steps)
    chart.redraw()
    palette = QApplication.palette()
    yield chart
    QApplication.setPalette(palette)


def _window_lightness() -> int:
    return QApplication.palette().color(QPalette.ColorRole.Window).lightness()


def test_the_theme_follows_the_system_until_settings_choose(chart: LossChart) -> None:
    scheme = [Qt.ColorScheme.Light]
    follower = ThemeFollower(chart, scheme=lambda: scheme[0])
    assert not follower.apply("system") and _window_lightness() > 150
    scheme[0] = Qt.ColorScheme.Dark
    follower.system_changed()  # the system went dark: so does the window, chart included
    assert follower.dark and _window_lightness() < 80
    assert chart.plot.backgroundBrush().color().lightness() < 50
    assert chart.plot.getPlotItem().getAxis("left").textPen().color().lightness() > 150
    assert all(label.opts["color"].lightness() > 150 for _s, label in chart.legend.items)
    image = chart.plot.grab().toImage()
    corner = image.pixelColor(image.width() - 3, image.height() - 3)
    assert corner.lightness() < 50  # what is painted is dark, not only the settings

    assert not follower.apply("light")  # chosen in Settings: the system no longer leads
    scheme[0] = Qt.ColorScheme.Dark
    follower.system_changed()
    assert not follower.dark and _window_lightness() > 150
    assert chart.plot.backgroundBrush().color().lightness() > 200
    assert follower.apply("dark") and _window_lightness() < 80
    follower.apply("light")


def test_settings_choose_the_theme_and_keep_it(qtbot: QtBot, qloop: Any, home: Path) -> None:
    dialog = SettingsDialog(Settings(), Operations(MessageBus()), secret_store=None)
    qtbot.addWidget(dialog)
    assert dialog.theme_combo.currentData() == "system"
    dialog.theme_combo.setCurrentIndex(dialog.theme_combo.findData("dark"))
    chosen = dialog.settings()
    assert chosen.theme == "dark"
    assert load_settings(save_settings(chosen)).theme == "dark"
    with pytest.raises(ValueError, match="theme"):
        Settings.model_validate({"theme": "purple"})
