"""What the training process printed, kept in memory for crash reports, with secrets masked.

The local provider sends the process's stdout/stderr to `<job-dir>/train.log`; the trainer
itself does not write that file. When it crashes, the `error` event carries the last lines the
process printed, so `ConsoleTee` passes everything through to the real streams and keeps the
last lines in a ring buffer.

Secrets reach the trainer only as environment variables (`trainer.protocol.SECRET_ENV_VARS`);
their values are replaced by `***` in everything that passes through, so a library that prints a
token (in an error message, a URL, a traceback) never puts it in train.log. A write that ends
with the beginning of a secret is held back until the next write shows whether the secret
follows, so a value split over several `write()` calls is masked too.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Iterable
from typing import TextIO

from trainer.protocol import mask_secrets, secrets_from_env

__all__ = ["ConsoleTee"]


class _TeeStream:
    """A text stream that masks secrets, writes through and feeds complete lines to a ring
    buffer."""

    def __init__(self, inner: TextIO, tee: ConsoleTee) -> None:
        self._inner = inner
        self._tee = tee
        self._held = ""

    def write(self, text: str) -> int:
        data, self._held = self._tee._split_masked(self._held + text)
        if data:
            self._tee._feed(data)
            self._inner.write(data)
        return len(text)

    def release(self) -> None:
        """Write what was held back (the stream is being taken down)."""
        held, self._held = self._held, ""
        if held:
            self._tee._feed(held)
            self._inner.write(held)
            self._inner.flush()

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> object:
        # isatty, fileno, encoding, ... come from the real stream.
        return getattr(self._inner, name)


class ConsoleTee:
    """Keeps the last `max_lines` lines written to stdout and stderr; masks secrets in both.

    tqdm-style carriage-return updates keep only their last state, so a progress bar does not
    flood the buffer.

    Args:
        max_lines: how many lines to keep.
        secrets: the values to mask (default: those in this process's secret environment
            variables).
    """

    def __init__(self, max_lines: int = 50, secrets: Iterable[str] | None = None) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._partial = ""
        self._lock = threading.Lock()
        self._saved: tuple[TextIO, TextIO] | None = None
        self._streams: list[_TeeStream] = []
        self.secrets: list[str] = (
            secrets_from_env() if secrets is None else sorted(set(secrets), key=len, reverse=True)
        )

    def install(self) -> ConsoleTee:
        """Replace sys.stdout and sys.stderr with pass-through streams; returns self."""
        if self._saved is None:
            self._saved = (sys.stdout, sys.stderr)
            self._streams = [_TeeStream(sys.stdout, self), _TeeStream(sys.stderr, self)]
            sys.stdout, sys.stderr = self._streams
        return self

    def uninstall(self) -> None:
        """Put the original streams back (after writing anything held back)."""
        if self._saved is not None:
            for stream in self._streams:
                stream.release()
            sys.stdout, sys.stderr = self._saved
            self._saved = None
            self._streams = []

    def mask(self, text: str) -> str:
        """`text` with every secret replaced by `***`."""
        return mask_secrets(text, self.secrets)

    def _split_masked(self, text: str) -> tuple[str, str]:
        """(masked text to write now, tail to hold back because a secret may start in it)."""
        if not self.secrets:
            return text, ""
        masked = self.mask(text)
        longest = len(self.secrets[0])
        # The longest tail of `masked` that is a proper prefix of some secret.
        for size in range(min(longest - 1, len(masked)), 0, -1):
            tail = masked[-size:]
            if any(secret.startswith(tail) for secret in self.secrets):
                return masked[:-size], tail
        return masked, ""

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
        """The last `n` lines printed (a line still being written included), secrets masked."""
        with self._lock:
            lines = list(self._lines)
            tail = self._partial.rsplit("\r", 1)[-1].rstrip()
        if tail:
            lines.append(tail)
        return [self.mask(line) for line in lines[-n:]]
