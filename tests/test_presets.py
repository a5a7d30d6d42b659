"""Every preset validates, and each GPU preset's memory estimate fits the GPU it is sized for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop.core.config_io import DEMO_PLACEHOLDER, list_presets, load_preset, presets_dir
from desktop.core.errors import ConfigError
from desktop.core.memory_fit import GPUS, estimate_for_config, fit_level, read_model_config
from trainer.demo import demo_config

PRESETS = [p.name for p in list_presets()]


def test_the_issue_presets_exist() -> None:
    assert {"demo-cpu", "lora-8b-24gb", "qlora-8b-16gb", "qlora-70b-80gb", "full-1b"} <= set(
        PRESETS
    )
    assert len(PRESETS) == len(list(presets_dir().glob("*.json")))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates(name: str, tmp_path: Path) -> None:
    cfg = load_preset(name, demo_dir=tmp_path)
    assert cfg.name == name or name == "demo-cpu"
    assert DEMO_PLACEHOLDER not in cfg.to_json()


@pytest.mark.parametrize("info", [p for p in list_presets() if p.gpu_gb], ids=lambda p: p.name)
def test_gpu_preset_fits_its_gpu(info) -> None:  # type: ignore[no-untyped-def]
    cfg = load_preset(info.name)
    assert GPUS[info.gpu] == info.gpu_gb
    est = estimate_for_config(cfg, read_model_config(cfg.model.name_or_path))
    assert est.total_gb <= info.gpu_gb, est.summary()
    assert fit_level(est.total_gb, info.gpu_gb) != "red"
    assert cfg.hardware.device == "cuda"


def test_preset_methods_match_their_names() -> None:
    assert load_preset("lora-8b-24gb").method == "lora"
    assert load_preset("qlora-8b-16gb").method == "qlora"
    assert load_preset("qlora-70b-80gb").method == "qlora"
    full = load_preset("full-1b")
    assert full.method == "full"
    assert full.training.gradient_checkpointing


def test_demo_preset_is_the_demo_config_in_the_demo_folder(tmp_path: Path) -> None:
    cfg = load_preset("demo-cpu", demo_dir=tmp_path)
    expected = demo_config()
    assert cfg.model.name_or_path == str(tmp_path.resolve() / "model")
    assert cfg.dataset.path == str(tmp_path.resolve() / "train.jsonl")
    assert cfg.hardware.device == "cpu"
    assert cfg.training.max_steps == expected["training"]["max_steps"]
    assert cfg.lora.r == expected["lora"]["r"]
    raw = json.loads((presets_dir() / "demo-cpu.json").read_text())
    assert raw["model"]["name_or_path"] == "${DEMO}/model"


def test_demo_preset_without_demo_dir_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="make-demo"):
        load_preset("demo-cpu")


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"no preset named 'nope'.*lora-8b-24gb"):
        load_preset("nope")
