"""Reading and writing training configs: presets, JSON/YAML import and export, TRL export.

Qt-free: the window calls these functions (off the UI thread when it wants to) and hands the
resulting `TrainingConfig` to the editor; the editor itself never touches a file.

Presets live in `resources/presets/<name>.json` as plain `TrainingConfig` files. A preset that
needs files the app makes itself (the demo's tiny model and data) writes them as
`${DEMO}/model` and `${DEMO}/train.jsonl`; `load_preset(name, demo_dir=...)` puts the folder
made by `python -m trainer make-demo DIR` in their place.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from desktop.core.errors import ConfigError
from desktop.core.paths import resource_path
from trainer.config import (
    ConfigFileError,
    TrainingConfig,
    looks_like_local_path,
    read_config_file,
    validate_config_data,
)

__all__ = [
    "DEMO_PLACEHOLDER",
    "PRESET_INFO",
    "PresetInfo",
    "export_config",
    "export_trl_sft_yaml",
    "import_config",
    "list_presets",
    "load_preset",
    "presets_dir",
    "trl_sft_arguments",
]

#: Placeholder for the demo folder inside preset files.
DEMO_PLACEHOLDER = "${DEMO}"


@dataclass(frozen=True)
class PresetInfo:
    """A preset as the preset menu shows it.

    Attributes:
        name: file stem, the argument of `load_preset`.
        title: menu label.
        description: one sentence for the tooltip.
        gpu: the GPU it is sized for ("CPU" for the demo), a key of `memory_fit.GPUS` or "CPU".
        gpu_gb: that GPU's memory in GB (0 for the CPU).
        path: the preset file.
    """

    name: str
    title: str
    description: str
    gpu: str
    gpu_gb: float
    path: Path


#: Menu text and target GPU per preset file; a file without an entry still loads.
PRESET_INFO: dict[str, tuple[str, str, str, float]] = {
    "demo-cpu": (
        "Demo (CPU, seconds)",
        "A tiny random Llama learns to count and reverse words: LoRA on the CPU, 40 steps.",
        "CPU",
        0,
    ),
    "lora-8b-24gb": (
        "LoRA 8B on 24 GB",
        "Llama 3.1 8B Instruct, bf16 base, LoRA r16 on all linear layers, gradient "
        "checkpointing; fits an RTX 4090 / 3090.",
        "RTX 4090 24 GB",
        24,
    ),
    "qlora-8b-16gb": (
        "QLoRA 8B on 16 GB",
        "Llama 3.1 8B Instruct in 4-bit NF4 with a LoRA r16 adapter and fp16 compute (a T4 "
        "has no bf16); fits a 16 GB card (T4 class).",
        "T4 16 GB",
        16,
    ),
    "qlora-70b-80gb": (
        "QLoRA 70B on 80 GB",
        "Llama 3.1 70B Instruct in 4-bit NF4, LoRA r16, paged 8-bit AdamW; fits one "
        "A100/H100 80 GB.",
        "H100 80 GB",
        80,
    ),
    "full-1b": (
        "Full fine-tune 1B on 80 GB",
        "Every weight of Llama 3.2 1B Instruct with AdamW in bf16 mixed precision; one A100/H100 "
        "80 GB (a 24 GB card needs batch 1, short sequences and 8-bit Adam).",
        "A100 80 GB",
        80,
    ),
}


def presets_dir() -> Path:
    """The folder holding the preset files (`resource_path`: checkout, wheel and bundle)."""
    return resource_path("presets")


def list_presets(directory: Path | None = None) -> list[PresetInfo]:
    """The presets, in the order of `PRESET_INFO` then by file name."""
    folder = directory or presets_dir()
    files = {p.stem: p for p in sorted(folder.glob("*.json"))}
    order = [n for n in PRESET_INFO if n in files] + [n for n in files if n not in PRESET_INFO]
    result = []
    for name in order:
        title, description, gpu, gpu_gb = PRESET_INFO.get(name, (name, "", "", 0))
        result.append(PresetInfo(name, title, description, gpu, gpu_gb, files[name]))
    return result


def _substitute(value: Any, demo_dir: str | None, name: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, demo_dir, name) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, demo_dir, name) for v in value]
    if isinstance(value, str) and DEMO_PLACEHOLDER in value:
        if demo_dir is None:
            raise ConfigError(
                f"preset {name!r} refers to the demo folder ({value}); make it with "
                "`python -m trainer make-demo DIR` and pass demo_dir"
            )
        return value.replace(DEMO_PLACEHOLDER, demo_dir)
    return value


def load_preset(
    name: str, demo_dir: str | Path | None = None, directory: Path | None = None
) -> TrainingConfig:
    """Load `resources/presets/<name>.json`, with `${DEMO}` replaced by `demo_dir`.

    Raises:
        ConfigError: no such preset (the message lists the available ones), `${DEMO}` used
            without a demo_dir, or the file does not validate (naming the field).
    """
    folder = directory or presets_dir()
    path = folder / f"{name}.json"
    if not path.is_file():
        names = ", ".join(p.name for p in list_presets(folder)) or "none"
        raise ConfigError(f"no preset named {name!r}; available: {names}")
    data = _read_mapping(path)
    demo = str(Path(demo_dir).expanduser().resolve()) if demo_dir is not None else None
    data = _substitute(data, demo, name)
    return _validate(data, path, None)


def _read_mapping(path: Path) -> dict[str, Any]:
    """Parse a JSON or YAML file into a dict; errors name the file and line."""
    try:
        return read_config_file(path)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from exc


def _validate(data: dict[str, Any], path: Path, base_dir: Path | None) -> TrainingConfig:
    """`validate_config_data` with the app's error type."""
    try:
        return validate_config_data(data, path, base_dir)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from exc


def import_config(path: str | Path) -> TrainingConfig:
    """Read a JSON or YAML `TrainingConfig`; relative paths resolve against the file's folder.

    This is the trainer's own rule (`trainer.config.load_config`), so a config that sits next
    to its data works from wherever it is opened.

    Raises:
        ConfigError: unreadable file, bad JSON/YAML (with the line), unknown suffix, or
            validation errors, one per line, each naming the field and its line.
    """
    p = Path(path).expanduser()
    return _validate(_read_mapping(p), p, p.parent)


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_config(config: TrainingConfig, path: str | Path) -> Path:
    """Write the config as JSON (`.json`) or YAML (`.yaml`/`.yml`), paths kept as written.

    Raises:
        ConfigError: an unknown suffix, or the file cannot be written.
    """
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix == ".json":
        text = config.to_json()
    elif suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(
            config.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100
        )
    else:
        raise ConfigError(f"{p}: unknown config type {p.suffix!r}; use .json, .yaml or .yml")
    try:
        _write_text_atomic(p, text)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot write the file: {exc.strerror or exc}") from exc
    return p


# --- TRL `trl sft --config` export -------------------------------------------------------------

_TORCH_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".gz": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".arrow": "arrow",
}


def _peek_format(path: str) -> str | None:
    """The format of a local JSON Lines file from its first record's keys, or None."""
    p = Path(path)
    if p.suffix.lower() != ".jsonl" or not p.is_file():
        return None
    try:
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    keys = set(json.loads(line))
                    break
            else:
                return None
    except (OSError, ValueError, TypeError):
        return None
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "text" in keys:
        return "text"
    return None


def trl_sft_arguments(config: TrainingConfig) -> tuple[dict[str, Any], list[str]]:
    """The `trl sft` YAML values for `config`, and notes on what TRL's script cannot express.

    The keys are field names of TRL 1.x's `ScriptArguments`, `SFTConfig` (transformers'
    `TrainingArguments`), `ModelConfig` and `DatasetMixtureConfig`.
    """
    c = config
    t = c.training
    d = c.dataset
    notes: list[str] = []
    args: dict[str, Any] = {}

    # Model and precision. TRL uses `dtype` both to load the weights and as the 4-bit compute
    # dtype, so for QLoRA the compute dtype wins.
    args["model_name_or_path"] = c.model.name_or_path
    if c.model.revision:
        args["model_revision"] = c.model.revision
    on_cpu = c.hardware.device == "cpu"
    if c.method == "qlora":
        dtype = c.quantization.compute_dtype
        if c.model.dtype not in ("auto", dtype):
            notes.append(
                f"TRL loads 4-bit models with dtype = compute dtype ({dtype}); the app's "
                f"weights dtype {c.model.dtype} is not used"
            )
    elif c.model.dtype == "auto":
        dtype = "fp32" if on_cpu else "bf16"
        notes.append(
            f"weights dtype 'auto' written as {_TORCH_DTYPE[dtype]} (what the app picks on "
            + ("the CPU)" if on_cpu else "GPUs with bf16; use float16 on older GPUs)")
        )
    else:
        dtype = c.model.dtype
    args["dtype"] = _TORCH_DTYPE[dtype]
    args["bf16"] = dtype == "bf16" and not on_cpu
    args["fp16"] = dtype == "fp16" and not on_cpu
    if on_cpu:
        args["use_cpu"] = True
    if c.model.attn_implementation != "auto":
        args["attn_implementation"] = c.model.attn_implementation
    args["trust_remote_code"] = c.model.trust_remote_code

    # Adapter and quantisation.
    if c.method in ("lora", "qlora"):
        lo = c.lora
        args["use_peft"] = True
        args["lora_r"] = lo.r
        args["lora_alpha"] = lo.alpha
        args["lora_dropout"] = lo.dropout
        if lo.target_modules == "all-linear":
            args["lora_target_modules"] = ["all-linear"]
        elif len(lo.target_modules) == 1:
            # TRL turns a one-item list into a string, which PEFT treats as a full-match regex.
            args["lora_target_modules"] = [rf".*\.{lo.target_modules[0]}"]
            notes.append(
                f"one target module is written as the regex '.*\\.{lo.target_modules[0]}' because "
                "TRL passes a single name to PEFT as a full-match pattern"
            )
        else:
            args["lora_target_modules"] = list(lo.target_modules)
        args["use_rslora"] = lo.use_rslora
        args["use_dora"] = lo.use_dora
    else:
        args["use_peft"] = False
    if c.method == "qlora":
        args["load_in_4bit"] = True
        args["bnb_4bit_quant_type"] = c.quantization.quant_type
        args["use_bnb_nested_quant"] = c.quantization.double_quant

    # Data. The dataset mixture form takes local files (through a builder) and Hub ids alike,
    # and it can hold out an eval fraction.
    source: dict[str, Any]
    if looks_like_local_path(d.path) or Path(d.path).expanduser().exists():
        p = Path(d.path).expanduser()
        suffix = ".gz" if p.name.lower().endswith(".jsonl.gz") else p.suffix.lower()
        if suffix in _BUILDERS:
            source = {"path": _BUILDERS[suffix], "data_files": str(p), "split": "train"}
        else:
            source = {"path": str(p), "split": d.split}
            notes.append(
                "a dataset folder is read with datasets.load_dataset (data files); a folder "
                "written by save_to_disk is not supported by `trl sft`"
            )
    else:
        source = {"path": d.path, "split": d.split}
    args["datasets"] = [source]
    has_eval = False
    if d.eval_split is not None:
        args["test_split_size"] = d.eval_split
        has_eval = True
        notes.append(
            "the eval fraction is drawn by datasets.train_test_split, so the held-out records "
            "differ from the app's"
        )
    if d.eval_path is not None:
        notes.append(
            f"`trl sft` cannot read a separate eval file ({d.eval_path}); evaluation is off in "
            "this export"
        )
    if t.eval_steps is not None and has_eval:
        args["eval_strategy"] = "steps"
        args["eval_steps"] = t.eval_steps
        args["per_device_eval_batch_size"] = t.per_device_batch_size
    else:
        args["eval_strategy"] = "no"

    fmt = d.format if d.format != "auto" else (_peek_format(d.path) or "auto")
    if d.format == "auto" and fmt == "auto":
        notes.append("dataset format 'auto' could not be detected here; TRL detects it itself")
    if fmt in ("sharegpt", "alpaca"):
        notes.append(
            f"TRL's sft script does not convert the {fmt} format: convert the data to "
            "'messages' records first"
        )
    renamed = {k: v for k, v in d.field_map.model_dump().items() if v is not None}
    if renamed:
        notes.append(
            f"column renames {renamed} are not applied by `trl sft`; rename the columns in the data"
        )
    if fmt == "text":
        args["dataset_text_field"] = d.field_map.text or "text"
    # Conversational data: loss on assistant turns; prompt/completion data: on completions.
    conversational = fmt in ("messages", "sharegpt")
    args["assistant_only_loss"] = d.train_on_completions_only and conversational
    if fmt == "prompt_completion" or not d.train_on_completions_only:
        args["completion_only_loss"] = d.train_on_completions_only
    elif fmt == "text":
        args["completion_only_loss"] = False
    if args["assistant_only_loss"]:
        notes.append(
            "assistant_only_loss needs a chat template with {% generation %} markers, as the "
            "app's trainer does"
        )
    args["max_length"] = d.max_length
    args["packing"] = d.packing
    # TRL's padding_free flattens a batch for FlashAttention only; the app's runs sdpa once per
    # record, so without flash_attention_2 the export pads (same loss, more memory).
    flash = c.model.attn_implementation == "flash_attention_2"
    args["padding_free"] = d.padding_free and flash
    if d.padding_free and not flash:
        notes.append(
            "padding-free batches are the app's own (sdpa once per record); TRL's padding_free "
            "needs attn_implementation flash_attention_2, so `trl sft` pads each batch"
        )

    # Optimisation and schedule.
    args["learning_rate"] = t.learning_rate
    args["num_train_epochs"] = t.num_epochs
    args["max_steps"] = t.max_steps if t.max_steps is not None else -1
    args["per_device_train_batch_size"] = t.per_device_batch_size
    args["gradient_accumulation_steps"] = t.gradient_accumulation_steps
    args["lr_scheduler_type"] = t.lr_scheduler
    # transformers 5 folded warmup_ratio into warmup_steps: a float below 1 is a ratio.
    args["warmup_steps"] = t.warmup_ratio
    args["weight_decay"] = t.weight_decay
    args["max_grad_norm"] = t.max_grad_norm
    args["optim"] = t.optimizer
    # transformers 5 renamed gradient_checkpointing (a deprecated alias now).
    args["activation_checkpointing"] = t.gradient_checkpointing
    args["seed"] = t.seed
    args["logging_steps"] = t.logging_steps
    args["save_strategy"] = "steps"
    args["save_steps"] = t.save_steps
    args["save_total_limit"] = t.save_total_limit
    args["dataloader_num_workers"] = t.dataloader_num_workers
    if t.dataloader_prefetch_factor is not None:
        args["dataloader_prefetch_factor"] = t.dataloader_prefetch_factor
    args["report_to"] = t.report_to
    if t.early_stopping_patience is not None:
        notes.append(
            f"early stopping (patience {t.early_stopping_patience}) is not available in `trl sft`"
        )

    # Output.
    args["output_dir"] = f"output/{c.name}"
    args["push_to_hub"] = c.output.push_to_hub
    if c.output.hub_repo_id:
        args["hub_model_id"] = c.output.hub_repo_id
        args["hub_private_repo"] = c.output.hub_private
    if c.output.merge_adapter and c.method != "full":
        notes.append("`trl sft` saves the adapter only; merge it afterwards (merge_adapter)")

    if c.world_size > 1 and not on_cpu:
        accel = {
            "ddp": "multi_gpu",
            "fsdp": "fsdp2",
            "deepspeed_zero2": "zero2",
            "deepspeed_zero3": "zero3",
        }[c.hardware.strategy]
        notes.append(
            f"{c.world_size} GPUs: run `trl sft --config FILE --accelerate_config {accel} "
            f"--num_processes {c.world_size}`"
        )
    return args, notes


def export_trl_sft_yaml(config: TrainingConfig, path: str | Path) -> list[str]:
    """Write a YAML for `trl sft --config FILE` with the config's effective hyperparameters.

    The file starts with comments: how to run it, and every setting `trl sft` cannot express
    (those notes are also returned, for the status bar).

    Raises:
        ConfigError: the file cannot be written.
    """
    p = Path(path).expanduser()
    args, notes = trl_sft_arguments(config)
    header = [
        f"# TRL SFT config exported by Finetune Desk from run {config.name!r}.",
        f"# Run it with:  trl sft --config {p.name}",
    ]
    header += [f"# Note: {n}" for n in notes]
    text = "\n".join(header) + "\n" + yaml.safe_dump(args, sort_keys=False, width=100)
    try:
        _write_text_atomic(p, text)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot write the file: {exc.strerror or exc}") from exc
    return notes
