"""Training data: read, detect the format, validate every record, normalise for TRL.

`python -m trainer check-data FILE` and the trainer itself use the same code, so a file that
passes the check is a file the trainer accepts.

Sources: `.jsonl`, `.jsonl.gz`, `.json` (an array of objects, or JSON lines under a `.json`
name), `.csv`, `.parquet`, a folder written by `datasets.save_to_disk`, or a Hugging Face Hub
dataset id (online only). Files are streamed: a check holds the first few examples, the listed
problems and (with a model) a bounded random sample for the token statistics, never the file.

Formats, detected from the columns unless given: `messages` (chat messages with role/content),
`sharegpt` (`conversations` with from/value), `alpaca` (instruction/input/output),
`prompt_completion` and `text`. ShareGPT and Alpaca become chat messages; the records handed
to TRL are `{"messages": [...]}`, `{"prompt": str, "completion": str}` or `{"text": str}`.

Every problem is reported, each with where it is (a 1-based file line; the record number in a
JSON array; the row number in parquet, saved or Hub datasets) and what is wrong.

Heavy libraries (transformers, datasets, pyarrow) are imported inside the functions that need
them; importing this module is cheap.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import itertools
import json
import math
import os
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from trainer.config import DatasetConfig, FieldMap, looks_like_local_path
from trainer.reports import (
    TRAIN_MARK_CLOSE,
    TRAIN_MARK_OPEN,
    DataProblem,
    DataReport,
    RenderedExample,
    RenderedSegment,
    TokenBin,
    TokenStats,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "FORMATS",
    "DataError",
    "DataProblem",
    "DataReport",
    "RenderedExample",
    "TokenStats",
    "TrainingData",
    "check_dataset",
    "load_training_data",
    "main",
]

FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")
ROLES = ("system", "user", "assistant")
_ROLE_SET = frozenset(ROLES)
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
MAX_LISTED_PROBLEMS = 200
MAX_EXAMPLES = 20
DETECT_SAMPLE = 200
DEFAULT_TOKEN_SAMPLE = 5000

# Columns each format needs, in detection order (first full match wins).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "text": ("text",),
}
_FORMAT_LABEL = {
    "messages": "messages",
    "sharegpt": "ShareGPT",
    "prompt_completion": "prompt/completion",
    "alpaca": "Alpaca",
    "text": "text",
}
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------------------------
# Report types: the report itself lives in trainer.reports; a check fills a draft


@dataclass
class ReportDraft:
    """A `DataReport` being filled by a check; `finish()` freezes it."""

    path: str
    format: str | None = None
    records: int = 0
    valid_records: int = 0
    usable: bool = False
    problems: list[DataProblem] = field(default_factory=list)
    problem_count: int = 0
    location: str = "line"
    examples: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    token_stats: TokenStats | None = None
    rendered_example: RenderedExample | None = None

    def add_problem(self, line: int | None, message: str) -> None:
        """Count a problem; list it while under the cap."""
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(DataProblem(line=line, message=message))

    def finish(self) -> DataReport:
        """The report as it stands now."""
        return DataReport(
            path=self.path,
            format=self.format,
            records=self.records,
            valid_records=self.valid_records,
            usable=self.usable,
            problems=list(self.problems),
            problem_count=self.problem_count,
            location=self.location,
            examples=list(self.examples),
            warnings=list(self.warnings),
            token_stats=self.token_stats,
            rendered_example=self.rendered_example,
        )


class DataError(ValueError):
    """Data the trainer cannot use. `.report` holds the full report; str() lists the problems."""

    def __init__(self, report: DataReport) -> None:
        self.report = report
        head = f"{report.path}: the dataset is not usable"
        count = report.problem_count
        head += f" ({count} problem{'s' if count != 1 else ''}):" if count else ""
        super().__init__("\n".join([head, *report.problem_lines()]))


@dataclass
class TrainingData:
    """Normalised records ready for TRL.

    `format` is the kind of the records: "messages", "prompt_completion" or "text" (ShareGPT
    and Alpaca sources become "messages"); `source_format` is what the file held.
    """

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]] | None
    format: str
    report: DataReport
    source_format: str = ""
    eval_report: DataReport | None = None


# --------------------------------------------------------------------------------------------
# Sources: each yields (location, record or None, error message or None)

RawItem = tuple[int | None, Any, str | None]


class _SourceError(Exception):
    """The source cannot be opened or read at all."""


def _offline() -> bool:
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


def _type_name(value: Any) -> str:
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
        raise _SourceError(
            f"not UTF-8 text (byte offset {exc.start}); save the file as UTF-8"
        ) from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _SourceError(
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
        raise _SourceError(f"expected a JSON array of records, got a {_type_name(value)}")
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
        raise _SourceError(f"cannot read the parquet file: {exc}") from exc
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
        raise _SourceError(
            "this folder is not a dataset saved by datasets (save_to_disk): it has neither "
            "dataset_dict.json nor state.json; point to a data file instead"
        )
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except Exception as exc:
        raise _SourceError(f"cannot load the saved dataset: {exc}") from exc
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise _SourceError(
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
        raise _SourceError(f"cannot load {name!r} (split {split!r}) from the Hub: {exc}") from exc


def _open_source(path: str, split: str = "train") -> tuple[Iterable[RawItem], str]:
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
        raise _SourceError("not a regular file or folder")
    if looks_like_local_path(path) or (p.parent.is_dir() and p.parent != Path(".")):
        raise _SourceError("file not found; check the path")
    if _offline():
        raise _SourceError(
            f"dataset {path!r} is not on disk, and the Hugging Face Hub is offline "
            "(HF_HUB_OFFLINE=1): give a local file, or go online to use a Hub dataset"
        )
    return _iter_dataset_rows(_load_hub_dataset(path, split)), "row"


# --------------------------------------------------------------------------------------------
# Formats and record validation


def _columns(field_map: FieldMap | None) -> dict[str, str]:
    """Logical field name -> column name, after the overrides."""
    fm = field_map.model_dump() if field_map is not None else {}
    names = ("messages", "conversations", "prompt", "completion", "text", "instruction", "input")
    return {n: fm.get(n) or n for n in (*names, "output")}


def _required_columns(cols: dict[str, str]) -> dict[str, tuple[str, ...]]:
    return {fmt: tuple(cols[f] for f in req) for fmt, req in _REQUIRED.items()}


def _has_all(record: dict[str, Any], columns: tuple[str, ...]) -> bool:
    # A plain loop: several times faster than all() over a generator, and this runs per record.
    for column in columns:  # noqa: SIM110
        if record.get(column) is None:
            return False
    return True


def _classify(record: dict[str, Any], required: dict[str, tuple[str, ...]]) -> str | None:
    for fmt, needed in required.items():
        if all(record.get(c) is not None for c in needed):
            return fmt
    return None


def _as_list(value: Any) -> Any:
    """Messages stored as a JSON string (CSV cells) become a list."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _check_chat(
    value: Any, column: str, sharegpt: bool, errors: list[str]
) -> list[dict[str, str]] | None:
    """Validate a list of chat messages; returns role/content messages or None."""
    value = _as_list(value)
    if not isinstance(value, list):
        errors.append(f"'{column}' must be a list of messages, got a {_type_name(value)}")
        return None
    if not value:
        errors.append(f"'{column}' has no messages")
        return None
    out: list[dict[str, str]] = []
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    # Fast path: every message well formed (the common case; a million records in seconds).
    has_assistant = False
    for message in value:
        if type(message) is not dict:
            break
        role = message.get(role_key)
        content = message.get(content_key)
        if sharegpt:
            role = SHAREGPT_ROLES.get(role) if type(role) is str else None
        if role not in _ROLE_SET or type(content) is not str or not content or content.isspace():
            break
        if role == "assistant":
            has_assistant = True
        if not sharegpt and len(message) == 2:
            out.append(message)
        else:
            out.append({"role": role, "content": content})
    else:
        if has_assistant:
            return out
        errors.append("no assistant message: nothing to train on")
        return None
    # Slow path: say what is wrong with each message.
    out = []
    before = len(errors)
    for i, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            errors.append(f"message {i} must be an object, got a {_type_name(message)}")
            continue
        role = message.get(role_key)
        content = message.get(content_key)
        if role is None:
            hint = ""
            if not sharegpt and "from" in message:
                hint = " (it has ShareGPT 'from'/'value': set the format to sharegpt)"
            elif sharegpt and "role" in message:
                hint = " (it has 'role'/'content': set the format to messages)"
            errors.append(f"message {i} has no '{role_key}'{hint}")
            continue
        if sharegpt:
            mapped = SHAREGPT_ROLES.get(role) if isinstance(role, str) else None
            if mapped is None:
                errors.append(f"message {i} has from {role!r}; expected human, gpt or system")
                continue
            role = mapped
        elif role not in ROLES:
            errors.append(f"message {i} has role {role!r}; expected system, user or assistant")
            continue
        if content is None:
            errors.append(f"message {i} ({role}) has no '{content_key}'")
            continue
        if not isinstance(content, str):
            errors.append(f"message {i} ({role}) content must be text, got a {_type_name(content)}")
            continue
        if not content or content.isspace():
            errors.append(f"message {i} ({role}) has empty content")
            continue
        out.append({"role": role, "content": content})
    if len(errors) > before:
        return None
    if not any(m["role"] == "assistant" for m in out):
        errors.append("no assistant message: nothing to train on")
        return None
    return out


def _check_text(record: dict[str, Any], column: str, errors: list[str]) -> str | None:
    value = record.get(column)
    if value is None:
        errors.append(f"missing field '{column}'")
        return None
    if not isinstance(value, str):
        errors.append(f"'{column}' must be text, got a {_type_name(value)}")
        return None
    if not value or value.isspace():
        errors.append(f"'{column}' is empty")
        return None
    return value


def _normalise(
    record: dict[str, Any], fmt: str, cols: dict[str, str], errors: list[str]
) -> dict[str, Any] | None:
    """The TRL-ready form of a record of format `fmt`, or None with `errors` filled."""
    if fmt == "messages":
        msgs = _check_chat(record.get(cols["messages"]), cols["messages"], False, errors)
        return None if msgs is None else {"messages": msgs}
    if fmt == "sharegpt":
        column = cols["conversations"]
        msgs = _check_chat(record.get(column), column, True, errors)
        return None if msgs is None else {"messages": msgs}
    if fmt == "prompt_completion":
        prompt = _check_text(record, cols["prompt"], errors)
        completion = _check_text(record, cols["completion"], errors)
        if prompt is None or completion is None:
            return None
        return {"prompt": prompt, "completion": completion}
    if fmt == "alpaca":
        instruction = _check_text(record, cols["instruction"], errors)
        output = _check_text(record, cols["output"], errors)
        extra = record.get(cols["input"])
        if extra is not None and not isinstance(extra, str):
            errors.append(f"'{cols['input']}' must be text, got a {_type_name(extra)}")
            return None
        if instruction is None or output is None:
            return None
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        return {
            "messages": [
                {"role": "user", "content": user},
                {"role": "assistant", "content": output},
            ]
        }
    text = _check_text(record, cols["text"], errors)
    return None if text is None else {"text": text}


def record_kind(fmt: str) -> str:
    """The kind of TRL record a source format becomes: messages, prompt_completion or text."""
    return "messages" if fmt in ("messages", "sharegpt", "alpaca") else fmt


def _describe_format(fmt: str, required: dict[str, tuple[str, ...]]) -> str:
    return f"{_FORMAT_LABEL[fmt]} format ({', '.join(required[fmt])})"


def _scan(
    items: Iterable[RawItem],
    report: ReportDraft,
    fmt: str,
    field_map: FieldMap | None,
    sink: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Validate every item into `report`; hand each valid normalised record to `sink`."""
    cols = _columns(field_map)
    required = _required_columns(cols)
    iterator = iter(items)
    head: list[RawItem] = []
    if fmt == "auto":
        votes: Counter[str] = Counter()
        seen_keys: Counter[str] = Counter()
        for item in iterator:
            head.append(item)
            if isinstance(item[1], dict):
                kind = _classify(item[1], required)
                if kind is not None:
                    votes[kind] += 1
                else:
                    seen_keys.update(item[1].keys())
            if len(head) >= DETECT_SAMPLE:
                break
        if votes:
            top = max(votes.values())
            fmt = next(f for f in required if votes[f] == top)
        elif any(isinstance(item[1], dict) for item in head):
            keys = ", ".join(f"'{k}'" for k, _ in seen_keys.most_common(8))
            report.add_problem(
                None,
                f"cannot tell the format: the records have the fields {keys}; expected "
                "messages, conversations (ShareGPT), prompt + completion, instruction + output "
                "(Alpaca) or text: rename the columns or set dataset.field_map",
            )
    report.format = None if fmt == "auto" else fmt
    examples = report.examples
    own_required = required.get(fmt, ())
    records = valid = 0
    for location, record, error in itertools.chain(head, iterator):
        records += 1
        if error is not None:
            report.add_problem(location, error)
            continue
        if not isinstance(record, dict):
            report.add_problem(location, f"expected a JSON object, got a {_type_name(record)}")
            continue
        if fmt == "auto":
            continue
        errors: list[str] = []
        if not _has_all(record, own_required):
            other = _classify(record, required)
            if (
                other is not None
                and other != fmt
                and not any(record.get(c) is not None for c in own_required)
            ):
                report.add_problem(
                    location,
                    f"this record has {_describe_format(other, required)} but the file is in "
                    f"{_describe_format(fmt, required)}: mixed formats in one file",
                )
                continue
            missing = [c for c in own_required if record.get(c) is None]
            names = ", ".join(f"'{c}'" for c in missing)
            found = ", ".join(f"'{k}'" for k in list(record)[:8]) or "none"
            report.add_problem(
                location,
                f"missing field{'s' if len(missing) > 1 else ''} {names} "
                f"(this record has: {found})",
            )
            continue
        normalised = _normalise(record, fmt, cols, errors)
        if normalised is None:
            for message in errors:
                report.add_problem(location, message)
            continue
        valid += 1
        if valid <= MAX_EXAMPLES:
            examples.append(normalised)
        if sink is not None:
            sink(normalised)
    report.records, report.valid_records = records, valid
    if records == 0 and report.problem_count == 0:
        report.add_problem(None, "the dataset is empty: no records found")
    report.usable = report.problem_count == 0 and report.valid_records > 0


def _scan_source(
    path: str,
    fmt: str,
    field_map: FieldMap | None,
    split: str,
    sink: Callable[[dict[str, Any]], None] | None,
) -> ReportDraft:
    report = ReportDraft(path=str(path))
    if fmt != "auto" and fmt not in FORMATS:
        report.add_problem(None, f"unknown format {fmt!r}; expected auto or {', '.join(FORMATS)}")
        return report
    try:
        items, report.location = _open_source(path, split)
        _scan(items, report, fmt, field_map, sink)
    except _SourceError as exc:
        report.add_problem(None, str(exc))
        report.usable = False
    except OSError as exc:
        report.add_problem(None, f"cannot read: {exc.strerror or exc}")
        report.usable = False
    return report


# --------------------------------------------------------------------------------------------
# Token statistics and the rendered example


def _load_tokenizer(model_path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    p = Path(model_path).expanduser()
    if not p.exists() and (looks_like_local_path(model_path) or _offline()):
        raise _SourceError(
            f"--model {model_path!r}: not on disk"
            + (" and the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)" if _offline() else "")
        )
    try:
        return AutoTokenizer.from_pretrained(str(p) if p.exists() else model_path)
    except Exception as exc:
        raise _SourceError(f"--model {model_path!r}: cannot load a tokenizer: {exc}") from exc


def _has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _lengths(
    tokenizer: Any, records: list[dict[str, Any]], kind: str, batch: int = 256
) -> list[int]:
    """Tokens per record as the trainer will see them (to within a special token)."""
    out: list[int] = []
    eos = 1 if getattr(tokenizer, "eos_token", None) else 0
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        if kind == "messages":
            texts = tokenizer.apply_chat_template([r["messages"] for r in chunk], tokenize=False)
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            out.extend(len(x) for x in ids)
        elif kind == "prompt_completion":
            ids = tokenizer([r["prompt"] + r["completion"] for r in chunk])["input_ids"]
            out.extend(len(x) + eos for x in ids)
        else:
            ids = tokenizer([r["text"] for r in chunk])["input_ids"]
            out.extend(len(x) + eos for x in ids)
    return out


def _percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of a sorted list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _histogram(values: list[int], bins: int = 20) -> list[TokenBin]:
    """Up to `bins` equal-width bins from the shortest to the longest; `end` is inclusive."""
    low, top = min(values), max(values)
    width = max(1, math.ceil((top - low + 1) / bins))
    counts = [0] * math.ceil((top - low + 1) / width)
    for v in values:
        counts[(v - low) // width] += 1
    return [
        TokenBin(start=low + i * width, end=low + (i + 1) * width - 1, count=c)
        for i, c in enumerate(counts)
    ]


def _token_stats(
    lengths: list[int], model: str, sampled: bool, max_length: int | None
) -> TokenStats:
    s = sorted(lengths)
    cut = sum(1 for v in s if v > max_length) if max_length is not None else None
    return TokenStats(
        model=model,
        counted=len(s),
        sampled=sampled,
        mean=sum(s) / len(s),
        min=s[0],
        p50=_percentile(s, 50),
        p90=_percentile(s, 90),
        p95=_percentile(s, 95),
        p99=_percentile(s, 99),
        max=s[-1],
        max_length=max_length,
        cut_count=cut,
        share_cut=None if cut is None else cut / len(s),
        histogram=_histogram(s),
    )


def _assistant_char_spans(tokenizer: Any, messages: list[dict[str, str]]) -> list[tuple[int, int]]:
    """Character spans of the assistant turns, found by rendering growing prefixes."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(
            messages[:i], tokenize=False, add_generation_prompt=True
        )
        after = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if i == 0:
            before = ""
        if after.startswith(before):
            spans.append((len(before), len(after)))
    return spans


def _render_example(
    tokenizer: Any, record: dict[str, Any], kind: str, completions_only: bool
) -> RenderedExample:
    """Render one record and mark the tokens the loss is computed on."""
    token_mask: list[int] | None = None
    spans: list[tuple[int, int]]
    if kind == "messages":
        messages = record["messages"]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        template = str(getattr(tokenizer, "chat_template", "") or "")
        if not completions_only:
            method, spans = "all tokens", [(0, len(text))]
        elif "generation" in template and "endgeneration" in template:
            method = "assistant tokens ({% generation %} blocks of the chat template)"
            out = tokenizer.apply_chat_template(
                messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
            token_mask = list(out["assistant_masks"])
            spans = []
        else:
            method = "assistant turns (the template has no {% generation %} blocks)"
            spans = _assistant_char_spans(tokenizer, messages)
    elif kind == "prompt_completion":
        eos = getattr(tokenizer, "eos_token", None) or ""
        text = record["prompt"] + record["completion"] + eos
        if completions_only:
            method, spans = "completion tokens", [(len(record["prompt"]), len(text))]
        else:
            method, spans = "all tokens", [(0, len(text))]
    else:
        eos = getattr(tokenizer, "eos_token", None) or ""
        text = record["text"] + eos
        method, spans = "all tokens", [(0, len(text))]

    pieces: list[tuple[str, bool]] = []
    total = trained = 0
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = list(enc["offset_mapping"])
    except (NotImplementedError, ValueError, TypeError):
        offsets = None
    if offsets is not None and (token_mask is None or len(token_mask) == len(offsets)):
        total = len(offsets)
        pos = 0
        for t, (_, end) in enumerate(offsets):
            if token_mask is not None:
                is_trained = bool(token_mask[t])
            else:
                start = offsets[t][0]
                is_trained = any(s < end and start < e for s, e in spans) or (
                    start == end and any(s <= start < e for s, e in spans)
                )
            trained += is_trained
            if end > pos:
                pieces.append((text[pos:end], is_trained))
                pos = end
        if pos < len(text):
            pieces.append((text[pos:], pieces[-1][1] if pieces else False))
    else:  # no offsets: mark by characters
        pos = 0
        for s, e in sorted(spans):
            if s > pos:
                pieces.append((text[pos:s], False))
            pieces.append((text[s:e], True))
            pos = max(pos, e)
        if pos < len(text):
            pieces.append((text[pos:], False))
        total = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        trained = sum(
            len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p, t in pieces if t
        )
    segments: list[dict[str, Any]] = []
    for piece, is_trained in pieces:
        if segments and segments[-1]["trained"] == is_trained:
            segments[-1]["text"] += piece
        else:
            segments.append({"text": piece, "trained": is_trained})
    marked = "".join(
        f"{TRAIN_MARK_OPEN}{s['text']}{TRAIN_MARK_CLOSE}" if s["trained"] else s["text"]
        for s in segments
    )
    return RenderedExample(
        text=marked,
        segments=[RenderedSegment(text=s["text"], trained=s["trained"]) for s in segments],
        total_tokens=total,
        trained_tokens=trained,
        method=method,
    )


# --------------------------------------------------------------------------------------------
# Public API


def check_dataset(
    path: str | Path,
    fmt: str = "auto",
    field_map: FieldMap | None = None,
    model_path: str | Path | None = None,
    max_length: int | None = None,
    *,
    split: str = "train",
    token_sample: int | None = DEFAULT_TOKEN_SAMPLE,
    completions_only: bool = True,
    seed: int = 0,
) -> DataReport:
    """Check a dataset without holding it in memory; every problem is listed (up to a cap).

    Args:
        path: a data file, a saved-dataset folder or a Hub id (online only).
        fmt: "auto" or one of FORMATS.
        field_map: column-name overrides.
        model_path: a local model folder (or Hub id online); adds token statistics and a
            rendered example.
        max_length: the training max length, for the share of records that will be cut.
        split: split of a saved DatasetDict or a Hub dataset.
        token_sample: count tokens on a uniform random sample of this many valid records
            (None: all of them).
        completions_only: mark only assistant/completion tokens as trained in the example.
        seed: seed of the token sample.
    """
    sample: list[dict[str, Any]] = []
    rng = random.Random(seed)
    seen = 0

    def keep_sample(record: dict[str, Any]) -> None:
        nonlocal seen
        seen += 1
        if token_sample is None or len(sample) < token_sample:
            sample.append(record)
        else:  # reservoir sampling: every record ends up in the sample with equal chance
            j = int(random_() * seen)
            if j < token_sample:
                sample[j] = record

    random_ = rng.random
    report = _scan_source(
        str(path), fmt, field_map, split, keep_sample if model_path is not None else None
    )
    if model_path is None or not sample or report.format is None:
        return report.finish()
    kind = record_kind(report.format)
    try:
        tokenizer = _load_tokenizer(str(model_path))
    except _SourceError as exc:
        report.add_problem(None, str(exc))
        report.usable = False
        return report.finish()
    if kind == "messages" and not _has_template(tokenizer):
        report.warnings.append(
            f"the tokenizer of {model_path} has no chat template; chat records need one "
            "(use an instruct model's tokenizer, or set its chat_template)"
        )
        return report.finish()
    if kind == "messages":
        template = str(tokenizer.chat_template)
        if completions_only and "endgeneration" not in template:
            report.warnings.append(
                "the chat template has no {% generation %} blocks: TRL cannot mask the prompt "
                "by itself with it (assistant_only_loss)"
            )
    lengths = _lengths(tokenizer, sample, kind)
    report.token_stats = _token_stats(
        lengths, str(model_path), sampled=seen > len(sample), max_length=max_length
    )
    if report.token_stats.cut_count:
        report.warnings.append(
            f"{report.token_stats.share_cut:.1%} of the records are longer than max length "
            f"{max_length} and will be cut"
        )
    report.rendered_example = _render_example(tokenizer, report.examples[0], kind, completions_only)
    return report.finish()


def _split_eval(
    records: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deterministic hold-out: the same seed and records always give the same split."""
    n_eval = max(1, round(len(records) * fraction))
    if n_eval >= len(records):
        raise ValueError(
            f"dataset.eval_split {fraction} leaves no training records out of {len(records)}"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    train = [r for i, r in enumerate(records) if i not in held]
    evals = [records[i] for i in sorted(held)]
    return train, evals


def load_training_data(ds: DatasetConfig, seed: int = 42) -> TrainingData:
    """Read, check and normalise the training (and eval) data of a config.

    Raises:
        DataError: the data has problems (all of them are in `.report` and in the message), or
            an eval file that does not match the training data.
    """
    train: list[dict[str, Any]] = []
    report = _scan_source(ds.path, ds.format, ds.field_map, ds.split, train.append)
    if not report.usable or report.format is None:
        raise DataError(report.finish())
    kind = record_kind(report.format)
    evals: list[dict[str, Any]] | None = None
    eval_report: ReportDraft | None = None
    if ds.eval_path:
        evals = []
        eval_report = _scan_source(ds.eval_path, ds.format, ds.field_map, ds.split, evals.append)
        if not eval_report.usable or eval_report.format is None:
            raise DataError(eval_report.finish())
        if record_kind(eval_report.format) != kind:
            eval_report.add_problem(
                None,
                f"the eval file holds {record_kind(eval_report.format)} records but the "
                f"training data holds {kind} records; use the same kind for both",
            )
            eval_report.usable = False
            raise DataError(eval_report.finish())
    elif ds.eval_split is not None:
        try:
            train, evals = _split_eval(train, ds.eval_split, seed)
        except ValueError as exc:
            report.add_problem(None, str(exc))
            report.usable = False
            raise DataError(report.finish()) from exc
    return TrainingData(
        train=train,
        eval=evals,
        format=kind,
        report=report.finish(),
        source_format=report.format,
        eval_report=None if eval_report is None else eval_report.finish(),
    )


def _parse_field(value: str) -> tuple[str, str]:
    key, sep, column = value.partition("=")
    if not sep or key not in FieldMap.model_fields or not column:
        raise argparse.ArgumentTypeError(
            f"expected FIELD=COLUMN with FIELD one of {', '.join(FieldMap.model_fields)}; "
            f"got {value!r}"
        )
    return key, column


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer check-data FILE [...]`: exit 0 when usable, 2 when not."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer check-data",
        description="Check a training dataset: format, every problem with its line, and (with "
        "--model) token lengths and one rendered example with the trained tokens marked.",
    )
    parser.add_argument("path", help="a data file, a saved-dataset folder, or a Hub id (online)")
    parser.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    parser.add_argument("--model", help="a model folder whose tokenizer counts the tokens")
    parser.add_argument("--max-length", type=int, help="training max length (share cut)")
    parser.add_argument("--split", default="train", help="split of a saved or Hub dataset")
    parser.add_argument(
        "--field",
        action="append",
        type=_parse_field,
        default=[],
        metavar="FIELD=COLUMN",
        help="column override, e.g. --field prompt=question (repeatable)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_TOKEN_SAMPLE,
        help=f"records to count tokens on (random sample; 0 = all; default {DEFAULT_TOKEN_SAMPLE})",
    )
    parser.add_argument(
        "--all-tokens",
        action="store_true",
        help="mark every token as trained (train_on_completions_only off)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    field_map = FieldMap(**dict(args.field)) if args.field else None
    report = check_dataset(
        args.path,
        fmt=args.format,
        field_map=field_map,
        model_path=args.model,
        max_length=args.max_length,
        split=args.split,
        token_sample=args.sample or None,
        completions_only=not args.all_tokens,
    )
    if args.json:
        json.dump(report.to_json_dict(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print(report.to_text())
    return 0 if report.usable else 2
