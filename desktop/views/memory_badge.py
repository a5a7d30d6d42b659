"""A small "fit: 11.2 / 24 GB ●" badge: estimated GPU memory against the chosen GPU.

It also says what the runtime lacks ("needs CUDA: this runtime has none"), in red, when the
window hands it the runtime's blockers; and a click opens `BreakdownPopover`, the estimate's
rows (weights, adapter, gradients, optimizer, activations, overhead, total) and assumptions.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QComboBox, QFrame, QGridLayout, QHBoxLayout, QLabel, QWidget

from desktop.views.operations import GPUS, FitLevel, MemoryEstimate, fit_level

__all__ = ["LEVEL_COLOURS", "BreakdownPopover", "MemoryFitBadge"]

LEVEL_COLOURS: dict[str, str] = {"green": "#2e9e44", "amber": "#e0a800", "red": "#d9534f"}


class BreakdownPopover(QFrame):
    """The memory estimate's breakdown, one row per part, in a popup under the badge."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Popup)
        self.setObjectName("fit_breakdown")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.grid = QGridLayout(self)
        self._rows: list[tuple[str, str]] = []

    def show_estimate(
        self, title: str, estimate: MemoryEstimate | None, reason: str, blockers: list[str]
    ) -> None:
        """Fill the rows: the blockers, the breakdown (or why there is none), assumptions."""
        while self.grid.count():
            item = self.grid.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        self._rows = []
        heading = QLabel(f"<b>{title}</b>")
        self.grid.addWidget(heading, 0, 0, 1, 2)
        row = 1
        for blocker in blockers:
            said = QLabel(blocker)
            said.setWordWrap(True)
            said.setStyleSheet(f"color: {LEVEL_COLOURS['red']};")
            self.grid.addWidget(said, row, 0, 1, 2)
            row += 1
        if estimate is None:
            self.grid.addWidget(QLabel(f"No memory estimate: {reason}"), row, 0, 1, 2)
            return
        parts = [(label, f"{gb:.2f} GB") for label, gb in estimate.rows()]
        parts.append(("Total", f"{estimate.total_gb:.1f} GB"))
        for label, value in parts:
            name = QLabel(f"<b>{label}</b>" if label == "Total" else label)
            amount = QLabel(value)
            amount.setAlignment(Qt.AlignmentFlag.AlignRight)
            self.grid.addWidget(name, row, 0)
            self.grid.addWidget(amount, row, 1)
            self._rows.append((label, value))
            row += 1
        notes = QLabel(estimate.assumptions)
        notes.setWordWrap(True)
        notes.setStyleSheet("color: #666666;")
        notes.setMaximumWidth(520)
        self.grid.addWidget(notes, row, 0, 1, 2)

    def row_labels(self) -> list[str]:
        """The breakdown's row labels, in order ("Weights (8.03 B params)", ..., "Total")."""
        return [label for label, _ in self._rows]

    def value_of(self, prefix: str) -> str | None:
        """The value shown on the first row whose label starts with `prefix`."""
        return next((value for label, value in self._rows if label.startswith(prefix)), None)


class MemoryFitBadge(QWidget):
    """Shows a `MemoryEstimate` against a GPU picked from `memory_fit.GPUS`.

    The window computes the estimate (it reads the model's config.json) and passes it in; the
    badge only displays it. The tooltip holds the breakdown and the assumptions.

    Signals:
        gpu_changed(str, float): the user picked another GPU (name, memory in GB).
    """

    gpu_changed = Signal(str, float)

    def __init__(self, gpu: str = "RTX 4090 24 GB", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.gpu_combo = QComboBox()
        self.gpu_combo.setObjectName("gpu_combo")
        self.gpu_combo.setToolTip("The GPU to check the memory estimate against.")
        for name, gb in GPUS.items():
            self.gpu_combo.addItem(name, gb)
        self.text_label = QLabel()
        self.text_label.setObjectName("fit_text")
        self.dot_label = QLabel("●")
        self.dot_label.setObjectName("fit_dot")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.gpu_combo)
        layout.addWidget(self.text_label)
        layout.addWidget(self.dot_label)
        self._estimate: MemoryEstimate | None = None
        self._reason = "no estimate yet"
        self._blockers: list[str] = []
        self.popover = BreakdownPopover(self)
        for label in (self.text_label, self.dot_label):
            label.setCursor(Qt.CursorShape.PointingHandCursor)
        self.set_gpu(gpu)
        self.gpu_combo.currentIndexChanged.connect(self._on_gpu_combo_changed)
        self._refresh()

    def gpu(self) -> tuple[str, float]:
        """The chosen GPU's name and memory in GB."""
        return self.gpu_combo.currentText(), float(self.gpu_combo.currentData())

    def set_gpu(self, name: str) -> None:
        """Choose a GPU by its name in `GPUS`.

        Raises:
            ValueError: not a known GPU name.
        """
        index = self.gpu_combo.findText(name)
        if index < 0:
            raise ValueError(f"unknown GPU {name!r}; choose one of {', '.join(GPUS)}")
        self.gpu_combo.setCurrentIndex(index)

    def set_estimate(self, estimate: MemoryEstimate | None, reason: str = "") -> None:
        """Show an estimate, or None with the reason there is none (e.g. an unknown model)."""
        self._estimate = estimate
        self._reason = reason or "no estimate"
        self._refresh()

    def set_blockers(self, blockers: list[str]) -> None:
        """What the runtime lacks for this config ("needs CUDA: ..."); [] when nothing."""
        self._blockers = list(blockers)
        self._refresh()

    def estimate(self) -> MemoryEstimate | None:
        """The estimate shown, or None."""
        return self._estimate

    def level(self) -> FitLevel | None:
        """green / amber / red for the current estimate and GPU (red while the runtime lacks
        something the config needs), None without an estimate."""
        if self._blockers:
            return "red"
        if self._estimate is None:
            return None
        return fit_level(self._estimate.total_gb, self.gpu()[1])

    def show_breakdown(self) -> None:
        """Open the breakdown popover under the badge."""
        self.popover.show_estimate(self.gpu()[0], self._estimate, self._reason, self._blockers)
        self.popover.adjustSize()
        self.popover.move(self.mapToGlobal(QPoint(0, self.height())))
        self.popover.show()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        """A click on the text or the dot opens the breakdown (the GPU combo keeps its own)."""
        if event.button() == Qt.MouseButton.LeftButton:
            self.show_breakdown()
            event.accept()
            return
        super().mousePressEvent(event)

    def text(self) -> str:
        """The badge's text, e.g. "fit: 11.2 / 24 GB"."""
        return self.text_label.text()

    def _refresh(self) -> None:
        name, gb = self.gpu()
        if self._blockers:  # what the runtime lacks comes before how much memory it takes
            first = self._blockers[0].split(" (", 1)[0].split(";", 1)[0]
            more = f" (+{len(self._blockers) - 1} more)" if len(self._blockers) > 1 else ""
            self.text_label.setText(f"{first}{more}")
            self.text_label.setStyleSheet(f"color: {LEVEL_COLOURS['red']};")
            self.dot_label.setStyleSheet(f"color: {LEVEL_COLOURS['red']};")
            self.setToolTip("\n".join(self._blockers) + "\n\nClick for the memory breakdown.")
            return
        self.text_label.setStyleSheet("")
        level = self.level()
        if self._estimate is None or level is None:
            self.text_label.setText(f"fit: ? / {gb:g} GB")
            self.dot_label.setStyleSheet("color: #888888;")
            self.setToolTip(f"No memory estimate: {self._reason}")
            return
        self.text_label.setText(f"fit: {self._estimate.total_gb:.1f} / {gb:g} GB")
        self.dot_label.setStyleSheet(f"color: {LEVEL_COLOURS[level]};")
        verdict = {
            "green": "fits with room to spare",
            "amber": "fits, but tightly: expect out-of-memory if sequences run long",
            "red": "does not fit: lower batch size or max length, enable gradient "
            "checkpointing, or use QLoRA",
        }[level]
        breakdown = self._estimate.summary()
        self.setToolTip(f"{name}: {verdict}\n\nClick for the breakdown.\n{breakdown}")

    def _on_gpu_combo_changed(self, _index: int) -> None:
        self._refresh()
        name, gb = self.gpu()
        self.gpu_changed.emit(name, gb)
