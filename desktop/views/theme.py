"""The light and dark themes: the app's palette and the chart's colours, following the
system's colour scheme unless Settings chooses one (`Settings.theme`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QComboBox, QWidget

__all__ = ["THEMES", "ThemeFollower", "dark_palette", "is_dark", "theme_combo"]

THEMES: tuple[tuple[str, str], ...] = (
    ("system", "Follow the system"),
    ("light", "Light"),
    ("dark", "Dark"),
)
"""(Settings.theme value, label in Settings)."""


def _system_scheme() -> Qt.ColorScheme:
    return QGuiApplication.styleHints().colorScheme()


def is_dark(theme: str, scheme: Callable[[], Qt.ColorScheme] = _system_scheme) -> bool:
    """Whether `theme` ("system", "light" or "dark") is dark now."""
    if theme == "system":
        return scheme() == Qt.ColorScheme.Dark
    return theme == "dark"


def dark_palette() -> QPalette:
    """A dark palette for the Fusion style (readable contrast, blue highlight)."""
    palette = QPalette()
    role = QPalette.ColorRole
    colors = {
        role.Window: "#2b2b2b",
        role.WindowText: "#e6e6e6",
        role.Base: "#1f1f1f",
        role.AlternateBase: "#2a2a2a",
        role.ToolTipBase: "#333333",
        role.ToolTipText: "#e6e6e6",
        role.Text: "#e6e6e6",
        role.Button: "#353535",
        role.ButtonText: "#e6e6e6",
        role.BrightText: "#ff6b6b",
        role.Link: "#6ab0f3",
        role.Highlight: "#2f6fb3",
        role.HighlightedText: "#ffffff",
        role.PlaceholderText: "#8a8a8a",
    }
    for key, value in colors.items():
        palette.setColor(key, QColor(value))
    for key in (role.Text, role.ButtonText, role.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, key, QColor("#7a7a7a"))
    return palette


def theme_combo(current: str, parent: QWidget | None = None) -> QComboBox:
    """The Settings control: follow the system, light or dark."""
    combo = QComboBox(parent)
    combo.setObjectName("theme")
    for value, label in THEMES:
        combo.addItem(label, value)
    combo.setCurrentIndex(max(0, combo.findData(current)))
    combo.setToolTip("The window's colours, the chart's included")
    return combo


class ThemeFollower(QObject):
    """Applies a theme to the app and a chart, and again when the system's scheme changes
    while the theme is "system".

    Args:
        chart: an object with `set_dark(bool)` (the LossChart), or None.
        scheme: the system's colour scheme (tests pass their own).
    """

    def __init__(
        self,
        chart: Any,
        parent: QObject | None = None,
        *,
        scheme: Callable[[], Qt.ColorScheme] = _system_scheme,
    ) -> None:
        super().__init__(parent)
        self._chart = chart
        self._scheme = scheme
        self._theme = "system"
        self._light = QApplication.palette()
        self.dark = False
        QGuiApplication.styleHints().colorSchemeChanged.connect(self.system_changed)

    def apply(self, theme: str) -> bool:
        """Use `theme` ("system", "light" or "dark"); returns whether it is dark now."""
        self._theme = theme
        dark = is_dark(theme, self._scheme)
        if dark != self.dark:
            self.dark = dark
            app = QApplication.instance()
            if isinstance(app, QApplication):
                app.setPalette(dark_palette() if dark else self._light)
            if self._chart is not None:
                self._chart.set_dark(dark)
        return dark

    def system_changed(self, *_args: object) -> None:
        """The system's scheme changed: follow it when the theme is "system"."""
        if self._theme == "system":
            self.apply("system")
