"""`python -m trainer check-data`: check a dataset without holding it in memory."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from trainer.config import FieldMap
from trainer.data.formats import FORMATS, record_kind, scan_source
from trainer.data.readers import SourceError
from trainer.data.tokens import (
    DEFAULT_TOKEN_SAMPLE,
    has_template,
    load_tokenizer,
    no_trainable_records,
    render_example,
    token_lengths,
    token_stats,
    trained_starts,
)
from trainer.reports import DataReport

__all__ = ["check_dataset", "main"]


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
    report = scan_source(
        str(path), fmt, field_map, split, keep_sample if model_path is not None else None
    )
    if model_path is None or not sample or report.format is None:
        return report.finish()
    kind = record_kind(report.format)
    try:
        tokenizer = load_tokenizer(str(model_path))
    except SourceError as exc:
        report.add_problem(None, str(exc))
        report.usable = False
        return report.finish()
    if kind == "messages" and not has_template(tokenizer):
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
    lengths = token_lengths(tokenizer, sample, kind)
    report.token_stats = token_stats(
        lengths, str(model_path), sampled=seen > len(sample), max_length=max_length
    )
    if report.token_stats.cut_count:
        report.warnings.append(
            f"{report.token_stats.share_cut:.1%} of the records are longer than max length "
            f"{max_length} and will be cut"
        )
    if max_length is not None:
        starts = trained_starts(tokenizer, sample, kind, completions_only)
        dropped = sum(1 for start in starts if start >= max_length)
        if dropped == len(starts):
            report.add_problem(
                None, no_trainable_records(dropped, max_length, sampled=seen > len(sample))
            )
            report.usable = False
        elif dropped:
            report.warnings.append(
                f"{dropped} of {len(starts)} records counted have no trained token within max "
                f"length {max_length} and will be dropped by the trainer"
            )
    report.rendered_example = render_example(tokenizer, report.examples[0], kind, completions_only)
    return report.finish()


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
