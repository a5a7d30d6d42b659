"""The JSON reports the trainer prints for the app's checks, as pydantic models.

`python -m trainer check-data PATH --json` prints a `DataReport`, `python -m trainer doctor
--json` a `DoctorReport` and `python -m trainer make-demo FOLDER --json` a `DemoReport`. The
trainer builds these models and prints them; the app parses the same models with `parse`, so
the two processes cannot drift apart.

Like `trainer.config` and `trainer.protocol`, this module is part of the contract between the
two processes: pydantic only, importing it never imports torch. The reports come from another
process (possibly a newer trainer), so unknown keys are ignored; they are values that cross
layers, so they are frozen.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "FORMAT_LABELS",
    "TRAIN_MARK_CLOSE",
    "TRAIN_MARK_OPEN",
    "DataProblem",
    "DataReport",
    "DemoReport",
    "DoctorReport",
    "GpuInfo",
    "RenderedExample",
    "RenderedSegment",
    "TokenBin",
    "TokenStats",
]

# How `RenderedExample.text` marks the tokens the loss is computed on.
TRAIN_MARK_OPEN = "[["
TRAIN_MARK_CLOSE = "]]"

# How a person calls each dataset format.
FORMAT_LABELS = {
    "messages": "messages",
    "sharegpt": "ShareGPT",
    "prompt_completion": "prompt/completion",
    "alpaca": "Alpaca",
    "text": "text",
}


class _Report(BaseModel):
    """A report read from another process: unknown keys ignored, frozen once built."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        """Validate a decoded JSON object into this report.

        Args:
            data: the JSON object the trainer printed, decoded.

        Returns:
            The report.

        Raises:
            ValueError: `data` is not a JSON object, or a field is missing or has the wrong
                type; the message names the report and every field that is wrong.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            wrong = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValueError(f"{cls.__name__}: {wrong}") from None

    def to_json_dict(self) -> dict[str, Any]:
        """The report as the JSON object the trainer prints."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------------
# check-data


class DataProblem(_Report):
    """One thing wrong with the data.

    Attributes:
        line: where it is (a 1-based file line, a record or a row number, see
            `DataReport.location`); None when it concerns the whole source.
        message: what is wrong.
    """

    line: int | None
    message: str

    def render(self, location: str = "line") -> str:
        """`line 37: invalid JSON: ...`, or the bare message for whole-source problems."""
        return self.message if self.line is None else f"{location} {self.line}: {self.message}"


class TokenBin(_Report):
    """One histogram bin of token lengths: `start` to `end` inclusive held `count` records."""

    start: int
    end: int
    count: int


class TokenStats(_Report):
    """Token lengths of the records under a model's tokenizer and chat template.

    Attributes:
        model: the model (tokenizer) the lengths were counted with.
        counted: how many records were counted.
        sampled: True when `counted` is a random sample of the records, not all of them.
        mean, min, p50, p90, p95, p99, max: the length distribution, in tokens.
        max_length: the configured max length, or None.
        cut_count: records longer than `max_length` (None without one).
        share_cut: `cut_count` as a share of `counted` (None without a max length).
        histogram: up to 20 equal-width bins from the shortest to the longest.
    """

    model: str
    counted: int
    sampled: bool
    mean: float
    min: int
    p50: int
    p90: int
    p95: int
    p99: int
    max: int
    max_length: int | None = None
    cut_count: int | None = None
    share_cut: float | None = None
    histogram: list[TokenBin] = Field(default_factory=list)


class RenderedSegment(_Report):
    """A consecutive piece of a rendered example; `trained` when the loss covers it."""

    text: str
    trained: bool


class RenderedExample(_Report):
    """One record as the model sees it, with the tokens the loss is computed on marked.

    Attributes:
        text: the rendered record with trained spans between `[[` and `]]`.
        segments: the same text as consecutive pieces with a `trained` flag, for a GUI.
        total_tokens: tokens in the record.
        trained_tokens: tokens the loss is computed on.
        method: how the trained tokens were found, in words.
    """

    text: str
    segments: list[RenderedSegment] = Field(default_factory=list)
    total_tokens: int
    trained_tokens: int
    method: str


class DataReport(_Report):
    """What a dataset check found: what `python -m trainer check-data PATH --json` prints.

    Attributes:
        path: the file, folder or Hub dataset id checked.
        format: the detected (or given) format, None when unknown.
        records: records read.
        valid_records: records without a problem.
        usable: True when the trainer accepts the dataset.
        problems: the first problems found (at most 200 are listed).
        problem_count: every problem found, listed or not.
        location: what `DataProblem.line` counts: "line", "record" or "row".
        examples: the first few records, normalised as the trainer hands them to TRL.
        warnings: things that do not stop training but deserve a look.
        token_stats: token lengths, when a model was given.
        rendered_example: the first example rendered, when a model was given.
    """

    path: str
    format: str | None = None
    records: int = 0
    valid_records: int = 0
    usable: bool = False
    problems: list[DataProblem] = Field(default_factory=list)
    problem_count: int = 0
    location: str = "line"
    examples: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    token_stats: TokenStats | None = None
    rendered_example: RenderedExample | None = None

    @property
    def invalid_records(self) -> int:
        """Records read that have a problem (what `dataset.skip_invalid_records` would skip)."""
        return max(self.records - self.valid_records, 0)

    @property
    def skippable(self) -> bool:
        """Unusable only for invalid records: every problem names its record and the rest are
        valid, so `dataset.skip_invalid_records` would train on them."""
        return (
            not self.usable
            and self.valid_records > 0
            and self.invalid_records > 0
            and all(p.line is not None for p in self.problems)
        )

    def skip_summary(self) -> str:
        """`skipped 1 invalid record (line 17: invalid JSON ...)`: the invalid records, the
        first few named (what the trainer says when it skips them)."""
        n = self.invalid_records
        first = "; ".join(p.render(self.location) for p in self.problems[:3])
        more = "; ..." if self.problem_count > 3 else ""
        return f"skipped {n} invalid record{'' if n == 1 else 's'} ({first}{more})"

    def skip_hint(self) -> str:
        """What to do about skippable invalid records."""
        return (
            f"set dataset.skip_invalid_records to train on the {self.valid_records} valid "
            f"records without the {self.invalid_records} invalid one"
            f"{'' if self.invalid_records == 1 else 's'}, or fix the file"
        )

    def problem_lines(self) -> list[str]:
        """The listed problems as `line N: message` strings, plus a line for the unlisted."""
        lines = [p.render(self.location) for p in self.problems]
        hidden = self.problem_count - len(self.problems)
        if hidden > 0:
            lines.append(f"... and {hidden} more problems (first {len(self.problems)} listed)")
        return lines

    def to_text(self) -> str:
        """The report for a person: summary, problems, token lengths, one rendered example."""
        fmt = FORMAT_LABELS.get(self.format or "", "unknown")
        verdict = "usable" if self.usable else "NOT usable"
        out = [
            f"{self.path}: {fmt} format, {self.records} records "
            f"({self.valid_records} valid): {verdict}"
        ]
        if self.problem_count:
            out.append(f"{self.problem_count} problem{'s' if self.problem_count != 1 else ''}:")
            out += [f"  {line}" for line in self.problem_lines()]
        if self.skippable:
            out.append(f"to train anyway: {self.skip_hint()}")
        for warning in self.warnings:
            out.append(f"warning: {warning}")
        ts = self.token_stats
        if ts is not None:
            scope = f"a sample of {ts.counted}" if ts.sampled else f"{ts.counted}"
            out.append(f"token lengths ({ts.model}, {scope} records):")
            out.append(
                f"  p50 {ts.p50}  p90 {ts.p90}  p95 {ts.p95}  p99 {ts.p99}  max {ts.max}  "
                f"mean {ts.mean:.1f}"
            )
            if ts.max_length is not None and ts.share_cut is not None:
                out.append(
                    f"  cut at max length {ts.max_length}: {ts.cut_count} records "
                    f"({ts.share_cut:.1%})"
                )
            peak = max((b.count for b in ts.histogram), default=0)
            for b in ts.histogram:
                bar = "#" * (round(30 * b.count / peak) if peak else 0)
                out.append(f"  {b.start:>7}-{b.end:<7} {b.count:>7} {bar}")
        ex = self.rendered_example
        if ex is not None:
            out.append(
                f"rendered example ({ex.trained_tokens} of {ex.total_tokens} tokens trained, "
                f"shown between {TRAIN_MARK_OPEN} and {TRAIN_MARK_CLOSE}):"
            )
            out += ["  " + line for line in ex.text.splitlines() or [""]]
        return "\n".join(out)


# --------------------------------------------------------------------------------------------
# doctor


class GpuInfo(_Report):
    """One CUDA GPU the runtime sees."""

    index: int
    name: str
    memory_gb: float
    compute_capability: str | None = None


class DoctorReport(_Report):
    """Can this Python train, and on what: what `python -m trainer doctor --json` prints.

    Library fields hold the installed version, or None when the library is not installed
    ("unknown" when it is importable but has no metadata).

    Attributes:
        python: the Python version.
        executable: the Python interpreter's path.
        platform: the operating system, as `platform.platform()` says it.
        torch: the torch version, None when torch is missing or does not import.
        cuda_available: True when torch sees a CUDA GPU.
        cuda_version: the CUDA version torch was built for, None for a CPU-only build.
        mps_available: True when torch sees an Apple GPU.
        gpus: the CUDA GPUs.
        ok: True when the runtime can train (then `problems` is empty).
        problems: why it cannot train, each with what to install.
        warnings: what limits it (no GPU, no bitsandbytes, ...).
    """

    python: str
    executable: str
    platform: str = ""
    torch: str | None = None
    cuda_available: bool = False
    cuda_version: str | None = None
    mps_available: bool = False
    gpus: list[GpuInfo] = Field(default_factory=list)
    bitsandbytes: str | None = None
    flash_attn: str | None = None
    transformers: str | None = None
    peft: str | None = None
    trl: str | None = None
    accelerate: str | None = None
    datasets: str | None = None
    ok: bool
    problems: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    def to_text(self) -> str:
        """The report for a person, one line per item, ending with the verdict."""

        def show(value: str | None) -> str:
            return "not installed" if value is None else value

        lines = [
            f"python        {self.python} ({self.executable})",
            f"torch         {show(self.torch)}",
            f"CUDA          {'available' if self.cuda_available else 'not available'}"
            + (f" (CUDA {self.cuda_version})" if self.cuda_version else ""),
        ]
        for gpu in self.gpus:
            lines.append(f"  GPU {gpu.index}       {gpu.name}, {gpu.memory_gb} GB")
        lines.append(f"bitsandbytes  {show(self.bitsandbytes)}")
        lines.append(f"flash-attn    {show(self.flash_attn)}")
        for name, version in (
            ("transformers", self.transformers),
            ("peft", self.peft),
            ("trl", self.trl),
            ("accelerate", self.accelerate),
            ("datasets", self.datasets),
        ):
            lines.append(f"{name:<13} {show(version)}")
        lines += [f"problem: {problem}" for problem in self.problems]
        lines += [f"note: {warning}" for warning in self.warnings]
        lines.append("ready to train" if self.ok else "NOT ready to train")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# make-demo


class DemoReport(_Report):
    """What `python -m trainer make-demo FOLDER --json` wrote.

    Attributes:
        folder: the demo folder (a job folder: it holds `config.json`).
        config: the demo's `config.json`.
        model: the tiny model's folder.
        train_data: the chat dataset.
    """

    folder: Path
    config: Path
    model: Path
    train_data: Path
