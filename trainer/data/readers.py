"""Dataset readers: open a source and stream its items, each with where it is.

Sources: `.jsonl`, `.jsonl.gz`, `.json` (an array of objects, or JSON lines under a `.json`
name), `.csv`, `.parquet`, a folder written by `datasets.save_to_disk`, or a Hugging Face Hub
dataset id (online only). Each yields `(location, record or None, error message or None)`:
a reader reports what it cannot parse and goes on, so a check lists every problem. Files are
streamed, never held; pyarrow and datasets are imported only for the sources that need them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from trainer.config import looks_like_local_path

__all__ = ["RawItem", "SourceError", "hub_offline", "open_source", "type_name"]

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"

RawItem = tuple[int | None, Any, str | None]


class SourceError(Exception):
    """The source cannot be opened or read at all."""


def hub_offline() -> bool:
    """True when the environment forbids the Hugging Face Hub (the app's offline mode)."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading, decompressing gzip by its magic bytes, not its name."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _first_byte(path: Path) -> bytes:
    """The first non-blank byte after a BOM (b'' for an empty file)."""
    with _open_binary(path) as fh:
        head = fh.read(4096)
        while head:
            stripped = head.removeprefix(_BOM).lstrip()
            if stripped:
                return stripped[:1]
            head = fh.read(4096)
    return b""


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for messages a person reads."""
    if value is None:
        return "null"
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
    }.get(type(value), type(value).__name__)


def _iter_jsonl(path: Path) -> Iterator[RawItem]:
    """JSON lines; 1-based file lines; blank lines skipped; BOM and CRLF tolerated."""
    loads = json.loads
    decode_error = json.JSONDecodeError
    with _open_binary(path) as fh:
        lineno = 0
        try:
            for raw in fh:
                lineno += 1
                if lineno == 1 and raw.startswith(_BOM):
                    raw = raw[3:]
                raw = raw.rstrip(b"\r\n")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield (
                        lineno,
                        None,
                        (
                            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                            f"{exc.start + 1}); save the file as UTF-8"
                        ),
                    )
                    continue
                if not text.strip():
                    continue
                try:
                    yield lineno, loads(text), None
                except decode_error as exc:
                    yield lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})"
        except (OSError, EOFError) as exc:
            yield lineno + 1, None, f"cannot read past this point: {exc}"


def _iter_json_array(path: Path) -> Iterator[RawItem]:
    """A JSON array of objects; the location is the 1-based record number."""
    with _open_binary(path) as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"not UTF-8 text (byte offset {exc.start}); save the file as UTF-8"
        ) from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if isinstance(value, dict):
        # {"data": [...]} / {"train": [...]}: one list-valued key holding the records.
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            value = lists[0]
        else:
            yield 1, value, None
            return
    if not isinstance(value, list):
        raise SourceError(f"expected a JSON array of records, got a {type_name(value)}")
    for index, record in enumerate(value, start=1):
        yield index, record, None


def _iter_csv(path: Path) -> Iterator[RawItem]:
    """CSV with a header row; the location is the file line a record starts on."""
    csv.field_size_limit(2**31 - 1)
    with _open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        line = 0
        try:
            header = next(reader, None)
            if header is None:
                return
            line = reader.line_num
            width = len(header)
            for row in reader:
                start, line = line + 1, reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != width:
                    yield (
                        start,
                        None,
                        f"expected {width} columns as in the header, found {len(row)}",
                    )
                    continue
                yield start, dict(zip(header, row, strict=True)), None
        except UnicodeDecodeError as exc:
            yield line + 1, None, f"not UTF-8 text ({exc.reason}); save the file as UTF-8"
        except csv.Error as exc:
            yield line + 1, None, f"invalid CSV: {exc}"


def _iter_parquet(path: Path) -> Iterator[RawItem]:
    """Parquet, read in record batches; the location is the 1-based row."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise SourceError(f"cannot read the parquet file: {exc}") from exc
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            row += 1
            yield row, record, None


def _iter_dataset_rows(dataset: Any) -> Iterator[RawItem]:
    for row, record in enumerate(dataset, start=1):
        yield row, record, None


def _load_saved_dataset(path: Path, split: str) -> Any:
    """A folder written by `save_to_disk`: a Dataset, or the `split` of a DatasetDict."""
    if not any((path / marker).exists() for marker in ("dataset_dict.json", "state.json")):
        raise SourceError(
            "this folder is not a dataset saved by datasets (save_to_disk): it has neither "
            "dataset_dict.json nor state.json; point to a data file instead"
        )
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except Exception as exc:
        raise SourceError(f"cannot load the saved dataset: {exc}") from exc
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise SourceError(
                f"the saved dataset has no split {split!r}; it has {', '.join(sorted(loaded))}: "
                "set dataset.split"
            )
        return loaded[split]
    return loaded


def _load_hub_dataset(name: str, split: str) -> Any:
    """A Hub dataset, streamed (online only)."""
    from datasets import load_dataset

    try:
        return load_dataset(name, split=split, streaming=True)
    except Exception as exc:
        raise SourceError(f"cannot load {name!r} (split {split!r}) from the Hub: {exc}") from exc


def open_source(path: str, split: str = "train") -> tuple[Iterable[RawItem], str]:
    """Pick a reader for `path`; returns (items, location word)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return _iter_dataset_rows(_load_saved_dataset(p, split)), "row"
    if p.is_file():
        name = p.name.lower()
        if name.endswith((".parquet", ".pq")):
            return _iter_parquet(p), "row"
        if name.endswith((".csv", ".csv.gz")):
            return _iter_csv(p), "line"
        if _first_byte(p) == b"[":
            return _iter_json_array(p), "record"
        return _iter_jsonl(p), "line"
    if p.exists():
        raise SourceError("not a regular file or folder")
    if looks_like_local_path(path) or (p.parent.is_dir() and p.parent != Path(".")):
        raise SourceError("file not found; check the path")
    if hub_offline():
        raise SourceError(
            f"dataset {path!r} is not on disk, and the Hugging Face Hub is offline "
            "(HF_HUB_OFFLINE=1): give a local file, or go online to use a Hub dataset"
        )
    return _iter_dataset_rows(_load_hub_dataset(path, split)), "row"
