"""A cancel request set by SIGTERM / SIGINT and honoured at the end of a training step.

Kept apart from `trainer.callbacks` so the run can install its signal handlers before the
training stack is imported.
"""

from __future__ import annotations

import threading

__all__ = ["CancelRequest"]


class CancelRequest:
    """Set from a signal handler; read by the training loop at the end of each step."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.count = 0

    def request(self, reason: str) -> None:
        """Ask the loop to save and stop after the current step."""
        self.count += 1
        if not self.reason:
            self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        """True once a cancel was asked for."""
        return self._event.is_set()
