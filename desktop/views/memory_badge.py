"""A small "fit: 11.2 / 24 GB ●" badge: estimated GPU memory against the chosen GPU."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

from desktop.views.operations import GPUS, FitLevel, MemoryEstimate, fit_level

__all__ = ["LEVEL_COLOURS", "MemoryFitBadge"]

LEVEL_COLOURS: dict[str, str] = {"green": "#2e9e44", "amber": "#e0a800", "red": "#d9534f"}


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

    def level(self) -> FitLevel | None:
        """green / amber / red for the current estimate and GPU, None without an estimate."""
        if self._estimate is None:
            return None
        return fit_level(self._estimate.total_gb, self.gpu()[1])

    def text(self) -> str:
        """The badge's text, e.g. "fit: 11.2 / 24 GB"."""
        return self.text_label.text()

    def _refresh(self) -> None:
        name, gb = self.gpu()
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
        self.setToolTip(f"{name}: {verdict}\n\n{self._estimate.summary()}")

    def _on_gpu_combo_changed(self, _index: int) -> None:
        self._refresh()
        name, gb = self.gpu()
        self.gpu_changed.emit(name, gb)
