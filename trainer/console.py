"""What the training process printed, kept in memory for crash reports.

The local provider sends the process's stdout/stderr to `<job-dir>/train.log`; the trainer
itself does not write that file. When it crashes, the `error` event carries the last lines the
process printed, so `ConsoleTee` passes everything through to the real streams and keeps the
last lines in a ring buffer.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import TextIO

__all__ = ["ConsoleTee"]


class _TeeStream:
    """A text stream that writes through and feeds complete lines to a ring buffer."""

    def __init__(self, inner: TextIO, tee: ConsoleTee) -> None:
        self._inner = inner
        self._tee = tee

    def write(self, text: str) -> int:
        self._tee._feed(text)
        return self._inner.write(text)

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> object:
        # isatty, fileno, encoding, ... come from the real stream.
        return getattr(self._inner, name)


class ConsoleTee:
    """Keeps the last `max_lines` lines written to stdout and stderr.

    tqdm-style carriage-return updates keep only their last state, so a progress bar does not
    flood the buffer.
    """

    def __init__(self, max_lines: int = 50) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._partial = ""
        self._lock = threading.Lock()
        self._saved: tuple[TextIO, TextIO] | None = None

    def install(self) -> ConsoleTee:
        """Replace sys.stdout and sys.stderr with pass-through streams; returns self."""
        if self._saved is None:
            self._saved = (sys.stdout, sys.stderr)
            sys.stdout = _TeeStream(sys.stdout, self)
            sys.stderr = _TeeStream(sys.stderr, self)
        return self

    def uninstall(self) -> None:
        """Put the original streams back."""
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None

    def _feed(self, text: str) -> None:
        with self._lock:
            data = self._partial + text
            *complete, self._partial = data.split("\n")
            for line in complete:
                line = line.rsplit("\r", 1)[-1].rstrip()
                if line:
                    self._lines.append(line)
            if len(self._partial) > 10_000:
                self._partial = self._partial[-10_000:]

    def last_lines(self, n: int = 50) -> list[str]:
        """The last `n` lines printed (a line still being written included)."""
        with self._lock:
            lines = list(self._lines)
            tail = self._partial.rsplit("\r", 1)[-1].rstrip()
        if tail:
            lines.append(tail)
        return lines[-n:]
