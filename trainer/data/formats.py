"""Record formats: detect the format, validate every record, normalise it for TRL.

Formats, detected from the columns unless given: `messages` (chat messages with role/content),
`sharegpt` (`conversations` with from/value), `alpaca` (instruction/input/output),
`prompt_completion` and `text`. ShareGPT and Alpaca become chat messages; the records handed
to TRL are `{"messages": [...]}`, `{"prompt": str, "completion": str}` or `{"text": str}`.
`scan_source` reads a source (see `readers`) and fills a `ReportDraft` with every problem.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from trainer.config import FieldMap
from trainer.data.readers import RawItem, SourceError, open_source, type_name
from trainer.data.report import ReportDraft
from trainer.reports import FORMAT_LABELS

__all__ = [
    "DETECT_SAMPLE",
    "FORMATS",
    "MAX_EXAMPLES",
    "ROLES",
    "SHAREGPT_ROLES",
    "record_kind",
    "scan_source",
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
MAX_EXAMPLES = 20
DETECT_SAMPLE = 200

# Columns each format needs, in detection order (first full match wins).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "text": ("text",),
}


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
        errors.append(f"'{column}' must be a list of messages, got a {type_name(value)}")
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
            errors.append(f"message {i} must be an object, got a {type_name(message)}")
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
            errors.append(f"message {i} ({role}) content must be text, got a {type_name(content)}")
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
        errors.append(f"'{column}' must be text, got a {type_name(value)}")
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
            errors.append(f"'{cols['input']}' must be text, got a {type_name(extra)}")
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
    return f"{FORMAT_LABELS[fmt]} format ({', '.join(required[fmt])})"


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
            report.add_problem(location, f"expected a JSON object, got a {type_name(record)}")
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


def scan_source(
    path: str,
    fmt: str,
    field_map: FieldMap | None,
    split: str,
    sink: Callable[[dict[str, Any]], None] | None,
) -> ReportDraft:
    """Open `path` and validate every item into a new draft; each valid record goes to `sink`."""
    report = ReportDraft(path=str(path))
    if fmt != "auto" and fmt not in FORMATS:
        report.add_problem(None, f"unknown format {fmt!r}; expected auto or {', '.join(FORMATS)}")
        return report
    try:
        items, report.location = open_source(path, split)
        _scan(items, report, fmt, field_map, sink)
    except SourceError as exc:
        report.add_problem(None, str(exc))
        report.usable = False
    except OSError as exc:
        report.add_problem(None, f"cannot read: {exc.strerror or exc}")
        report.usable = False
    return report
