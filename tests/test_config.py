"""TrainingConfig: the schema the editor is built from and the trainer obeys (trainer/config.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from trainer.config import (
    ConfigFileError,
    TrainingConfig,
    format_validation_error,
    load_config,
)


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": {"name_or_path": "org/model"},
        "dataset": {"path": "data/train.jsonl"},
    }
    for dotted, value in overrides.items():
        section, _, key = dotted.partition("__")
        if key:
            data.setdefault(section, {})[key] = value
        else:
            data[section] = value
    return data


def errors_of(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        TrainingConfig.model_validate(data)
    return format_validation_error(info.value)


def test_defaults_are_sensible() -> None:
    cfg = TrainingConfig.model_validate(minimal())
    assert cfg.schema_version == 1
    assert cfg.method == "lora" and cfg.lora.target_modules == "all-linear"
    assert cfg.model.trust_remote_code is False
    assert cfg.world_size == 1


def test_an_unknown_field_is_named() -> None:
    message = errors_of(minimal(training__learning_rat=1e-4))
    assert "training.learning_rat: unknown field" in message


def test_a_value_out_of_bounds_names_the_field_and_the_value() -> None:
    message = errors_of(minimal(lora__r=0))
    assert "lora.r" in message and "(got 0)" in message
    message = errors_of(minimal(training__learning_rate=5.0))
    assert "training.learning_rate" in message and "5.0" in message


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"training__eval_steps": 10}, ["training.eval_steps", "dataset.eval_split"]),
        ({"method": "qlora", "hardware__device": "cpu"}, ["method 'qlora'", "hardware.device"]),
        ({"output__push_to_hub": True}, ["output.push_to_hub", "output.hub_repo_id"]),
        (
            {
                "dataset__eval_split": 0.1,
                "training__eval_steps": 20,
                "training__save_steps": 30,
                "training__early_stopping_patience": 3,
            },
            ["training.save_steps (30)", "training.eval_steps (20)"],
        ),
        ({"training__dataloader_prefetch_factor": 2}, ["training.dataloader_num_workers"]),
        ({"method": "full", "output__merge_adapter": True}, ["output.merge_adapter"]),
        ({"dataset__eval_split": 0.1, "dataset__eval_path": "e.jsonl"}, ["dataset.eval_path"]),
    ],
)
def test_cross_field_rules_name_their_fields(overrides: dict[str, Any], names: list[str]) -> None:
    message = errors_of(minimal(**overrides))
    for name in names:
        assert name in message


def test_every_field_has_a_title_a_description_and_numbers_have_bounds() -> None:
    def walk(model: type[BaseModel], prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            if not field.title or not field.description:
                missing.append(f"{path}: title/description")
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                missing += walk(annotation, f"{path}.")
                continue
            if annotation in (int, float, int | None, float | None) and name != "seed":
                bounds = {type(m).__name__ for m in field.metadata}
                if not ({"Ge", "Gt"} & bounds and {"Le", "Lt"} & bounds):
                    missing.append(f"{path}: bounds")
        return missing

    assert walk(TrainingConfig, "") == []
    schema = TrainingConfig.model_json_schema()
    assert schema["additionalProperties"] is False


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    (folder / "model").mkdir(parents=True)
    (folder / "data").mkdir()
    data = minimal()
    data["model"]["name_or_path"] = "model"
    data["dataset"]["path"] = "data/train.jsonl"
    data["dataset"]["eval_path"] = "./data/eval.jsonl"
    (folder / "config.json").write_text(json.dumps(data), encoding="utf-8")
    cfg = load_config(folder / "config.json")
    assert cfg.model.name_or_path == str((folder / "model").resolve())
    assert cfg.dataset.path == str((folder / "data" / "train.jsonl").resolve())
    assert cfg.dataset.eval_path == str((folder / "data" / "eval.jsonl").resolve())


def test_hub_ids_stay_hub_ids(tmp_path: Path) -> None:
    data = minimal()
    data["model"]["name_or_path"] = "meta-llama/Llama-3.1-8B"
    data["dataset"]["path"] = "trl-lib/Capybara"
    (tmp_path / "c.yaml").write_text(json.dumps(data), encoding="utf-8")  # JSON is valid YAML
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.model.name_or_path == "meta-llama/Llama-3.1-8B"
    assert cfg.dataset.path == "trl-lib/Capybara"


def test_a_broken_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "model": {"name_or_path": "x"}\n  "dataset": {}\n}\n', encoding="utf-8")
    with pytest.raises(ConfigFileError, match=r"line 3: invalid JSON"):
        load_config(path)
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    path.write_text(json.dumps(minimal(training__warmup=3)), encoding="utf-8")
    with pytest.raises(ConfigFileError, match=r"training\.warmup: unknown field"):
        load_config(path)


def test_the_json_round_trip_is_lossless() -> None:
    cfg = TrainingConfig.model_validate(
        minimal(method="full", training__max_steps=30, lora__target_modules=["q_proj", "v_proj"])
    )
    again = TrainingConfig.model_validate_json(cfg.to_json())
    assert again == cfg
