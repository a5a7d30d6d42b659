"""A quick look at a dataset path as it is typed: does it exist, can it be read, what is in it.

Blocking (a stat, the first bytes, and a line count of files up to `COUNT_LIMIT_BYTES`): the
window calls it in a worker thread. It reads what `trainer.data.readers.open_source` would open
the same way (parquet and CSV by their name, a JSON array by its first byte, else JSON lines),
so a path it accepts is one the trainer's reader opens; the records themselves are the
preflight's business (`TrainerRuntime.check_data`).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from desktop.core.checks import is_local

__all__ = ["COUNT_LIMIT_BYTES", "DatasetPathCheck", "inspect_dataset_path"]

#: Files up to this size have their lines counted; bigger ones show their size instead.
COUNT_LIMIT_BYTES = 256 * 1024 * 1024
_KNOWN = ".jsonl, .jsonl.gz, .json, .csv or .parquet"
_SAVED_DATASET_FILES = ("dataset_info.json", "dataset_dict.json", "state.json")


@dataclass(frozen=True)
class DatasetPathCheck:
    """What the quick look found.

    Attributes:
        error: why the path cannot be used (what to do included), or None.
        note: what the path holds when it can be used ("JSONL, 321 lines"), or None.
        local_file: the path is a data file on this machine that looks readable (its records
            can be checked by the trainer runtime's preflight).
        size_bytes: the file's size (0 when not a local file).
    """

    error: str | None = None
    note: str | None = None
    local_file: bool = False
    size_bytes: int = 0


def _size_text(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover - the loop always returns


def _count_lines(path: Path, compressed: bool) -> int:
    opener = gzip.open if compressed else open
    count = 0
    last = b"\n"
    with opener(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


def inspect_dataset_path(value: str) -> DatasetPathCheck:
    """Check a dataset path without reading its records (blocking: call it in a worker).

    Args:
        value: what the dataset field holds: a file, a saved-dataset folder or a Hub id.

    Returns:
        the error a person must fix, or a note saying what the file holds.
    """
    value = value.strip()
    if not value:
        return DatasetPathCheck()
    if not is_local(value):
        return DatasetPathCheck(
            note="a Hugging Face Hub dataset (checked when the trainer loads it)"
        )
    path = Path(value).expanduser()
    if not path.exists():
        return DatasetPathCheck(error=f"{value} does not exist; check the path or choose a file")
    if path.is_dir():
        if any((path / name).exists() for name in _SAVED_DATASET_FILES):
            return DatasetPathCheck(note="a saved dataset folder (datasets.save_to_disk)")
        return DatasetPathCheck(
            error=f"{value} is a folder; choose a data file ({_KNOWN}) or a saved dataset folder"
        )
    if not path.is_file():
        return DatasetPathCheck(error=f"{value} is not a regular file; choose a data file")
    name = path.name.lower()
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return DatasetPathCheck(error=f"{value} cannot be read ({reason}); check its permissions")
    if name.endswith((".parquet", ".pq")):
        return DatasetPathCheck(
            note=f"Parquet, {_size_text(size)}", local_file=True, size_bytes=size
        )
    compressed = name.endswith(".gz")
    if compressed:
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(4096)
        except (OSError, EOFError) as exc:
            return DatasetPathCheck(error=f"{value} is not a readable gzip file ({exc})")
    label: str | None
    first = head.lstrip()[:1]
    if name.endswith((".csv", ".csv.gz")):
        label = "CSV"
    elif first == b"[":
        note = f"JSON array, {_size_text(size)}" if size > 4096 else "JSON array"
        return DatasetPathCheck(note=note, local_file=True, size_bytes=size)
    elif first == b"{":
        label = "JSONL"
    elif not head.strip():
        return DatasetPathCheck(error=f"{value} is empty; choose a file with records")
    else:
        label = None
    if label is None:
        return DatasetPathCheck(
            error=f"{value}: unknown format (the file does not start with a JSON object or "
            f"array); use {_KNOWN}"
        )
    if size > COUNT_LIMIT_BYTES:
        return DatasetPathCheck(
            note=f"{label}, {_size_text(size)}", local_file=True, size_bytes=size
        )
    lines = _count_lines(path, compressed)
    note = f"{label}, {lines} line{'s' if lines != 1 else ''}"
    return DatasetPathCheck(note=note, local_file=True, size_bytes=size)
