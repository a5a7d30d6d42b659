"""Token statistics and the rendered example: a dataset seen through a model's tokenizer.

Token lengths are counted under the tokenizer and its chat template (the lengths the trainer
will see), on a bounded random sample; one record is rendered with the tokens the loss is
computed on marked. transformers is imported only when a tokenizer is loaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.config import looks_like_local_path
from trainer.data.readers import SourceError, hub_offline
from trainer.reports import (
    TRAIN_MARK_CLOSE,
    TRAIN_MARK_OPEN,
    RenderedExample,
    RenderedSegment,
    TokenBin,
    TokenStats,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_TOKEN_SAMPLE",
    "has_template",
    "load_tokenizer",
    "no_trainable_records",
    "render_example",
    "token_lengths",
    "token_stats",
    "trained_starts",
]

DEFAULT_TOKEN_SAMPLE = 5000


def load_tokenizer(model_path: str) -> PreTrainedTokenizerBase:
    """Load a model's tokenizer; `SourceError` says why when it cannot be found or read."""
    from transformers import AutoTokenizer

    p = Path(model_path).expanduser()
    if not p.exists() and (looks_like_local_path(model_path) or hub_offline()):
        raise SourceError(
            f"--model {model_path!r}: not on disk"
            + (" and the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)" if hub_offline() else "")
        )
    try:
        return AutoTokenizer.from_pretrained(str(p) if p.exists() else model_path)
    except Exception as exc:
        raise SourceError(f"--model {model_path!r}: cannot load a tokenizer: {exc}") from exc


def has_template(tokenizer: Any) -> bool:
    """True when the tokenizer has a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def token_lengths(
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


def trained_starts(
    tokenizer: Any, records: list[dict[str, Any]], kind: str, completions_only: bool
) -> list[int]:
    """Per record, the position of its first trained token (0 when every token is trained).

    TRL cuts each record at max_length and then drops the ones left without a trained token, so
    a record whose start is at or past max_length gives the run nothing. The prompt is counted
    as the trainer renders it (chat template, generation prompt), to within a special token.
    """
    if not completions_only or kind == "text":
        return [0] * len(records)
    out: list[int] = []
    for record in records:
        if kind == "prompt_completion":
            out.append(len(tokenizer(record["prompt"])["input_ids"]))
            continue
        messages = record["messages"]
        first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
        if first is None:  # nothing of it is trained: it starts past its own end
            prompt = tokenizer.apply_chat_template(messages, tokenize=False)
            out.append(len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 1)
        elif first == 0:
            out.append(0)
        else:
            prompt = tokenizer.apply_chat_template(
                messages[:first], tokenize=False, add_generation_prompt=True
            )
            out.append(len(tokenizer(prompt, add_special_tokens=False)["input_ids"]))
    return out


def no_trainable_records(count: int, max_length: int, *, sampled: bool = False) -> str:
    """The one sentence for data of which no record keeps a trained token within max_length.

    `check-data --model`, `finetune-desk validate` and the trainer itself all say this.
    """
    which = f"all {count} records" + (" of the sample counted" if sampled else "")
    return (
        f"{which} are longer than dataset.max_length {max_length} before their first trained "
        "token: each record is cut at max_length and one with nothing left to train on is "
        "dropped, so training would have no data; raise dataset.max_length, or use shorter "
        "records (a shorter prompt before the answer)"
    )


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


def token_stats(
    lengths: list[int], model: str, sampled: bool, max_length: int | None
) -> TokenStats:
    """The length distribution of `lengths` and how many exceed `max_length`."""
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


def render_example(
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
