"""The checks a config passes before anything is spent: schema, files on disk, offline rules, data.

Qt-free and blocking except where said. `JobService.validate` runs them in this order; the CLI's
`validate` and the window's Start button both go through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from desktop.core.errors import ConfigError, DatasetError, OfflineError
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
    "check_datasets",
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
