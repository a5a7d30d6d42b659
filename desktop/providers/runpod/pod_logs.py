"""The pod's log from RunPod's own log stream, for when the pod's agent no longer answers.

The job's `train.log` normally mirrors the pod's `train.log` through the agent
(`pod_sync.mirror`). When the agent is gone (a crashed or crash-looping container, a pod that
never came up) and the pod is about to be deleted, what the container printed is still on
RunPod: `keep_runpod_log` reads it from `GET /v2/pods/{id}/logs` (the container's output, then
RunPod's system lines) and appends to `train.log` the lines not already there, under one
heading. "Already there" is counted, not merely seen: a line the file holds twice and the
stream three times is appended once. Where the stream was read up to is saved in `pod.json`
(`runpod_log_cursors`), so a second call (an app restarted before the delete finished) adds
nothing twice. RunPod's stream stays open: the reading stops after `idle_s` without a new line,
and after `total_s` in all, so a deletion is never held up for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from desktop.core.errors import ProviderError
from desktop.providers.runpod.api import RunpodApi
from desktop.providers.runpod.pod_files import PodRecord, save_record

__all__ = ["HEADING", "keep_runpod_log"]

log = logging.getLogger(__name__)

HEADING = "[ftdesk] the pod's agent did not answer; its log from RunPod's log stream follows"
SYSTEM_PREFIX = "[runpod system] "
TAIL = 5000  # the most RunPod replays


async def _read_stream(
    api: RunpodApi,
    pod_id: str,
    source: Literal["container", "system"],
    cursor: str | None,
    idle_s: float,
    deadline: float,
) -> tuple[list[str], str | None]:
    """The lines of one source after `cursor`, and the cursor of the last one read."""
    lines: list[str] = []
    stream = api.stream_logs(pod_id, source=source, tail=TAIL, last_event_id=cursor)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = await asyncio.wait_for(anext(stream), timeout=min(idle_s, left))
            except (TimeoutError, StopAsyncIteration):
                break
            lines.append(line.line)
            cursor = line.cursor
    finally:
        close = getattr(stream, "aclose", None)  # an async generator's: ends its connection
        if close is not None:
            with contextlib.suppress(ProviderError, RuntimeError):
                await close()
    return lines, cursor


def _append_new(path: Path, heading: str, lines: list[str]) -> int:
    """Append the lines `path` does not already hold (counted); returns how many."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    held = Counter(text.splitlines())
    fresh = []
    for line in lines:
        if held[line] > 0:
            held[line] -= 1
        else:
            fresh.append(line)
    if fresh:
        lead = "" if not text or text.endswith("\n") else "\n"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(lead + heading + "\n" + "".join(f"{line}\n" for line in fresh))
    return len(fresh)


async def keep_runpod_log(
    api: RunpodApi,
    job_dir: Path,
    record: PodRecord,
    *,
    idle_s: float = 2.0,
    total_s: float = 30.0,
) -> PodRecord:
    """Append what RunPod's log stream holds of the pod and `train.log` lacks (see the module
    docstring); returns the record with the stream's cursors, saved. A stream that cannot be
    read is noted in the app's log and costs nothing else: the pod is deleted all the same."""
    deadline = time.monotonic() + total_s
    cursors = dict(record.runpod_log_cursors)
    kept: list[str] = []
    for source in ("container", "system"):
        try:
            lines, cursor = await _read_stream(
                api, record.pod_id, source, cursors.get(source), idle_s, deadline
            )
        except ProviderError as exc:
            log.info("pod %s: RunPod's %s log could not be read: %s", record.pod_id, source, exc)
            continue
        prefix = SYSTEM_PREFIX if source == "system" else ""
        kept.extend(prefix + line for line in lines)
        if cursor is not None:
            cursors[source] = cursor
    added = await asyncio.to_thread(_append_new, job_dir / "train.log", HEADING, kept)
    log.info("pod %s: %d line(s) of RunPod's log kept in train.log", record.pod_id, added)
    record = record.model_copy(update={"runpod_log_cursors": cursors})
    await asyncio.to_thread(save_record, job_dir, record)
    return record
