"""Config import/export (JSON, YAML), errors that name field and line, and the TRL SFT export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from desktop.core.config_io import export_config, export_trl_sft_yaml, import_config, load_preset
from desktop.core.errors import ConfigError
from trainer.config import TrainingConfig


def _custom(tmp_path: Path) -> TrainingConfig:
    data = tmp_path / "data.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    cfg = load_preset("qlora-8b-16gb")
    # bf16 on purpose (the preset itself computes in fp16 for a T4): the export must carry it.
    return cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"dtype": "bf16"}),
            "quantization": cfg.quantization.model_copy(update={"compute_dtype": "bf16"}),
            "dataset": cfg.dataset.model_copy(update={"path": str(data), "eval_split": 0.1}),
            "training": cfg.training.model_copy(
                update={"max_steps": 123, "learning_rate": 3e-5, "seed": 7, "eval_steps": 20}
            ),
            "lora": cfg.lora.model_copy(update={"target_modules": ["q_proj", "v_proj"]}),
        }
    )


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_export_import_round_trip(tmp_path: Path, suffix: str) -> None:
    cfg = _custom(tmp_path)
    path = export_config(cfg, tmp_path / f"cfg{suffix}")
    assert import_config(path) == cfg


def test_relative_paths_resolve_against_the_file_and_are_exported_as_written(
    tmp_path: Path,
) -> None:
    (tmp_path / "train.jsonl").write_text("{}\n")
    cfg = TrainingConfig.model_validate(
        {"model": {"name_or_path": "org/model"}, "dataset": {"path": "train.jsonl"}}
    )
    path = export_config(cfg, tmp_path / "c.yaml")
    assert yaml.safe_load(path.read_text())["dataset"]["path"] == "train.jsonl"
    loaded = import_config(path)
    assert loaded.dataset.path == str((tmp_path / "train.jsonl").resolve())
    assert loaded.model.name_or_path == "org/model"  # a Hub id stays a Hub id


def test_validation_errors_name_field_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "model:\n  name_or_path: org/m\ndataset:\n  path: d.jsonl\ntraining:\n"
        "  learning_rat: 0.1\n  per_device_batch_size: 0\n"
    )
    with pytest.raises(ConfigError) as info:
        import_config(path)
    text = str(info.value)
    assert "line 6: training.learning_rat: unknown field" in text
    assert "line 7: training.per_device_batch_size" in text and "(got 0)" in text


def test_json_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "model": {"name_or_path": "x"},\n  "dataset": {"path": "y"\n}\n')
    with pytest.raises(ConfigError, match=r"line \d+: invalid JSON"):
        import_config(path)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name_or_path: [x\ndataset: {}\n")
    with pytest.raises(ConfigError, match=r"line \d+: invalid YAML"):
        import_config(path)


def test_unknown_suffix_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"use \.json, \.yaml or \.yml"):
        export_config(load_preset("full-1b"), tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        import_config(tmp_path / "missing.json")


def _parse_with_trl(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:  # type: ignore[type-arg]
    import transformers.training_args as training_args
    from trl import (  # type: ignore[attr-defined]
        DatasetMixtureConfig,
        ModelConfig,
        ScriptArguments,
        SFTConfig,
        TrlParser,
    )

    # bf16 is validated against the hardware; this machine has no GPU (a fake at that edge).
    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda: True)
    parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig))  # type: ignore[arg-type]
    return tuple(parser.parse_args_and_config(["--config", str(path)]))


@pytest.mark.slow
def test_trl_sft_yaml_parses_with_trl_to_the_same_hyperparameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _custom(tmp_path)
    notes = export_trl_sft_yaml(cfg, tmp_path / "sft.yaml")
    _script, sft, model, mixture = _parse_with_trl(tmp_path / "sft.yaml", monkeypatch)
    t = cfg.training
    assert model.model_name_or_path == cfg.model.name_or_path
    assert model.dtype == "bfloat16" and sft.bf16 and not sft.fp16
    assert model.use_peft and model.load_in_4bit
    assert model.bnb_4bit_quant_type == "nf4" and model.use_bnb_nested_quant
    assert (model.lora_r, model.lora_alpha, model.lora_dropout) == (16, 32, 0.05)
    assert model.lora_target_modules == ["q_proj", "v_proj"]
    assert sft.learning_rate == t.learning_rate == 3e-5
    assert sft.max_steps == 123 and sft.num_train_epochs == t.num_epochs
    assert sft.per_device_train_batch_size == t.per_device_batch_size
    assert sft.gradient_accumulation_steps == t.gradient_accumulation_steps
    assert sft.lr_scheduler_type.value == t.lr_scheduler
    assert sft.warmup_steps == t.warmup_ratio
    assert sft.optim.value == t.optimizer
    assert sft.activation_checkpointing is True
    assert sft.seed == 7 and sft.logging_steps == t.logging_steps
    assert sft.save_steps == t.save_steps and sft.save_total_limit == t.save_total_limit
    assert sft.eval_strategy.value == "steps" and sft.eval_steps == 20
    assert sft.max_length == cfg.dataset.max_length and sft.packing == cfg.dataset.packing
    assert cfg.dataset.padding_free and cfg.model.attn_implementation != "flash_attention_2"
    assert sft.padding_free is False  # TRL's needs FlashAttention: the export says so
    assert any("padding_free needs attn_implementation flash_attention_2" in n for n in notes)
    assert sft.assistant_only_loss is True
    assert mixture.test_split_size == 0.1
    assert mixture.datasets[0].path == "json"
    assert mixture.datasets[0].data_files == cfg.dataset.path
    assert any("train_test_split" in n for n in notes)
    assert "# Note:" in (tmp_path / "sft.yaml").read_text()


@pytest.mark.slow
def test_trl_export_of_demo_full_and_cpu_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = load_preset("demo-cpu", demo_dir=tmp_path)
    export_trl_sft_yaml(demo, tmp_path / "demo.yaml")
    _s, sft, model, _m = _parse_with_trl(tmp_path / "demo.yaml", monkeypatch)
    assert sft.use_cpu and not sft.bf16 and model.dtype == "float32"
    assert model.lora_target_modules == "all-linear"  # TRL unwraps the one-item list
    assert sft.eval_strategy.value == "no"
    full = load_preset("full-1b")
    export_trl_sft_yaml(full, tmp_path / "full.yaml")
    _s, sft, model, mixture = _parse_with_trl(tmp_path / "full.yaml", monkeypatch)
    assert model.use_peft is False and sft.optim.value == "adamw_torch_fused"
    assert sft.weight_decay == 0.01 and sft.per_device_train_batch_size == 8
    assert mixture.datasets[0].path == "trl-lib/Capybara"


def test_trl_export_notes_what_trl_cannot_express(tmp_path: Path) -> None:
    cfg = _custom(tmp_path)
    cfg = cfg.model_copy(
        update={
            "dataset": cfg.dataset.model_copy(
                update={"eval_split": None, "eval_path": str(tmp_path / "eval.jsonl")}
            ),
            "training": cfg.training.model_copy(update={"early_stopping_patience": 3}),
        }
    )
    notes = export_trl_sft_yaml(cfg, tmp_path / "sft.yaml")
    text = " ".join(notes)
    assert "separate eval file" in text and "early stopping" in text
    args = yaml.safe_load((tmp_path / "sft.yaml").read_text())
    assert args["eval_strategy"] == "no"
    assert json.dumps(args)  # plain data only


def test_trl_export_is_padding_free_only_with_flash_attention(tmp_path: Path) -> None:
    cfg = _custom(tmp_path)
    flash = cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"attn_implementation": "flash_attention_2"})}
    )
    notes = export_trl_sft_yaml(flash, tmp_path / "flash.yaml")
    assert yaml.safe_load((tmp_path / "flash.yaml").read_text())["padding_free"] is True
    assert not any("padding_free" in n for n in notes)
    padded = cfg.model_copy(
        update={"dataset": cfg.dataset.model_copy(update={"padding_free": False})}
    )
    notes = export_trl_sft_yaml(padded, tmp_path / "padded.yaml")
    assert yaml.safe_load((tmp_path / "padded.yaml").read_text())["padding_free"] is False
    assert not any("padding_free" in n for n in notes)
