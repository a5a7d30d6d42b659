"""The built-in demo: a valid config, a loadable tiny model and tokenizer, learnable data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from trainer.config import load_config
from trainer.demo import main as demo_main


def test_demo_config_is_valid_and_paths_resolve(demo_dir: Path) -> None:
    config = load_config(demo_dir / "config.json")
    assert Path(config.model.name_or_path) == (demo_dir / "model").resolve()
    assert Path(config.dataset.path) == (demo_dir / "train.jsonl").resolve()
    assert config.method == "lora"
    assert config.hardware.device == "cpu"
    assert config.training.max_steps is not None and config.training.max_steps >= 30


def test_demo_data_is_chat_records(demo_dir: Path) -> None:
    lines = (demo_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 200
    for line in lines:
        record = json.loads(line)
        roles = [m["role"] for m in record["messages"]]
        assert roles == ["user", "assistant"]
        assert all(m["content"].strip() for m in record["messages"])


def test_demo_tokenizer_masks_assistant_turn_including_end_token(demo_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_dir / "model")
    messages = [
        {"role": "user", "content": "count on from 17"},
        {"role": "assistant", "content": "18 19 20"},
    ]
    out: Any = tokenizer.apply_chat_template(
        messages, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(trained) == "18 19 20<|im_end|>"
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|im_end|>"

    model = AutoModelForCausalLM.from_pretrained(demo_dir / "model")
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)


def test_make_demo_cli_is_deterministic(tmp_path: Path, demo_template: Path) -> None:
    assert demo_main([str(tmp_path / "again")]) == 0
    for name in ("train.jsonl", "config.json", "model/model.safetensors", "model/tokenizer.json"):
        first = hashlib.sha256((demo_template / name).read_bytes()).hexdigest()
        second = hashlib.sha256((tmp_path / "again" / name).read_bytes()).hexdigest()
        assert first == second, name
    # A folder that already holds a job is refused rather than overwritten.
    assert demo_main([str(tmp_path / "again")]) == 2
