"""The event protocol between the trainer and whoever watches it.

The trainer appends one JSON object per line to `<job-dir>/events.jsonl` and writes its last
word to `<job-dir>/status.json`. The app (and every test) reads them with `EventReader`, which
keeps a byte offset and the last `seq`, so a reader that restarts loses nothing and counts
nothing twice. Pydantic only: importing this module never imports torch.

Records written by the trainer are read with `extra="ignore"`: a newer trainer may add fields
that an older app does not know.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "CHECKPOINTS_DIR",
    "EVENTS_FILE",
    "FINAL_STATES",
    "MIN_SECRET_LENGTH",
    "SECRET_ENV_VARS",
    "SECRET_MASK",
    "STATUS_FILE",
    "ArtifactEvent",
    "ErrorEvent",
    "Event",
    "EventReader",
    "EventWriter",
    "LogEvent",
    "MetricEvent",
    "ProgressEvent",
    "StatusEvent",
    "StatusFile",
    "TrainerState",
    "checkpoint_step",
    "find_checkpoints",
    "latest_complete_checkpoint",
    "mask_secrets",
    "parse_event",
    "process_start_ticks",
    "read_all_events",
    "read_status",
    "secrets_from_env",
    "write_json_atomic",
    "write_status",
]

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
STATUS_FILE = "status.json"

TrainerState = Literal["starting", "training", "saving", "completed", "failed", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

CHECKPOINTS_DIR = "checkpoints"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

# The environment variables a trainer gets secrets in (desktop.core.secrets sets them); their values
# are masked in everything the trainer writes.
SECRET_ENV_VARS: tuple[str, ...] = ("HF_TOKEN", "WANDB_API_KEY", "RUNPOD_API_KEY")
SECRET_MASK = "***"
# Shorter values would mask ordinary words; no real key or token is this short.
MIN_SECRET_LENGTH = 4


# --------------------------------------------------------------------------------------------
# Secrets: masked before anything is written


def secrets_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values in `env` (default: this process's environment) worth masking, longest
    first (so a secret that contains another is masked whole)."""
    source = os.environ if env is None else env
    values: set[str] = set()
    for name in SECRET_ENV_VARS:
        raw = source.get(name) or ""
        for value in (raw, raw.strip()):
            if len(value) >= MIN_SECRET_LENGTH:
                values.add(value)
    return sorted(values, key=len, reverse=True)


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with every value in `secrets` replaced by `***`."""
    for value in secrets:
        if value and value in text:
            text = text.replace(value, SECRET_MASK)
    return text


def _mask_value(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_mask_value(item, redact) for item in value]
    if isinstance(value, dict):
        return {key: _mask_value(item, redact) for key, item in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Checkpoints: the one definition of "a complete checkpoint" (the resume point among them is
# trainer.checkpoint_check.latest_loadable_checkpoint: the newest whose files load)


def checkpoint_step(path: Path) -> int | None:
    """The step in a `checkpoint-<step>` folder name; None for any other name."""
    match = _CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else None


def find_checkpoints(job_dir: Path) -> list[Path]:
    """Complete checkpoints in `job_dir/checkpoints`, newest (highest step) last.

    A checkpoint is complete once `trainer_state.json` is in it (the Trainer writes that file
    last), so a save interrupted by a hard kill is never offered for a resume.
    """
    root = job_dir / CHECKPOINTS_DIR
    found: list[tuple[int, Path]] = []
    try:
        children = list(root.iterdir())
    except OSError:
        return []
    for child in children:
        step = checkpoint_step(child)
        if step is not None and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((step, child))
    return [path for _, path in sorted(found)]


def latest_complete_checkpoint(job_dir: Path) -> Path | None:
    """The newest complete checkpoint; None when there is none. Its files may still not load:
    where `--resume` continues is `trainer.checkpoint_check.latest_loadable_checkpoint`."""
    found = find_checkpoints(job_dir)
    return found[-1] if found else None


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _EventBase(_Record):
    seq: int = Field(
        ge=0,
        description="Strictly increasing per events file, from 0 (a resume whose file was "
        "deleted starts higher; see EventWriter).",
    )
    time: float = Field(description="Unix time the event was written.")


class StatusEvent(_EventBase):
    """The trainer's state changed."""

    kind: Literal["status"] = "status"
    state: TrainerState
    message: str = ""
    resumed_from_step: int | None = None


class MetricEvent(_EventBase):
    """Training (or evaluation) metrics at an optimizer step."""

    kind: Literal["metric"] = "metric"
    step: int = Field(ge=0)
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_seen: int | None = None
    samples_per_second: float | None = None
    eta_seconds: float | None = None
    # Trained tokens (answer tokens, no padding) per second over the last logging interval.
    train_tokens_per_second: float | None = None
    # The most GPU memory torch held at once since training began (CUDA only), in MiB.
    peak_gpu_memory_mb: float | None = None

    def values(self) -> dict[str, float]:
        """The numeric series present in this event (None values left out)."""
        names = (
            "epoch",
            "loss",
            "eval_loss",
            "learning_rate",
            "grad_norm",
            "tokens_seen",
            "samples_per_second",
            "eta_seconds",
            "train_tokens_per_second",
            "peak_gpu_memory_mb",
        )
        out: dict[str, float] = {}
        for name in names:
            value = getattr(self, name)
            if value is not None:
                out[name] = float(value)
        return out


class ProgressEvent(_EventBase):
    """Where the run stands: step of total, and the time left."""

    kind: Literal["progress"] = "progress"
    step: int = Field(ge=0)
    total_steps: int | None = None
    eta_seconds: float | None = None


class LogEvent(_EventBase):
    """A line worth showing in the app's log view."""

    kind: Literal["log"] = "log"
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: str


class ArtifactEvent(_EventBase):
    """A file or folder the run produced (checkpoint, adapter, merged model, hub push)."""

    kind: Literal["artifact"] = "artifact"
    artifact: Literal["checkpoint", "adapter", "model", "merged", "hub"]
    path: str
    step: int | None = None


class ErrorEvent(_EventBase):
    """The run failed: a reason a person can act on, plus what led to it."""

    kind: Literal["error"] = "error"
    message: str = Field(description="One sentence: what went wrong and what to do.")
    exception_type: str = ""
    traceback: str = ""
    last_log_lines: list[str] = Field(default_factory=list)


Event = Annotated[
    StatusEvent | MetricEvent | ProgressEvent | LogEvent | ArtifactEvent | ErrorEvent,
    Field(discriminator="kind"),
]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(line: str | bytes) -> Event:
    """Parse one line of `events.jsonl`.

    Raises:
        ValueError: the line is not a valid event (pydantic's ValidationError is a ValueError).
    """
    return _EVENT_ADAPTER.validate_json(line)


class StatusFile(_Record):
    """The trainer's last word, `<job-dir>/status.json`."""

    state: TrainerState
    exit_code: int
    last_step: int | None = None
    total_steps: int | None = None
    last_checkpoint: str | None = None
    final_loss: float | None = None
    output_dir: str | None = None
    message: str = ""
    finished_at: float = Field(default_factory=time.time)
    writer_pid: int | None = Field(
        default=None, description="The process that wrote the file (`write_status` sets it)."
    )
    writer_start_ticks: int | None = Field(
        default=None,
        description="When that process started, in clock ticks since boot (Linux; else None).",
    )


def process_start_ticks(pid: int | None = None) -> int | None:
    """When process `pid` (default: this one) started, in clock ticks since boot (Linux /proc);
    None elsewhere or when there is no such process. The app's process identity uses it too."""
    try:
        with open(f"/proc/{'self' if pid is None else pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # "pid (comm) state ...": comm may hold spaces and ')' so split after the last one; the
    # fields after it start at field 3 (state); starttime is field 22.
    fields = raw[raw.rfind(b")") + 1 :].split()
    try:
        return int(fields[22 - 3])
    except (IndexError, ValueError):
        return None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    # One name per thread too: two threads writing one file must not share a temporary file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_status(job_dir: Path, status: StatusFile) -> None:
    """Write `status.json` atomically, signed with the writing process's pid and start.

    The app believes a final status from a trainer that still runs only when that trainer
    signed it; anything else waits until the process is gone.
    """
    if status.writer_pid is None:
        signed = {"writer_pid": os.getpid(), "writer_start_ticks": process_start_ticks()}
        status = status.model_copy(update=signed)
    write_json_atomic(job_dir / STATUS_FILE, status.model_dump(mode="json"))


def read_status(job_dir: Path) -> StatusFile | None:
    """Read `status.json`; None when absent or unreadable (a run that has not ended)."""
    try:
        return StatusFile.model_validate_json((job_dir / STATUS_FILE).read_bytes())
    except (OSError, ValidationError, ValueError):
        return None


class EventWriter:
    """Appends events to `events.jsonl`, one `write()` per line so lines never interleave.

    Resuming a run continues the numbering after the last `seq` already in the file. A run
    resumed (its folder has checkpoints) after its events file was deleted cannot know the last
    `seq`: it starts a new stream whose numbering begins above any a previous attempt wrote (the
    microseconds since the Unix epoch), so a reader that stored the old stream's position sees
    the new one for what it is and reads it all.

    Args:
        path: the events file.
        redact: applied to every string field (in lists and dicts too) before the event is
            written, e.g. to mask secrets.
    """

    def __init__(self, path: Path, redact: Callable[[str], str] | None = None) -> None:
        self.path = path
        self._redact = redact
        self._lock = threading.Lock()
        last = -1
        if path.exists():
            for event in read_all_events(path):
                last = max(last, event.seq)
        elif (path.parent / CHECKPOINTS_DIR).is_dir():
            # One event per microsecond on average is more than any trainer writes, so this is
            # above the last seq of every earlier attempt, itself started like this or at 0.
            last = time.time_ns() // 1000
        self._next_seq = last + 1
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @property
    def next_seq(self) -> int:
        """The seq the next event will get."""
        return self._next_seq

    def emit(self, kind: str, **fields: Any) -> Event:
        """Validate and append one event; returns it."""
        if self._redact is not None:
            fields = {key: _mask_value(value, self._redact) for key, value in fields.items()}
        with self._lock:
            record = {"seq": self._next_seq, "time": time.time(), "kind": kind, **fields}
            event = _EVENT_ADAPTER.validate_python(record)
            line = event.model_dump_json(exclude_none=True) + "\n"
            data = line.encode("utf-8")
            start = os.lseek(self._fd, 0, os.SEEK_END)  # where this line begins (O_APPEND)
            try:
                if os.write(self._fd, data) != len(data):  # a full disk takes a line in part
                    raise OSError(errno.ENOSPC, f"{self.path}: no space left for an event")
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)  # never leave a torn line for a reader
                raise
            self._next_seq += 1
            return event

    def close(self) -> None:
        """Close the file; further emits fail."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class EventReader:
    """Reads `events.jsonl` incrementally.

    It keeps the byte offset of the first unread byte and the `seq` of the last event read. A
    last line with no newline yet (the writer is mid-write) is left for the next read. A line
    that is not a valid event is skipped with a warning, never a crash.

    The offset, not the `seq`, says what was read: a point is never dropped for its `seq`
    alone (a foreign line with a huge `seq` must not hide every later one). Before reading on,
    the reader checks that the stream is still the one it read: the file must not be shorter
    than the offset, and the last event before the offset must carry the stored `seq`. A file
    that shrank or was replaced (truncated, deleted and written again by a resumed trainer) is
    read again from the start; the store keeps one value per (job, step, series), so nothing is
    counted twice. Only a reader restored at offset 0 with a known last `seq` (a stale offset)
    drops the leading events it has seen. What the reader noticed is in `notices`, one
    sentence each, for the job's log; `restarted` says it read the file again from its start.
    """

    def __init__(self, path: Path, offset: int = 0, last_seq: int = -1) -> None:
        self.path = Path(path)
        self.offset = offset
        self.last_seq = last_seq
        self.skipped_lines = 0
        self.notices: list[str] = []
        self.restarted = False
        self._seq_went_back = False

    def read_new(self, *, final: bool = False, max_bytes: int | None = None) -> list[Event]:
        """Return the events appended since the last call.

        Args:
            final: the writer is gone for good; parse a last line even without its newline.
            max_bytes: read at most this many bytes now (the rest on the next call).
        """
        try:
            with open(self.path, "rb") as fh:
                self._check_same_stream(fh)
                fh.seek(self.offset)
                data = fh.read() if max_bytes is None else fh.read(max_bytes)
        except FileNotFoundError:
            return []
        if not data:
            return []
        end = data.rfind(b"\n") + 1
        if final and max_bytes is None:
            end = len(data)
        events: list[Event] = []
        # A stale offset (0 with a known seq) replays what was read: drop that prefix only.
        replay_below = self.last_seq if self.offset == 0 and not self.restarted else -1
        line_start = self.offset
        for raw in data[:end].split(b"\n"):
            line_no_bytes = len(raw) + 1
            stripped = raw.strip()
            if stripped:
                try:
                    event = _EVENT_ADAPTER.validate_json(stripped)
                except ValueError as exc:
                    self.skipped_lines += 1
                    log.warning(
                        "%s: skipped an unreadable event at byte %d: %s",
                        self.path,
                        line_start,
                        str(exc).splitlines()[0],
                    )
                else:
                    if event.seq > replay_below:
                        replay_below = -1
                        self._note_seq(event.seq, line_start)
                        events.append(event)
                    self.last_seq = event.seq
            line_start += line_no_bytes
        self.offset += end
        return events

    def _note_seq(self, seq: int, at: int) -> None:
        if seq <= self.last_seq and not self._seq_went_back:
            self._seq_went_back = True
            self._notice(
                f"{self.path.name}: seq went back from {self.last_seq} to {seq} at byte {at} "
                "(a line not written in order, or a foreign one); every event is kept"
            )

    def _notice(self, message: str) -> None:
        log.warning("%s", message)
        self.notices.append(message)

    def _check_same_stream(self, fh: BinaryIO) -> None:
        """Start over when the file shrank below the offset or the event before it changed."""
        if self.offset <= 0:
            return
        size = os.fstat(fh.fileno()).st_size
        if size < self.offset:
            why = f"shrank to {size} bytes, below the {self.offset} already read"
        else:
            seq = _seq_before(fh, self.offset)
            if seq is None or seq == self.last_seq:
                return
            why = f"was replaced (the event before byte {self.offset} is seq {seq}, not "
            why += f"{self.last_seq})"
        self._notice(
            f"{self.path.name} {why}: it is read again from the start; "
            "points already stored are kept once"
        )
        self.offset = 0
        self.last_seq = -1
        self.restarted = True


def _seq_before(fh: BinaryIO, offset: int) -> int | None:
    """The `seq` of the last valid event ending at or before `offset` (None: none readable)."""
    for window in (4096, 65536):
        start = max(0, offset - window)
        fh.seek(start)
        lines = fh.read(offset - start).split(b"\n")
        if start > 0:
            lines = lines[1:]  # the first piece may be a line cut by the window
        for raw in reversed(lines):
            if raw.strip():
                try:
                    return _EVENT_ADAPTER.validate_json(raw.strip()).seq
                except ValueError:
                    continue
        if start == 0:
            return None
    return None


def read_all_events(path: Path) -> list[Event]:
    """Every valid event in a finished `events.jsonl`, torn last line included if it parses."""
    return EventReader(path).read_new(final=True)
