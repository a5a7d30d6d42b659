"""The row of controls above the chart: smoothing, x axis, which panels, log learning rate,
and the PNG and CSV buttons. `LossChart` (widget.py) connects them."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSlider,
    QToolButton,
    QWidget,
)

from desktop.views.chart.curves import X_TITLES, XAxisMode

__all__ = ["ChartControls"]


class ChartControls(QWidget):
    """The chart's controls, laid out in one row; they hold no state of their own."""

    def __init__(self, smoothing: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal, self)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(round(smoothing * 100))
        self.smoothing_slider.setMinimumWidth(50)
        self.smoothing_slider.setToolTip(
            "Debiased exponential moving average, as in TensorBoard (0: raw). The raw curve "
            "stays faintly behind the smoothed one."
        )
        self.smoothing_label = QLabel(f"{smoothing:.2f}", self)
        self.smoothing_label.setMinimumWidth(32)
        self.x_combo = QComboBox(self)
        for mode in XAxisMode:
            self.x_combo.addItem(X_TITLES[mode], mode.value)
        # The panel switches sit in a menu: as check boxes they made the chart 800 px wide
        # at least, which a 1280-pixel window cannot give it beside the editor.
        self.panels_button = QToolButton(self)
        self.panels_button.setText("Panels")
        self.panels_button.setToolTip("Which panels the chart shows, and the lr axis")
        self.panels_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.panels_button)
        self.grad_norm_check = self._check(menu, "Grad norm", "Grad norm in a panel of its own")
        self.throughput_check = self._check(
            menu, "Throughput", "Trained tokens/s and samples/s, when logged"
        )
        self.throughput_check.setChecked(True)
        self.lr_log_check = self._check(menu, "Log lr axis", "Learning rate on a log axis")
        menu.setToolTipsVisible(True)
        self.panels_button.setMenu(menu)
        self.png_button = QToolButton(self)
        self.png_button.setText("PNG…")
        self.png_button.setToolTip("Save the chart as a PNG image")
        self.csv_button = QToolButton(self)
        self.csv_button.setText("CSV…")
        self.csv_button.setToolTip("Save the plotted series as a CSV, one row per step")
        # Shown under the plot (LossChart lays it out): in this row it took 110 px of width.
        self.loading_label = QLabel("Loading history …")
        self.loading_label.hide()
        (policy := self.loading_label.sizePolicy()).setRetainSizeWhenHidden(True)
        self.loading_label.setSizePolicy(policy)  # showing it must not re-lay out the plot

        row = QHBoxLayout(self)
        row.setContentsMargins(4, 0, 4, 0)
        row.addWidget(QLabel("Smooth", self))
        row.addWidget(self.smoothing_slider, 1)
        row.addWidget(self.smoothing_label)
        row.addSpacing(8)
        row.addWidget(QLabel("x:", self))
        row.addWidget(self.x_combo)
        row.addWidget(self.panels_button)
        row.addWidget(self.png_button)
        row.addWidget(self.csv_button)

    def _check(self, menu: QMenu, text: str, tip: str) -> QAction:
        action = menu.addAction(text)
        action.setCheckable(True)
        action.setToolTip(tip)
        return action
