"""Writing what a person changes off the Qt thread, the newest always last.

A change can come while the last one is still being written: the Slurm panel sends new
settings for each widget touched, a chat turn can end while the previous turn's save writes.
`Operations` refuses a second operation of the same name while one runs, so a second save
would be lost; instead the running save keeps writing until the newest value is on disk, and
`flush` (at the window's close) writes it at once if that has not happened yet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from desktop.views.operations import Operations

__all__ = ["NewestWriter"]

T = TypeVar("T")


class NewestWriter(Generic[T]):
    """Writes the newest of the values handed to `save` with `write`, one write at a time.

    `save` and `flush` run on the Qt thread; the writes run in a worker thread, each under a
    lock and each only when its value is newer than the last written, so an older write that
    finishes late never puts old values back.

    Args:
        ops: runs the writes as the operation `name` (its errors go to the bus).
        name: the operation's name (what the person reads when a write fails).
        write: writes one value (blocking); the value must not change after `save`.
    """

    def __init__(self, ops: Operations, name: str, write: Callable[[T], None]) -> None:
        self._ops = ops
        self.name = name
        self._write_value = write
        self._lock = threading.Lock()
        self._newest: T | None = None
        self._version = 0  # the newest value's number
        self._written = 0  # the number of the value on disk

    def save(self, value: T) -> None:
        """Have `value` written soon (in the background)."""
        self._newest, self._version = value, self._version + 1
        # On the Qt thread, as the running save's last look (`_save_newest` returning and the
        # operation ending happen in one step of the loop): it either sees this version or has
        # ended, and then a new one starts.
        if not self._ops.is_running(self.name):
            self._ops.run(self.name, self._save_newest())

    def flush(self) -> None:
        """Write the newest value now unless it is on disk (blocks for a write in progress).

        Raises:
            Whatever `write` raises.
        """
        if self._newest is not None and self._written < self._version:
            self._write(self._newest, self._version)

    async def _save_newest(self) -> None:
        import asyncio

        while self._newest is not None and self._written < self._version:
            await asyncio.to_thread(self._write, self._newest, self._version)

    def _write(self, value: T, version: int) -> None:
        with self._lock:
            if version > self._written:
                self._write_value(value)
                self._written = version
