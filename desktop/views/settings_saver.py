"""Saving the settings the window applies: off the Qt thread, the newest always last.

A change can come while the last one is still being written (the Slurm panel sends one per
widget touched). One save operation runs at a time (`Operations` refuses a second of the same
name), so the running one keeps writing until the newest applied settings are on disk; and
the window's close writes them at once if that has not happened yet.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from desktop.views import operations

if TYPE_CHECKING:
    from desktop.models import Settings
    from desktop.views.operations import Operations

SAVE = "save the settings"


class SettingsSaver:
    """Writes the newest of the settings handed to `save`, one write at a time.

    `save` and `flush` run on the Qt thread; the writes run in a worker thread, each under a
    lock and each only when its settings are newer than the last written, so an older write
    that finishes late never puts old values back.
    """

    def __init__(self, ops: Operations) -> None:
        self._ops = ops
        self._lock = threading.Lock()
        self._newest: Settings | None = None
        self._version = 0  # the newest settings' number
        self._written = 0  # the number of the settings on disk

    def save(self, settings: Settings) -> None:
        """Have `settings` written soon (in the background)."""
        self._newest, self._version = settings, self._version + 1
        # On the Qt thread, as the running save's last look (`_save_newest` returning and the
        # operation ending happen in one step of the loop): it either sees this version or has
        # ended, and then a new one starts.
        if not self._ops.is_running(SAVE):
            self._ops.run(SAVE, self._save_newest())

    def flush(self) -> None:
        """Write the newest settings now unless they are on disk (blocks for a write in
        progress: one small file).

        Raises:
            ConfigError: the file cannot be written.
        """
        if self._newest is not None and self._written < self._version:
            self._write(self._newest, self._version)

    async def _save_newest(self) -> None:
        import asyncio

        while self._newest is not None and self._written < self._version:
            await asyncio.to_thread(self._write, self._newest, self._version)

    def _write(self, settings: Settings, version: int) -> None:
        with self._lock:
            if version > self._written:
                operations.save_settings(settings)
                self._written = version
