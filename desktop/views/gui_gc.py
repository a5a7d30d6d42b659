"""Python's cyclic garbage collection on the Qt thread only.

A Qt object in a reference cycle is destroyed when Python's collector finds it, in whichever
thread happens to allocate at that moment. Destroyed off the Qt thread, it takes Qt's locks
there and then waits for Python's, while the Qt thread, holding Python's lock, waits for Qt's:
a window test froze that way (a settings save's JSON in a worker thread set off a collection
that found an earlier window's objects). `GuiGarbageCollector` turns automatic collection off
and collects from a timer on the Qt thread instead, one generation at a time when its count
passes Python's own threshold (as pyqtgraph's `GarbageCollector` does).
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QTimer

__all__ = ["GuiGarbageCollector"]


class GuiGarbageCollector:
    """Collects cyclic garbage on the Qt thread, every `interval_ms`, while started.

    Create and start it on the Qt thread; `stop` collects once more there and gives automatic
    collection back (when it was on before `start`).
    """

    def __init__(self, interval_ms: int = 500) -> None:
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.check)
        self._threshold = gc.get_threshold()
        self._was_enabled = False

    def start(self) -> None:
        """Turn automatic collection off; collect from the timer instead."""
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        """Collect everything now, on this thread, and give automatic collection back."""
        self._timer.stop()
        gc.collect()
        if self._was_enabled:
            gc.enable()

    def check(self) -> None:
        """Collect the generations whose counts passed their thresholds (the timer's slot)."""
        counts = gc.get_count()
        generation = -1
        for level in range(3):
            if counts[level] > self._threshold[level]:
                generation = level
        if generation >= 0:
            gc.collect(generation)
