"""The training configuration: the contract between the app and the trainer.

`TrainingConfig` is the single source of truth for what a run does. The trainer reads it from
`<job-dir>/config.json`; the desktop editor builds its widgets from the JSON schema of these
models (titles, descriptions, bounds). Pydantic only: importing this module never imports torch.

A config written by a person rejects unknown fields (`extra="forbid"`), so a typo is an error
that names the field instead of a setting that is silently ignored.

Why over 600 lines: the schema, one documented field at a time (the editor renders it as is),
and the file reading, kept here because the app may import only the contract modules.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "SCHEMA_VERSION",
    "ConfigFileError",
    "DatasetConfig",
    "FieldMap",
    "HardwareConfig",
    "LoraSettings",
    "ModelConfig",
    "OutputConfig",
    "QuantizationConfig",
    "TrainingConfig",
    "TrainingParams",
    "format_validation_error",
    "load_config",
    "looks_like_local_path",
    "read_config_file",
    "validate_config_data",
]

SCHEMA_VERSION: Literal[1] = 1
_PINNED_URL = re.compile(r"https?://[^#\s]+#sha256=[0-9a-fA-F]{64}")  # fetched by a RunPod pod

Method = Literal["lora", "qlora", "full"]
Dtype = Literal["auto", "bf16", "fp16", "fp32"]
DatasetFormat = Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text"]


class _Strict(BaseModel):
    """Base for every section a person writes: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def looks_like_local_path(value: str) -> bool:
    """Tell a filesystem path from a Hugging Face Hub id.

    `org/name` is a Hub id; `./x`, `../x`, `/x`, `~/x`, `C:\\x` and anything with a file suffix
    known to hold data are paths.
    """
    if value.startswith(("/", "./", "../", "~", "\\")) or (len(value) > 1 and value[1] == ":"):
        return True
    suffixes = (".jsonl", ".json", ".csv", ".parquet", ".gz", ".txt", ".arrow")
    return "://" not in value and (value.lower().endswith(suffixes) or value.count("/") > 1)


def _resolve_path(value: str | None, info: ValidationInfo) -> str | None:
    """Resolve a relative path against the folder of the config file it came from."""
    if value is None or not value.strip():
        return value
    if "://" in value and not _PINNED_URL.fullmatch(value):
        raise ValueError("a URL is pinned by its sha256: end it with #sha256=<sha256sum's hex>")
    base = (info.context or {}).get("base_dir")
    if base is None:
        return value
    expanded = Path(value).expanduser()
    if expanded.is_absolute():
        return str(expanded)
    candidate = Path(base) / expanded
    if candidate.exists() or looks_like_local_path(value):
        return str(candidate.resolve())
    return value


class ModelConfig(_Strict):
    """Which model to fine-tune and how to load it."""

    name_or_path: str = Field(
        title="Model",
        description="A Hugging Face Hub id (org/name) or a local folder with config.json and "
        "weights. Relative paths are resolved against the config file's folder.",
        min_length=1,
        max_length=500,
    )
    revision: str | None = Field(
        default=None,
        title="Revision",
        description="Hub branch, tag or commit to load; empty for the default branch.",
        max_length=200,
    )
    dtype: Dtype = Field(
        default="auto",
        title="Weights dtype",
        description="Precision of the model weights and mixed-precision training. 'auto' takes "
        "bf16 on GPUs that support it, fp16 on other GPUs and fp32 on the CPU.",
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        default="auto",
        title="Attention implementation",
        description="Attention kernel. 'auto' lets transformers choose (sdpa where available); "
        "flash_attention_2 needs the flash-attn package and a recent NVIDIA GPU.",
    )
    trust_remote_code: bool = Field(
        default=False,
        title="Trust remote code",
        description="Run Python code shipped with the model repository. Only enable it for "
        "repositories you trust.",
    )

    _resolve = field_validator("name_or_path")(_resolve_path)


class LoraSettings(_Strict):
    """Low-rank adapter settings (methods lora and qlora)."""

    r: int = Field(
        default=16, title="Rank (r)", description="Rank of the LoRA matrices.", ge=1, le=1024
    )
    alpha: int = Field(
        default=32,
        title="Alpha",
        description="LoRA scaling numerator; the update is scaled by alpha / r (alpha / sqrt(r) "
        "with rsLoRA).",
        ge=1,
        le=4096,
    )
    dropout: float = Field(
        default=0.05, title="Dropout", description="Dropout on the LoRA input.", ge=0.0, le=0.9
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear",
        title="Target modules",
        description="Module names to adapt (e.g. q_proj, v_proj), or 'all-linear' for every "
        "linear layer except the output head.",
    )
    use_rslora: bool = Field(
        default=False,
        title="rsLoRA",
        description="Rank-stabilised scaling (alpha / sqrt(r)); helps at high ranks.",
    )
    use_dora: bool = Field(
        default=False, title="DoRA", description="Weight-decomposed LoRA: often better, slower."
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty_modules(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and (not value or any(not m.strip() for m in value)):
            raise ValueError("give at least one module name, or 'all-linear'")
        return value


class QuantizationConfig(_Strict):
    """4-bit quantisation of the frozen base model (method qlora; needs bitsandbytes + CUDA)."""

    quant_type: Literal["nf4", "fp4"] = Field(
        default="nf4", title="4-bit type", description="NF4 is the QLoRA paper's data type."
    )
    double_quant: bool = Field(
        default=True,
        title="Double quantisation",
        description="Quantise the quantisation constants too (saves ~0.4 bits per parameter).",
    )
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field(
        default="bf16",
        title="Compute dtype",
        description="Dtype the 4-bit weights are de-quantised to for matrix multiplications.",
    )


class FieldMap(_Strict):
    """Column names to use instead of the defaults of the detected format."""

    messages: str | None = Field(
        default=None, title="Messages column", description="Default: messages."
    )
    conversations: str | None = Field(
        default=None, title="ShareGPT column", description="Default: conversations."
    )
    prompt: str | None = Field(default=None, title="Prompt column", description="Default: prompt.")
    completion: str | None = Field(
        default=None, title="Completion column", description="Default: completion."
    )
    text: str | None = Field(default=None, title="Text column", description="Default: text.")
    instruction: str | None = Field(
        default=None, title="Instruction column", description="Default: instruction (Alpaca)."
    )
    input: str | None = Field(
        default=None, title="Input column", description="Default: input (Alpaca)."
    )
    output: str | None = Field(
        default=None, title="Output column", description="Default: output (Alpaca)."
    )


class DatasetConfig(_Strict):
    """Training data and how to turn it into token sequences."""

    path: str = Field(
        title="Dataset",
        description="A .jsonl, .jsonl.gz, .json, .csv or .parquet file, a folder saved by "
        "datasets, or a Hub dataset id. Relative paths are resolved against the config file's "
        "folder. On RunPod also an https URL pinned as https://host/train.jsonl#sha256=<hex> "
        "(what sha256sum prints): the pod fetches it and checks its size and sha256.",
        min_length=1,
        max_length=1000,
    )
    split: str = Field(
        default="train",
        title="Split",
        description="Split to train on (Hub or saved datasets).",
        min_length=1,
        max_length=100,
    )
    format: DatasetFormat = Field(
        default="auto",
        title="Format",
        description="Record format. 'auto' detects messages, ShareGPT, Alpaca, "
        "prompt/completion or plain text from the columns.",
    )
    field_map: FieldMap = Field(
        default_factory=FieldMap,
        title="Column names",
        description="Override the column names the format expects.",
    )
    eval_split: float | None = Field(
        default=None,
        title="Eval fraction",
        description="Hold out this fraction of the training records for evaluation.",
        gt=0.0,
        lt=0.5,
    )
    eval_path: str | None = Field(
        default=None,
        title="Eval file",
        description="A separate evaluation file (same formats as the dataset).",
        max_length=1000,
    )
    max_length: int = Field(
        default=1024,
        title="Max length",
        description="Tokens per training sequence; longer records are cut.",
        ge=16,
        le=262144,
    )
    packing: bool = Field(
        default=False,
        title="Packing",
        description="Pack records into max-length rows (records kept apart, else padded).",
    )
    padding_free: bool = Field(
        default=True,
        title="Padding-free batches",
        description="Records concatenated with no padding: same loss (else padded).",
    )
    train_on_completions_only: bool = Field(
        default=True,
        title="Train on answers only",
        description="Compute the loss only on assistant turns / completions, not on prompts.",
    )
    skip_invalid_records: bool = Field(
        default=False,
        title="Skip invalid records",
        description="Skip records that fail the check (bad JSON, missing fields) and train on "
        "the rest; the trainer logs how many it skipped and their lines. Off: any invalid "
        "record stops the run.",
    )

    _resolve = field_validator("path", "eval_path")(_resolve_path)


class TrainingParams(_Strict):
    """Optimisation, logging, evaluation and checkpointing."""

    num_epochs: float = Field(
        default=1.0,
        title="Epochs",
        description="Passes over the data (ignored when max steps is set).",
        gt=0.0,
        le=1000.0,
    )
    max_steps: int | None = Field(
        default=None,
        title="Max steps",
        description="Stop after this many optimizer steps; overrides epochs when set.",
        ge=1,
        le=10_000_000,
    )
    per_device_batch_size: int = Field(
        default=4,
        title="Batch size per device",
        description="Sequences per forward pass.",
        ge=1,
        le=4096,
    )
    gradient_accumulation_steps: int = Field(
        default=1,
        title="Gradient accumulation",
        description="Forward passes per optimizer step; effective batch = batch size x this "
        "x devices.",
        ge=1,
        le=1024,
    )
    learning_rate: float = Field(
        default=2e-4, title="Learning rate", description="Peak learning rate.", gt=0.0, le=1.0
    )
    lr_scheduler: Literal[
        "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"
    ] = Field(
        default="cosine", title="LR schedule", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(
        default=0.03,
        title="Warmup",
        description="Fraction of the steps spent warming up the learning rate.",
        ge=0.0,
        le=0.5,
    )
    weight_decay: float = Field(
        default=0.0, title="Weight decay", description="AdamW weight decay.", ge=0.0, le=1.0
    )
    max_grad_norm: float = Field(
        default=1.0,
        title="Max grad norm",
        description="Gradient clipping; 0 disables.",
        ge=0.0,
        le=1000.0,
    )
    optimizer: Literal[
        "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "sgd"
    ] = Field(
        default="adamw_torch",
        title="Optimizer",
        description="8-bit and paged optimizers need bitsandbytes and a GPU.",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        title="Gradient checkpointing",
        description="Recompute activations in the backward pass: much less memory, ~30% slower.",
    )
    seed: int = Field(
        default=42,
        title="Seed",
        description="Random seed for weights, data order and dropout.",
        ge=0,
        le=2**32 - 1,
    )
    logging_steps: int = Field(
        default=10,
        title="Log every",
        description="Optimizer steps between metric events.",
        ge=1,
        le=100_000,
    )
    eval_steps: int | None = Field(
        default=None,
        title="Evaluate every",
        description="Optimizer steps between evaluations; needs an eval fraction or eval file.",
        ge=1,
        le=1_000_000,
    )
    save_steps: int = Field(
        default=200,
        title="Checkpoint every",
        description="Optimizer steps between checkpoints.",
        ge=1,
        le=1_000_000,
    )
    save_total_limit: int = Field(
        default=2,
        title="Checkpoints kept",
        description="Older checkpoints are deleted; 0 saves none (no resume).",
        ge=0,
        le=1000,
    )
    early_stopping_patience: int | None = Field(
        default=None,
        title="Early stopping patience",
        description="Stop after this many evaluations without improvement of the eval loss.",
        ge=1,
        le=1000,
    )
    dataloader_num_workers: int = Field(
        default=0,
        title="Data loader workers",
        description="Background processes feeding batches.",
        ge=0,
        le=64,
    )
    dataloader_prefetch_factor: int | None = Field(
        default=None,
        title="Prefetch factor",
        description="Batches each worker loads ahead; needs at least one worker.",
        ge=1,
        le=64,
    )
    pretokenize: bool = Field(
        default=True,
        title="Pre-tokenise",
        description="Tokenise the whole dataset once before training instead of on the fly.",
    )
    liger_kernels: bool = Field(
        default=False,
        title="Liger kernels",
        description="Fused CUDA kernels, less memory; needs liger-kernel (extra 'liger').",
    )
    report_to: Literal["none", "tensorboard", "wandb"] = Field(
        default="none",
        title="Report to",
        description="Extra experiment tracking. W&B reads WANDB_API_KEY from the environment "
        "(the app passes it from the keychain).",
    )


class OutputConfig(_Strict):
    """What to do with the trained weights."""

    merge_adapter: bool = Field(
        default=False,
        title="Merge adapter",
        description="Also save the base model with the adapter merged in (output/merged).",
    )
    push_to_hub: bool = Field(
        default=False,
        title="Push to Hub",
        description="Upload the result to the Hugging Face Hub (online only; the token comes "
        "from HF_TOKEN in the environment).",
    )
    hub_repo_id: str | None = Field(
        default=None,
        title="Hub repository",
        description="org/name to push to.",
        max_length=200,
        pattern=r"^[\w.-]+/[\w.-]+$",
    )
    hub_private: bool = Field(
        default=True, title="Private repository", description="Create it private."
    )


class HardwareConfig(_Strict):
    """Where and on how many devices to train."""

    device: Literal["auto", "cuda", "cpu"] = Field(
        default="auto", title="Device", description="'auto' takes CUDA when present, else the CPU."
    )
    num_gpus: int = Field(
        default=1,
        title="GPUs",
        description="GPUs for this job; more than one launches one process per GPU.",
        ge=1,
        le=64,
    )
    cpu_processes: int = Field(
        default=1,
        title="CPU processes",
        description="Processes when training on the CPU (gloo backend); for testing the "
        "distributed path.",
        ge=1,
        le=16,
    )
    strategy: Literal["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"] = Field(
        default="ddp",
        title="Multi-device strategy",
        description="How several processes share the work: DDP replicates the model; FSDP and "
        "DeepSpeed ZeRO shard it.",
    )


class TrainingConfig(_Strict):
    """One fine-tuning run, as written to `<job-dir>/config.json`."""

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION, title="Schema version", description="Version of this format."
    )
    name: str = Field(
        default="run",
        title="Run name",
        description="A name for the job list.",
        min_length=1,
        max_length=120,
    )
    model: ModelConfig = Field(title="Model", description="The model to fine-tune.")
    method: Method = Field(
        default="lora",
        title="Method",
        description="lora trains small adapters; qlora does so over a 4-bit base (least memory, "
        "needs CUDA); full updates every weight (most memory).",
    )
    lora: LoraSettings = Field(
        default_factory=LoraSettings, title="LoRA", description="Adapter settings."
    )
    quantization: QuantizationConfig = Field(
        default_factory=QuantizationConfig, title="Quantisation", description="QLoRA's 4-bit base."
    )
    dataset: DatasetConfig = Field(title="Dataset", description="The training data.")
    training: TrainingParams = Field(
        default_factory=TrainingParams, title="Training", description="Optimisation and schedule."
    )
    output: OutputConfig = Field(
        default_factory=OutputConfig, title="Output", description="Result handling."
    )
    hardware: HardwareConfig = Field(
        default_factory=HardwareConfig, title="Hardware", description="Devices and strategy."
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TrainingConfig:
        problems: list[str] = []
        has_eval = self.dataset.eval_split is not None or self.dataset.eval_path is not None
        t = self.training
        if self.dataset.eval_split is not None and self.dataset.eval_path is not None:
            problems.append("dataset.eval_split and dataset.eval_path: give one, not both")
        if t.eval_steps is not None and not has_eval:
            problems.append(
                "training.eval_steps is set but there is no eval set: set dataset.eval_split "
                "or dataset.eval_path, or clear training.eval_steps"
            )
        if t.early_stopping_patience is not None:
            if t.eval_steps is None:
                problems.append(
                    "training.early_stopping_patience needs training.eval_steps (and an eval set)"
                )
            elif t.save_steps % t.eval_steps != 0:
                problems.append(
                    "training.early_stopping_patience keeps the best checkpoint, so "
                    f"training.save_steps ({t.save_steps}) must be a multiple of "
                    f"training.eval_steps ({t.eval_steps})"
                )
        if t.dataloader_prefetch_factor is not None and t.dataloader_num_workers == 0:
            problems.append(
                "training.dataloader_prefetch_factor needs training.dataloader_num_workers >= 1"
            )
        if self.method == "qlora" and self.hardware.device == "cpu":
            problems.append(
                "method 'qlora' needs a CUDA GPU (bitsandbytes 4-bit); hardware.device is 'cpu': "
                "use method 'lora' or 'full' on the CPU"
            )
        if self.method == "full" and self.output.merge_adapter:
            problems.append("output.merge_adapter applies to lora/qlora only; method is 'full'")
        if self.output.push_to_hub and not self.output.hub_repo_id:
            problems.append("output.push_to_hub needs output.hub_repo_id (org/name)")
        if t.optimizer in ("adamw_8bit", "paged_adamw_8bit") and self.hardware.device == "cpu":
            problems.append(
                f"training.optimizer '{t.optimizer}' needs a CUDA GPU; hardware.device is 'cpu'"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def world_size(self) -> int:
        """Processes this run launches (one per GPU, or `cpu_processes` on the CPU)."""
        if self.hardware.device == "cpu":
            return self.hardware.cpu_processes
        return self.hardware.num_gpus

    def to_json(self) -> str:
        """The config as indented JSON, the form stored in a job directory."""
        return self.model_dump_json(indent=2) + "\n"


class ConfigFileError(ValueError):
    """A config file that cannot be read or does not validate; the message names the field."""


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """Turn a pydantic error into lines a person can act on: `source: field.path: message`."""
    lines = []
    for item in err.errors(include_url=False):
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        elif item["type"] == "missing":
            msg = "required field is missing"
        elif "input" in item and item["type"] not in ("model_type", "dict_type"):
            msg = f"{msg} (got {item['input']!r})"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a JSON (`.json`) or YAML (`.yaml`, `.yml`) file into a dict of settings.

    Raises:
        ConfigFileError: unreadable file, unknown suffix, or bad JSON/YAML (with the line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigFileError(f"{p}: cannot read the config file: {exc.strerror or exc}") from exc
    data: Any
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigFileError(f"{p}: {where}invalid YAML: {problem}") from exc
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigFileError(
                f"{p}: line {exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
            ) from exc
    else:
        raise ConfigFileError(f"{p}: unknown config type {p.suffix!r}; use .json, .yaml or .yml")
    if not isinstance(data, dict):
        raise ConfigFileError(f"{p}: expected an object of settings at the top level")
    return data


def _key_lines(path: Path) -> dict[tuple[str, ...], int]:
    """Line number (1-based) of every mapping key, by its path; empty when unparseable. JSON is
    (nearly) a subset of YAML, so one YAML composer serves both file types."""
    import yaml

    try:
        root = yaml.compose(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, OSError):
        return {}
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = (*prefix, str(key.value))
                lines[k] = key.start_mark.line + 1
                walk(value, k)

    walk(root, ())
    return lines


def validate_config_data(
    data: dict[str, Any], source: str | Path, base_dir: str | Path | None = None
) -> TrainingConfig:
    """Validate settings read from the file `source`; errors name the field and its line.

    Args:
        base_dir: relative paths resolve against it (the config file's folder); None keeps them.

    Raises:
        ConfigFileError: one line per problem, `source: line N: field.path: message`.
    """
    context = {"base_dir": str(Path(base_dir).resolve())} if base_dir is not None else None
    try:
        return TrainingConfig.model_validate(data, context=context)
    except ValidationError as exc:
        path = Path(source)
        lines = _key_lines(path)
        out = []
        texts = format_validation_error(exc, str(path)).splitlines()
        for item, text in zip(exc.errors(include_url=False), texts, strict=False):
            loc = tuple(str(part) for part in item["loc"])
            line = None
            while loc and line is None:
                line = lines.get(loc)
                loc = loc[:-1]
            if line is not None:
                text = text.replace(f"{path}: ", f"{path}: line {line}: ", 1)
            out.append(text)
        raise ConfigFileError("\n".join(out)) from exc


def load_config(path: str | Path) -> TrainingConfig:
    """Read a JSON or YAML config file; relative paths inside it resolve against its folder.

    Raises:
        ConfigFileError: unreadable file, bad JSON/YAML, or validation errors (one per line).
    """
    p = Path(path)
    return validate_config_data(read_config_file(p), p, base_dir=p.parent)
