"""Reading a local job's console log (`train.log`) in resumable chunks.

A chunk ends at a line end when more follows, and never in the middle of a UTF-8 character, so
a caller that resumes from `LogChunk.next_offset` sees every line once and whole.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from desktop.models import LogChunk

__all__ = ["MAX_LOG_BYTES", "append_log_line", "decode_log", "read_log"]

MAX_LOG_BYTES = 1024 * 1024


def decode_log(data: bytes, *, at_eof: bool) -> tuple[str, int]:
    """Decode a log chunk; a multi-byte character cut at the end is left for the next read.

    Returns:
        The text and how many bytes of `data` it used.
    """
    try:
        return data.decode("utf-8"), len(data)
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.start >= len(data) - 3 and not at_eof:
            head = data[: exc.start]
            return head.decode("utf-8", errors="replace"), len(head)
        return data.decode("utf-8", errors="replace"), len(data)


def read_log(path: Path, since: int, max_bytes: int = MAX_LOG_BYTES) -> LogChunk:
    """The log at `path` from byte `since` (at most `max_bytes`); blocking.

    A log shorter than `since` was replaced: reading starts over at 0. A missing log is empty.
    """
    since = max(0, since)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if since > size:  # the log was replaced: start over
                since = 0
            fh.seek(since)
            data = fh.read(max_bytes)
    except FileNotFoundError:
        return LogChunk(text="", offset=since, next_offset=since)
    at_eof = since + len(data) >= size
    if not at_eof and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]
    text, used = decode_log(data, at_eof=at_eof)
    return LogChunk(text=text, offset=since, next_offset=since + used)


def append_log_line(path: Path, message: str) -> None:
    """Append one app-written line to a job's console log, where its user reads what happened.

    Best effort: a log that cannot be written (its folder is gone) must not stop a poll.
    """
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as fh:
        fh.write(f"[finetune-desk {stamp}] {message}\n")
