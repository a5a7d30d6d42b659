"""The generation settings a person sets before asking a model (temperature, top-p, max new
tokens, seed), for the Chat tab and Batch compare alike.

Not a widget: the two panels lay the four spin boxes out differently (a grid, a row), so this
owns the boxes and reads and sets a `GenerationSettings` from them; `labelled()` gives each
with its label for the panel's layout.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox, QWidget

from desktop.views import operations

__all__ = ["GenerationControls"]


class GenerationControls:
    """Temperature, top-p, max new tokens and seed spin boxes, children of `parent`.

    Args:
        parent: the panel that shows them.
        initial: the settings they start with (default: `GenerationSettings()`'s).
    """

    def __init__(self, parent: QWidget, initial: Any = None) -> None:
        self.temperature = QDoubleSpinBox(parent)
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setToolTip("0 = greedy: the same answer every time")
        self.top_p = QDoubleSpinBox(parent)
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.max_new_tokens = QSpinBox(parent)
        self.max_new_tokens.setRange(1, 32768)
        self.seed = QSpinBox(parent)
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setSpecialValueText("random")
        self.show(initial if initial is not None else operations.GenerationSettings())

    def labelled(self) -> tuple[tuple[str, QDoubleSpinBox | QSpinBox], ...]:
        """(label, box) of each setting, in the order they are shown."""
        return (
            ("Temperature", self.temperature),
            ("Top-p", self.top_p),
            ("Max new tokens", self.max_new_tokens),
            ("Seed", self.seed),
        )

    def settings(self) -> Any:
        """The `GenerationSettings` the boxes show (seed -1: random, no seed)."""
        seed = self.seed.value()
        return operations.GenerationSettings(
            temperature=round(self.temperature.value(), 2),
            top_p=round(self.top_p.value(), 2),
            max_new_tokens=self.max_new_tokens.value(),
            seed=None if seed < 0 else seed,
        )

    def show(self, settings: Any) -> None:
        """Show these `GenerationSettings` in the boxes."""
        self.temperature.setValue(settings.temperature)
        self.top_p.setValue(settings.top_p)
        self.max_new_tokens.setValue(settings.max_new_tokens)
        self.seed.setValue(-1 if settings.seed is None else settings.seed)
