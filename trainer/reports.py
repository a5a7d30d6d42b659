"""The JSON reports the trainer prints for the app's checks, as pydantic models.

`python -m trainer check-data PATH --json` prints a `DataReport`, `python -m trainer doctor
--json` a `DoctorReport` and `python -m trainer make-demo FOLDER --json` a `DemoReport`. The
trainer builds these models and prints them; the app parses the same models with `parse`, so
the two processes cannot drift apart. A job's `provenance.json` (`ProvenanceRecord`: what each
attempt trained on) is written by the trainer and read by the app; the digests both sides
compare (`dataset_digest`, `model_revision`, standard library only) live here for the same
reason.

This module is over 600 lines because it is the one contract module for everything the
trainer reports (checks, doctor, demo, provenance); splitting it would give the contract two
homes.

Like `trainer.config` and `trainer.protocol`, this module is part of the contract between the
two processes: pydantic only, importing it never imports torch. The reports come from another
process (possibly a newer trainer), so unknown keys are ignored; they are values that cross
layers, so they are frozen.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "FORMAT_LABELS",
    "PROVENANCE_FILE",
    "TRAIN_MARK_CLOSE",
    "TRAIN_MARK_OPEN",
    "DataProblem",
    "DataReport",
    "DatasetProvenance",
    "DemoReport",
    "DoctorReport",
    "GpuInfo",
    "ModelProvenance",
    "Provenance",
    "ProvenanceRecord",
    "RenderedExample",
    "RenderedSegment",
    "TokenBin",
    "TokenStats",
    "dataset_digest",
    "file_sha256",
    "fmt_size",
    "model_revision",
    "read_provenance",
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


# --------------------------------------------------------------------------------------------
# provenance.json: what each attempt of a job trained on

PROVENANCE_FILE = "provenance.json"
_CHUNK = 1 << 20  # hash in 1 MB pieces: a dataset of any size costs no memory
_COMMIT = re.compile(r"[0-9a-f]{40}")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _walk_files(folder: Path) -> list[Path]:
    """Every file under `folder`, in a stable order (sorted relative paths)."""
    found = [Path(root, name) for root, _, names in os.walk(folder) for name in names]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


DatasetKind = Literal["file", "folder", "hub"]


def dataset_digest(path: str | Path) -> tuple[DatasetKind, int | None, str | None]:
    """What a dataset is, its size in bytes and its sha256.

    A file: the sha256 of its bytes. A folder (a saved dataset): the sha256 over each file's
    relative name, size and sha256. Anything else is a Hub id: no size, no digest.

    Raises:
        OSError: a file cannot be read.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return "file", p.stat().st_size, file_sha256(p)
    if p.is_dir():
        digest, total = hashlib.sha256(), 0
        for f in _walk_files(p):
            size = f.stat().st_size
            total += size
            name = f.relative_to(p).as_posix()
            digest.update(f"{name}\0{size}\0{file_sha256(f)}\n".encode())
        return "folder", total, digest.hexdigest()
    return "hub", None, None


def _hub_cache() -> Path:
    """The Hugging Face Hub cache folder, as huggingface_hub finds it (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


RevisionKind = Literal["fingerprint", "hub-commit", "requested"]


def model_revision(
    name_or_path: str, revision: str | None = None
) -> tuple[str | None, RevisionKind]:
    """The model's revision and what kind of revision it is.

    A local folder: ("<sha256>", "fingerprint"), the sha256 over its files' relative names and
    sizes and the sha256 of its config.json (weights are not read: cheap for any size). A Hub
    id: ("<commit sha>", "hub-commit") when the revision is a commit or the Hub cache knows
    which commit it stands for; else (`revision`, "requested"), the name asked for.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        digest = hashlib.sha256()
        for f in _walk_files(p):
            digest.update(f"{f.relative_to(p).as_posix()}\0{f.stat().st_size}\n".encode())
        config = p / "config.json"
        digest.update(file_sha256(config).encode() if config.is_file() else b"no config.json")
        return digest.hexdigest(), "fingerprint"
    wanted = revision or "main"
    if _COMMIT.fullmatch(wanted):
        return wanted, "hub-commit"
    ref = _hub_cache() / f"models--{name_or_path.replace('/', '--')}" / "refs" / wanted
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        commit = ""
    if _COMMIT.fullmatch(commit):
        return commit, "hub-commit"
    return wanted, "requested"


def fmt_size(size: int | None) -> str:
    """`1.2 MB`-style size for a sentence (`unknown` for None)."""
    if size is None:
        return "unknown size"
    if size < 1000:
        return f"{size} bytes"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


class DatasetProvenance(_Report):
    """The training data of one attempt.

    Attributes:
        path: the file, folder or Hub dataset id.
        kind: "file", "folder" or "hub" (a Hub id has no size or digest).
        size_bytes: the file's (or the folder's files') size.
        sha256: see `dataset_digest`.
        records: training records loaded (valid records, before the cut at max_length).
        eval_records: evaluation records, None without evaluation.
        trainable_records: training records left with a trained token after the cut (None
            until the trainer has counted them, or when streamed).
    """

    path: str
    kind: DatasetKind
    size_bytes: int | None = None
    sha256: str | None = None
    records: int | None = None
    eval_records: int | None = None
    trainable_records: int | None = None


class ModelProvenance(_Report):
    """The base model of one attempt: its path or Hub id, and its revision (`model_revision`)."""

    name_or_path: str
    revision: str | None = None
    revision_kind: RevisionKind = "requested"


class Provenance(_Report):
    """What one attempt of a job trained on, recorded by the trainer before it trains.

    Attributes:
        attempt: 1 for the first run of the job, +1 for each resume.
        recorded_at: when (ISO 8601, UTC).
        resumed: True when the attempt continued from a checkpoint.
        dataset: the training data.
        model: the base model.
        packages: versions of python, torch, transformers, peft, trl, accelerate, datasets and
            finetune-desk in the trainer's Python (None: not installed).
        seed: the training seed.
        changes: what changed since the previous attempt, one sentence each (a forced resume).
    """

    attempt: int
    recorded_at: str
    resumed: bool = False
    dataset: DatasetProvenance
    model: ModelProvenance
    packages: dict[str, str | None] = Field(default_factory=dict)
    seed: int
    changes: list[str] = Field(default_factory=list)

    def changes_since(self, earlier: Provenance) -> list[str]:
        """One sentence per thing that differs from `earlier`; what either side does not know
        (None, or a package one side did not report) is not compared."""
        out: list[str] = []
        old, new = earlier.dataset, self.dataset
        if (old.sha256 and new.sha256 and old.sha256 != new.sha256) or (
            old.size_bytes is not None
            and new.size_bytes is not None
            and old.size_bytes != new.size_bytes
        ):
            sizes = (
                f"same size ({fmt_size(new.size_bytes)})"
                if old.size_bytes == new.size_bytes
                else f"{fmt_size(old.size_bytes)} → {fmt_size(new.size_bytes)}"
            )
            out.append(
                "the dataset changed since this job started: sha256 "
                f"{(old.sha256 or '?')[:8]}… → {(new.sha256 or '?')[:8]}…, {sizes}"
            )
        om, nm = earlier.model, self.model
        if (
            om.revision is not None
            and nm.revision is not None
            and om.revision_kind == nm.revision_kind
            and om.revision != nm.revision
        ):
            out.append(
                f"the model changed since this job started: {nm.revision_kind} "
                f"{om.revision[:12]}… → {nm.revision[:12]}…"
            )
        moved = [
            f"{name} {earlier.packages[name]} → {version}"
            for name, version in self.packages.items()
            if version is not None
            and earlier.packages.get(name) is not None
            and earlier.packages[name] != version
        ]
        if moved:
            out.append("the trainer's packages changed since this job started: " + ", ".join(moved))
        return out

    def to_lines(self) -> list[str]:
        """The attempt for a person: dataset, model, packages and seed, one line each."""
        ds = self.dataset
        data = [ds.path]
        if ds.size_bytes is not None:
            data.append(f"{ds.size_bytes} bytes")
        if ds.sha256:
            data.append(f"sha256 {ds.sha256[:12]}")
        if ds.records is not None:
            trainable = (
                f" ({ds.trainable_records} trainable)" if ds.trainable_records is not None else ""
            )
            data.append(f"{ds.records} records{trainable}")
        if ds.eval_records is not None:
            data.append(f"{ds.eval_records} eval records")
        m = self.model
        shown = (m.revision or "")[:12] if m.revision_kind == "fingerprint" else m.revision
        revision = f"{m.revision_kind} {shown}" if m.revision else "revision unknown"
        packages = ", ".join(f"{k} {v or 'not installed'}" for k, v in self.packages.items())
        lines = [
            f"dataset:  {', '.join(data)}",
            f"model:    {m.name_or_path} ({revision})",
            f"packages: {packages}",
            f"seed:     {self.seed}",
        ]
        lines += [f"changed:  {change}" for change in self.changes]
        return lines


class ProvenanceRecord(_Report):
    """`provenance.json`: every attempt of a job, the first first; none is ever overwritten."""

    attempts: list[Provenance] = Field(default_factory=list)

    @property
    def latest(self) -> Provenance | None:
        """The newest attempt (the one the checkpoints come from), None when empty."""
        return self.attempts[-1] if self.attempts else None


def read_provenance(job_dir: Path) -> ProvenanceRecord | None:
    """The job's `provenance.json`; None when there is none (an older version's job).

    Raises:
        ValueError: the file cannot be read or is not a provenance record; the message names
            the file and what is wrong.
    """
    path = job_dir / PROVENANCE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot be read: {exc}") from None
    try:
        return ProvenanceRecord.parse(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
