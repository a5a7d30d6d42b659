"""The checks a config passes before anything is spent: schema, files on disk, offline rules, data.

Qt-free and blocking except where said. `JobService.validate` runs them in this order; the CLI's
`validate` and the window's Start button both go through it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from desktop.core.errors import ConfigError, DatasetError, OfflineError
from desktop.core.memory_fit import estimate_for_config, read_model_config
from desktop.core.runtime import TrainerRuntime, require_usable
from desktop.providers.base import Capability, Provider
from trainer.config import (
    ConfigFileError,
    TrainingConfig,
    format_validation_error,
    load_config,
    looks_like_local_path,
)
from trainer.reports import DataReport

__all__ = [
    "DiskSpaceCheck",
    "check_datasets",
    "check_disk_space",
    "check_offline",
    "check_paths",
    "gpus_requested",
    "hub_cache_dir",
    "is_local",
    "resolve_config",
]


def resolve_config(config: str | Path | TrainingConfig) -> TrainingConfig:
    """A validated `TrainingConfig` from a file (JSON or YAML) or an object.

    Raises:
        ConfigError: the file is unreadable or a field is invalid; the message names it.
    """
    if isinstance(config, TrainingConfig):
        # Re-validate: a config built in code with validate_assignment can still be stale.
        try:
            return TrainingConfig.model_validate(config.model_dump())
        except ValueError as exc:
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                raise ConfigError(format_validation_error(exc)) from exc
            raise ConfigError(str(exc)) from exc
    try:
        return load_config(config)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from exc


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache folder, as the `huggingface_hub` library finds it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _in_hub_cache(repo_id: str, kind: str) -> bool:
    """Whether a Hub repository has a downloaded snapshot in the local Hugging Face cache."""
    folder = hub_cache_dir() / f"{kind}s--{repo_id.replace('/', '--')}" / "snapshots"
    try:
        return any(any(snapshot.iterdir()) for snapshot in folder.iterdir())
    except OSError:
        return False


def is_local(value: str) -> bool:
    """Whether `value` names something on this machine (a path), not a Hub id."""
    return looks_like_local_path(value) or Path(value).expanduser().exists()


def check_paths(config: TrainingConfig) -> None:
    """Files the config names as local must exist (any mode).

    Raises:
        ConfigError: the model folder is missing.
        DatasetError: the dataset or eval file is missing.
    """
    model = config.model.name_or_path
    if is_local(model) and not Path(model).expanduser().exists():
        raise ConfigError(
            f"model.name_or_path: {model} does not exist; give a folder with config.json and "
            "weights, or a Hugging Face Hub id (org/name)"
        )
    for field_name, value in (
        ("dataset.path", config.dataset.path),
        ("dataset.eval_path", config.dataset.eval_path),
    ):
        if value and is_local(value) and not Path(value).expanduser().exists():
            raise DatasetError(f"{field_name}: {value} does not exist; check the path")


def check_offline(config: TrainingConfig) -> None:
    """Offline mode: the model and the data must be on disk, and nothing may be uploaded.

    Raises:
        OfflineError: naming the model, dataset or option that needs the network.
    """
    model = config.model.name_or_path
    if not is_local(model) and not _in_hub_cache(model, "model"):
        raise OfflineError(
            f"offline mode: the model {model!r} is not on disk (not a folder and not in the "
            f"Hugging Face cache {hub_cache_dir()}); give a local model folder or go online"
        )
    for field_name, value in (
        ("dataset.path", config.dataset.path),
        ("dataset.eval_path", config.dataset.eval_path),
    ):
        if value and not is_local(value) and not _in_hub_cache(value, "dataset"):
            raise OfflineError(
                f"offline mode: the dataset {value!r} ({field_name}) is not on disk; give a "
                "local file or go online"
            )
    if config.output.push_to_hub:
        raise OfflineError("offline mode: output.push_to_hub needs the network; turn it off")
    if config.training.report_to == "wandb":
        raise OfflineError(
            "offline mode: training.report_to 'wandb' needs the network; use 'none' or "
            "'tensorboard'"
        )


def check_datasets(
    config: TrainingConfig, runtime: TrainerRuntime, *, timeout_s: float = 300.0
) -> list[DataReport]:
    """Check the config's local data files with the trainer runtime (blocking: use a worker).

    Hub datasets are checked by the trainer when it loads them. When the model is a local
    folder its tokenizer counts the tokens at the config's max_length, so data of which no
    record keeps a trained token within it (training would have nothing) fails here too;
    packing keeps every token, so it is counted without a max_length then.

    Raises:
        DatasetError: a file is unusable; the message lists the problems with line numbers
            (and names `dataset.skip_invalid_records` where only some records are invalid;
            with it set, such a file passes and its report counts the invalid records).
        RuntimeNotReadyError: the runtime could not run the check (or did not finish in time).
    """
    data = config.dataset
    model_path = config.model.name_or_path
    model = model_path if is_local(model_path) and Path(model_path).expanduser().is_dir() else None
    reports = []
    for value, split in ((data.path, data.split), (data.eval_path, None)):
        if value and is_local(value):
            report = runtime.check_data(
                value,
                fmt=data.format,
                split=split,
                field_map=data.field_map.model_dump(),
                model=model,
                max_length=None if model is None or data.packing else data.max_length,
                all_tokens=not data.train_on_completions_only,
                timeout_s=timeout_s,
            )
            reports.append(_usable_or_skipped(report, data.skip_invalid_records))
    return reports


def _usable_or_skipped(report: DataReport, skip_invalid: bool) -> DataReport:
    """The report when the trainer will take the data: usable, or unusable only for invalid
    records the person chose to skip (`dataset.skip_invalid_records`).

    Raises:
        DatasetError: the data is unusable; where skipping would help, the message says so.
    """
    if report.skippable and report.format is not None:
        if skip_invalid:
            return report
        try:
            return require_usable(report)
        except DatasetError as exc:
            raise DatasetError(f"{exc}\n  to train anyway: {report.skip_hint()}") from exc
    return require_usable(report)


async def gpus_requested(config: TrainingConfig, backend: Provider) -> int:
    """GPUs the queue must hand this job (0: it runs on the CPU). `auto` asks a provider with
    `Capability.GPU` which GPUs it has (one without it is trusted with the GPUs asked for)."""
    if config.hardware.device == "cpu":
        return 0
    gpu_aware = Capability.GPU in backend.capabilities
    if config.hardware.device == "auto" and gpu_aware and not await backend.gpu_slots():
        return 0
    return config.hardware.num_gpus


# Bytes per trainable parameter the optimizer saves in a checkpoint (AdamW: two fp32 moments).
_OPTIMIZER_STATE_BYTES = {
    "adamw_torch": 8,
    "adamw_torch_fused": 8,
    "adamw_8bit": 2,
    "paged_adamw_8bit": 2,
    "sgd": 0,
}
_SAVED_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "auto": 2}
# The small files of a checkpoint besides the weights and optimizer: RNG, scheduler, state.
_CHECKPOINT_SMALL_FILES = 64 * 1024
# Tokenizer files when the model is not a local folder whose own files can be measured.
_TOKENIZER_GUESS = 20 * 1000 * 1000
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def _size(count: float) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


@dataclass(frozen=True)
class DiskSpaceCheck:
    """What a run's checkpoints and output will take against the free space of their drive.

    Attributes:
        needed_bytes: the estimate: kept checkpoints (plus the one being written before the
            oldest is deleted) and the output.
        free_bytes: free space of the job folder's drive now.
        folder: the folder whose drive was measured.
        checkpoint_bytes: one checkpoint, as estimated.
        checkpoints: how many exist at once at most.
    """

    needed_bytes: int
    free_bytes: int
    folder: Path
    checkpoint_bytes: int
    checkpoints: int

    @property
    def fits(self) -> bool:
        """Whether the estimate fits in the free space."""
        return self.needed_bytes <= self.free_bytes

    def warning(self) -> str | None:
        """One sentence when the run will not fit (needed vs free and what to change), else None."""
        if self.fits:
            return None
        return (
            f"this run needs about {_size(self.needed_bytes)} for {self.checkpoints} "
            f"checkpoint(s) of about {_size(self.checkpoint_bytes)} and its output, but the "
            f"drive holding {self.folder} has {_size(self.free_bytes)} free; free space there, "
            "lower training.save_total_limit, or the run will stop with a full disk"
        )


def _tokenizer_bytes(model: str) -> int:
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return _TOKENIZER_GUESS
    return sum((folder / n).stat().st_size for n in _TOKENIZER_FILES if (folder / n).is_file())


def check_disk_space(config: TrainingConfig, jobs_folder: Path) -> DiskSpaceCheck:
    """Estimate the disk space the run's checkpoints and output need (blocking: reads the
    model's config.json) and measure the free space of `jobs_folder`'s drive.

    One checkpoint holds the trainable weights (the adapter in fp32, or every weight in the
    model's dtype), the optimizer's state per trainable parameter, the tokenizer and a few
    small files; `save_total_limit` of them are kept, and one more exists while the next is
    written and before the oldest is deleted.

    Raises:
        ConfigError: the model's config.json cannot be read (no estimate is possible).
    """
    estimate = estimate_for_config(config, read_model_config(config.model.name_or_path))
    trainable = estimate.trainable_parameters
    if config.method == "full":
        weights = estimate.parameters * _SAVED_DTYPE_BYTES.get(config.model.dtype, 2)
    else:
        weights = trainable * 4
    tokenizer = _tokenizer_bytes(config.model.name_or_path)
    optimizer = trainable * _OPTIMIZER_STATE_BYTES.get(config.training.optimizer, 8)
    checkpoint = weights + optimizer + tokenizer + _CHECKPOINT_SMALL_FILES
    training = config.training
    count = training.save_total_limit + 1
    if training.max_steps:
        count = min(count, max(1, training.max_steps // training.save_steps))
    output = weights + tokenizer
    if config.output.merge_adapter and config.method != "full":
        output += estimate.parameters * _SAVED_DTYPE_BYTES.get(config.model.dtype, 2)
    folder = jobs_folder
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent  # the jobs folder may not exist yet: measure its drive
    return DiskSpaceCheck(
        needed_bytes=count * checkpoint + output,
        free_bytes=shutil.disk_usage(folder).free,
        folder=jobs_folder,
        checkpoint_bytes=checkpoint,
        checkpoints=count,
    )
