"""User settings, persisted as JSON with a schema version. Never holds a secret."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from desktop.core.paths import data_home
from desktop.models.runpod_options import RunpodOptions
from desktop.models.slurm_options import SlurmOptions
from trainer.config import format_validation_error
from trainer.protocol import write_json_atomic

__all__ = ["SETTINGS_SCHEMA_VERSION", "Settings", "data_home", "load_settings", "save_settings"]

SETTINGS_SCHEMA_VERSION: Literal[1] = 1


class Settings(BaseModel):
    """Everything the user sets once. Written by a person (or the settings dialog), so unknown
    keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    schema_version: Literal[1] = Field(default=SETTINGS_SCHEMA_VERSION, title="Schema version")
    trainer_python: str | None = Field(
        default=None,
        title="Trainer runtime",
        description="Python interpreter with the train extra (torch, transformers, peft, trl). "
        "Empty: the app's own interpreter.",
    )
    gpu_slots: int | None = Field(
        default=None,
        title="GPU slots",
        description="GPUs the local queue hands out; empty: as many as `trainer doctor` finds.",
        ge=0,
        le=64,
    )
    offline: bool = Field(
        default=False,
        title="Offline mode",
        description="Refuse every network path; jobs must have their model and data on disk.",
    )
    poll_interval_s: float = Field(
        default=1.0,
        title="Poll interval (s)",
        description="How often local jobs are read.",
        gt=0.0,
        le=60.0,
    )
    cancel_grace_s: float = Field(
        default=60.0,
        title="Cancel grace (s)",
        description="Time a cancelled trainer gets to checkpoint before it is killed.",
        ge=1.0,
        le=3600.0,
    )
    last_config_path: str | None = Field(default=None, title="Last config")
    theme: Literal["system", "light", "dark"] = Field(
        default="system",
        title="Theme",
        description="The window's colours, the chart's included: the system's, light or dark.",
    )
    runpod: RunpodOptions = Field(
        default_factory=RunpodOptions,
        title="RunPod",
        description="Defaults of RunPod launches (GPU types, cloud, budget, maximum runtime).",
    )
    slurm: SlurmOptions = Field(
        default_factory=SlurmOptions,
        title="Slurm",
        description="Slurm clusters reached over SSH, and the options of Slurm launches.",
    )


# Each migration turns version N's dict into version N+1's.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def settings_path() -> Path:
    """Where the settings file lives."""
    return data_home() / "settings.json"


def load_settings(path: Path | None = None) -> Settings:
    """Read the settings (defaults when the file is absent), migrating older versions.

    Raises:
        ValueError: the file is unreadable or invalid; the message names the field.
    """
    p = path or settings_path()
    if not p.exists():
        return Settings()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: cannot read the settings: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected an object of settings")
    version = int(data.get("schema_version", 1))
    while version < SETTINGS_SCHEMA_VERSION:
        data = _MIGRATIONS[version](data)
        version += 1
        data["schema_version"] = version
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, str(p))) from exc


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write the settings atomically; returns the path."""
    p = path or settings_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(p, settings.model_dump(mode="json"))
    return p
